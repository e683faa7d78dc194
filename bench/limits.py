"""Cost of the shared limits on the hot path, for two replicas (two LimitStores, two connections) sharing
one real nats-server: microseconds per check (mean and p99), how many checks waited for NATS, and NATS KV
writes per 1000 checks. Not a test.

    scripts/uv run python bench/limits.py --rate 450 --seconds 10

Each row checks one key ``--rate`` times a second for ``--seconds`` (in 10 ms ticks), alternating between
the replicas (the worst case for leases: every other request lands elsewhere). "fallback" is the same
bucket without a store: the local share's cost while NATS is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats

from postwire.core.jetstream import jetstream
from postwire.core.sharedlimits import LimitStore, SharedBuckets
from postwire.core.topology import LIMITS, Topology
from postwire.testing.nats import NatsServer


async def writes(js: object) -> int:
    info = await js.stream_info(f"KV_{LIMITS}")  # type: ignore[attr-defined]
    return int(info.state.last_seq)


async def run(rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with NatsServer(Path(d) / "js") as srv:
            conns = [await nats.connect(srv.url) for _ in range(2)]
            jss = [jetstream(nc) for nc in conns]
            await Topology().apply(jss[0])
            stores = [LimitStore(js, nc, "bench") for js, nc in zip(jss, conns, strict=True)]
            for s in stores:
                await s.start()
            rows = [(f"rate {rate * 1.25:g}/s, burst 50", [(rate * 1.25, 50.0)]),
                    (f"rate {rate * 2:g}/s, burst 1000", [(rate * 2, 1000.0)]),
                    ("quota 1e5/hour + 1e6/day", [(1e5 / 3600, 1e5), (1e6 / 86400, 1e6)])]
            print(f"load: {rate:g} checks/s for {seconds:g} s, alternating between 2 replicas")
            print(f"{'limit':28} {'mean µs':>8} {'p99 µs':>8} {'waited':>7} {'KV writes/1000':>15} "
                  f"{'refused':>8} {'fallback µs':>12}")
            ticks = int(seconds * 100)
            per_tick = max(1, round(rate / 100))
            for i, (name, windows) in enumerate(rows):
                shared = [SharedBuckets(s, f"bench{i}", windows) for s in stores]
                before = await writes(jss[0])
                took: list[float] = []
                refused = n = 0
                loop = asyncio.get_running_loop()
                begin = loop.time()
                for tick in range(ticks):
                    for _ in range(per_tick):
                        start = time.perf_counter()
                        if await shared[n % 2].take("acct", 1) > 0:
                            refused += 1
                        took.append(time.perf_counter() - start)
                        n += 1
                    await asyncio.sleep(max(0.0, begin + (tick + 1) / 100 - loop.time()))
                written = await writes(jss[0]) - before
                local = SharedBuckets(None, f"local{i}", windows)
                start = time.perf_counter()
                for _ in range(n):
                    await local.take("acct", 1)
                local_us = (time.perf_counter() - start) / n * 1e6
                took.sort()
                waited = sum(1 for t in took if t > 100e-6)  # a NATS round trip takes longer than this
                print(f"{name:28} {sum(took) / n * 1e6:8.1f} {took[int(n * 0.99)] * 1e6:8.1f} "
                      f"{waited / n:7.1%} {written / n * 1000:15.1f} {refused:8d} {local_us:12.1f}")
            for s in stores:
                await s.close()
            for nc in conns:
                await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=float, default=450.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()
