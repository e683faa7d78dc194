"""Summarise py-spy's collapsed stacks (``--format raw``): where a process spends its samples.

    scripts/uv run python bench/hotspots.py PROFILE.txt [--top 40] [--match postwire]

Prints the share of samples per function, as self time (the function was on top of the stack) and as
inclusive time (anywhere on it), so both hot spots and expensive call paths show.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def summarise(path: Path, top: int, match: str) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{path.name}: {total} samples")
    print("-- self")
    for frame, n in own.most_common(top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("-- inclusive" + (f" (frames matching {match!r})" if match else ""))
    shown = 0
    for frame, n in inclusive.most_common():
        if match in frame:
            print(f"{100 * n / total:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--match", default="")
    a = p.parse_args()
    for f in a.files:
        summarise(f, a.top, a.match)
