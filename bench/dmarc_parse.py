"""What reading a DMARC aggregate report costs (docs/dmarc.md). Not a test.

    scripts/uv run python bench/dmarc_parse.py [--runs 200] [--records 100000]

Rows: every labelled file of the corpus (POSTWIRE_CORPUS_DIR, default ../shared/corpus, folder dmarc/)
parsed --runs times, as reports/s over all of them and the time of the largest; a synthetic gzipped
report of --records records (a big reporter's day), as seconds and records/s; and the time to refuse a
gzip bomb of 200 MiB of zeros, which is inflated only up to the 100 MiB limit. Refusals (the failure and
TLS reports) are timed like reports: answering 422 costs the same work.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import time
import zlib

from postwire.dmarc import InvalidReport, parse_report
from postwire.testing.corpus import corpus_dir

MIB = 1024 * 1024
RECORD = """  <record>
    <row><source_ip>198.51.{a}.{b}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated>
    </row>
    <identifiers>
      <envelope_from>bounce.sender.example</envelope_from><header_from>sender.example</header_from>
    </identifiers>
    <auth_results>
      <dkim><domain>sender.example</domain><selector>s1</selector><result>pass</result></dkim>
      <spf><domain>bounce.sender.example</domain><scope>mfrom</scope><result>fail</result></spf>
    </auth_results>
  </record>
"""
HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata><org_name>bench.example</org_name><email>dmarc@bench.example</email>
    <report_id>bench-1</report_id><date_range><begin>1718409600</begin><end>1718495999</end></date_range>
  </report_metadata>
  <policy_published><domain>sender.example</domain><p>reject</p><sp>reject</sp><pct>100</pct></policy_published>
"""


def read_or_refuse(data: bytes, content_type: str | None) -> str:
    try:
        return f"{len(parse_report(data, content_type).records)} records"
    except InvalidReport as exc:
        return f"refused: {exc.code}"


def corpus_rows(runs: int) -> None:
    root = corpus_dir() / "dmarc"
    labels_path = root / "labels.jsonl"
    if not labels_path.exists():
        print(f"corpus absent at {root}: set POSTWIRE_CORPUS_DIR to run the corpus rows")
        return
    labels = [json.loads(line) for line in labels_path.read_text().splitlines() if line.strip()]
    files = [((root / lab["file"]).read_bytes(), lab["content_type"], lab["file"]) for lab in labels]
    started = time.perf_counter()
    for _ in range(runs):
        for data, content_type, _name in files:
            read_or_refuse(data, content_type)
    elapsed = time.perf_counter() - started
    print(f"corpus: {len(files)} files x {runs} runs: {len(files) * runs / elapsed:,.0f} reports/s "
          f"({elapsed / (len(files) * runs) * 1e6:,.0f} µs per file)")
    data, content_type, name = max(files, key=lambda f: len(f[0]))
    started = time.perf_counter()
    for _ in range(runs):
        outcome = read_or_refuse(data, content_type)
    per_run = (time.perf_counter() - started) / runs
    print(f"largest: {name} ({len(data):,} bytes, {outcome}): {per_run * 1e3:.2f} ms")


def synthetic_row(records: int) -> None:
    body = "".join(RECORD.format(a=(n // 256) % 256, b=n % 256, count=n % 50 + 1) for n in range(records))
    xml = (HEAD + body + "</feedback>\n").encode()
    packed = gzip.compress(xml)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = parse_report(packed, "application/gzip")
    elapsed = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    count = len(report.records)
    print(f"synthetic: {count:,} records, {len(xml) / MIB:.1f} MiB XML, {len(packed) / MIB:.1f} MiB gzipped: "
          f"{elapsed:.2f} s, {count / elapsed:,.0f} records/s, peak RSS +{grown:.0f} MiB")


def bomb_row() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join([*(packer.compress(bytes(MIB)) for _ in range(200)), packer.flush()])
    started = time.perf_counter()
    outcome = read_or_refuse(bomb, "application/gzip")
    elapsed = time.perf_counter() - started
    print(f"gzip bomb: {len(bomb):,} bytes sent, 200 MiB packed: {outcome} after {elapsed * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="times each corpus file is parsed")
    parser.add_argument("--records", type=int, default=100_000, help="records in the synthetic report")
    args = parser.parse_args()
    corpus_rows(args.runs)
    synthetic_row(args.records)
    bomb_row()


if __name__ == "__main__":
    main()
