"""Two Postwire builds under the same load at the same moment: which costs less CPU per message.

On a shared machine the speed drifts by a fifth over minutes, more than most changes are worth, so
runs made one after another cannot tell a 5 % change from noise. Here both stacks run at once, each
from its own venv (another interpreter, or a worktree with another version of the code), smtp-source
sends the same load to both together, and each round reports both stacks' CPU per message: the drift
hits both alike.

    scripts/uv run python bench/side_by_side.py --a .venv/bin --b /tmp/other-venv/bin \
        --load html --messages 1000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from load import Load
from measure import Meter, Usage, wait_until
from throughput import TEMPLATE, PostwireUnderTest, corpus_dir, deliver, html_message, sender_for


async def one_round(stacks: dict[str, PostwireUnderTest], load: Load) -> dict[str, Usage]:
    """The load to every stack at once; the CPU of each, metered until it is idle again."""
    meters = {name: Meter(s.processes).start() for name, s in stacks.items()}
    await asyncio.gather(*(asyncio.to_thread(deliver, s, sender_for(s, load), load.count)
                           for s in stacks.values()))
    for s in stacks.values():
        await asyncio.to_thread(wait_until, s.idle, 60)
    await asyncio.sleep(3)  # events recorded after delivery; both stacks wait the same
    return {name: m.stop() for name, m in meters.items()}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, required=True, help="bin folder of the first venv")
    p.add_argument("--b", type=Path, required=True, help="bin folder of the second venv")
    p.add_argument("--load", choices=("text", "html"), default="html")
    p.add_argument("--messages", type=int, default=1000, help="per round and stack")
    p.add_argument("--rounds", type=int, default=4, help="measured rounds, after one warm-up round")
    p.add_argument("--component", action="append", default=[],
                   help="also print this component's CPU ms per message (e.g. webhook-notifier); repeatable")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pwsbs"))
    if args.load == "html" and not (corpus_dir() / "templates" / TEMPLATE).exists():
        sys.exit(f"{corpus_dir() / 'templates' / TEMPLATE} not found (set POSTWIRE_CORPUS_DIR)")
    load = Load("html", args.messages, message=html_message(work)) if args.load == "html" \
        else Load("text", args.messages)
    stacks: dict[str, PostwireUnderTest] = {}
    try:
        for name, bin_dir in (("a", args.a), ("b", args.b)):
            (work / name).mkdir()
            stacks[name] = await PostwireUnderTest.start(work / name, bin_dir.resolve())
        totals = {name: 0.0 for name in stacks}
        for n in range(args.rounds + 1):
            usage = await one_round(stacks, load)
            cost = {name: 1000 * u.total_s / load.count for name, u in usage.items()}
            label = "warm-up" if n == 0 else f"round {n}"
            ratio = cost["b"] / cost["a"]
            parts = "".join(f"; {c} a {usage['a'].per_message_ms(load.count).get(c, 0.0):.3f}, "
                            f"b {usage['b'].per_message_ms(load.count).get(c, 0.0):.3f}"
                            for c in args.component)
            print(f"{label:>8}: a {cost['a']:.2f}, b {cost['b']:.2f} ms/msg (b/a {ratio:.3f}){parts}",
                  flush=True)
            if n:
                totals = {name: totals[name] + cost[name] for name in stacks}
        print(f"mean: a {totals['a'] / args.rounds:.2f}, b {totals['b'] / args.rounds:.2f} ms/msg "
              f"(b/a {totals['b'] / totals['a']:.3f})")
    finally:
        for s in stacks.values():
            await s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
