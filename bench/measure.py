"""CPU and memory of a relay: every process of it, grouped into components, sampled from /proc.

A relay is one or more process trees (Postfix's master and its children; Postwire's supervisor, its
services and their workers, nats-server, and PostgreSQL's postmaster with its backends). Processes come
and go under load (Postfix recycles smtpd after 100 clients, PostgreSQL forks a backend per connection),
so the total is taken from what the kernel accounts exactly: the CPU of every live process plus what each
has collected from its children that exited (``children_user`` / ``children_system``), at the start and
at the end. The per-component split comes from sampling each process while it lives; what exited between
two samples is shown as "exited, unattributed" so the rows still add up to the total.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

# a process and the component it belongs to
Labeller = Callable[[], Iterable[tuple[psutil.Process, str]]]
UNATTRIBUTED = "exited, unattributed"


def tree(root: psutil.Process | None, label: Callable[[psutil.Process, psutil.Process], str],
         ) -> list[tuple[psutil.Process, str]]:
    """``root`` and its descendants, each with ``label(process, top)``, ``top`` being the root's child the
    process descends from (the root itself for the root)."""
    if root is None:
        return []
    found = [(root, label(root, root))]
    try:
        children = root.children()
    except psutil.Error:
        return found
    for top in children:
        try:
            found.append((top, label(top, top)))
            found += [(p, label(p, top)) for p in top.children(recursive=True)]
        except psutil.Error:
            continue
    return found


def _memory(p: psutil.Process) -> int:
    """Proportional set size: private pages plus a share of shared ones, so forked workers and
    PostgreSQL's shared buffers are counted once per component (as a container's cgroup would), where
    summed RSS would count them once per process."""
    try:
        return int(p.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return int(p.memory_info().rss)


def _cpu(p: psutil.Process) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of reaped children)."""
    t = p.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


@dataclass
class Usage:
    """What one measured interval cost: CPU seconds per component (adding up to ``total_s``) and the
    largest memory (PSS) each component had at any sample."""

    total_s: float
    cpu_s: dict[str, float]
    peak_memory: dict[str, int]

    def per_message_ms(self, messages: int) -> dict[str, float]:
        return {k: 1000 * v / messages for k, v in sorted(self.cpu_s.items(), key=lambda kv: -kv[1])}


@dataclass
class Meter:
    """Samples ``processes`` at ``start()``, every ``interval_s`` in a thread (None: not in between) and at
    ``stop()``."""

    processes: Labeller
    interval_s: float | None = 1.0
    _first: dict[tuple[int, float], float] = field(default_factory=dict)
    _last: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    _mem: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _total_start: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Meter:
        self._total_start = self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        total = self._sample(first=False) - self._total_start
        cpu: dict[str, float] = defaultdict(float)
        for key, (label, last) in self._last.items():
            cpu[label] += last - self._first.get(key, 0.0)
        rest = total - sum(cpu.values())
        if rest > 0.005:
            cpu[UNATTRIBUTED] = rest
        return Usage(total, dict(cpu), dict(self._mem))

    def total(self) -> float:
        """The relay's CPU seconds so far (own + reaped children of the live processes)."""
        total = 0.0
        for p, _ in self.processes():
            try:
                own, reaped = _cpu(p)
            except psutil.Error:
                continue
            total += own + reaped
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(first=False)

    def _sample(self, *, first: bool) -> float:
        """Record every process; return the exact total (own + reaped children of the live ones)."""
        total = 0.0
        mem: dict[str, int] = defaultdict(int)
        for p, label in self.processes():
            try:
                key = (p.pid, p.create_time())
                own, reaped = _cpu(p)
                mem[label] += _memory(p)
            except psutil.Error:
                continue
            total += own + reaped
            if first:
                self._first[key] = own
            self._last[key] = (label, own)
        for label, value in mem.items():
            self._mem[label] = max(self._mem[label], value)
        return total


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
