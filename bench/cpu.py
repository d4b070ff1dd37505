"""CPU accounting on Linux: the host, a process group, and this process's reaped children;
and the load generator's own CPU priority."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

QUIET_CORES = 0.3  # host busy cores below which a run may start
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVICES = ("postgres", "redis-server")  # the production profile's database and cache


@dataclass(frozen=True)
class Sample:
    """CPU seconds used so far: host-wide busy time, one process group, the load generator,
    and each PostgreSQL and Redis process by pid."""

    host_busy_s: float
    group_s: float
    generator_s: float
    services: dict[int, float] = field(default_factory=dict)

    def services_since(self, before: Sample) -> float:
        """CPU seconds the PostgreSQL and Redis processes used since `before` (exited: lost)."""
        return sum(
            max(now - before.services.get(pid, 0.0), 0.0) for pid, now in self.services.items()
        )


def host_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (0.0 where /proc is missing)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICK


def group_seconds(pgid: int | None) -> float:
    """CPU seconds (user + system) of the live processes in process group pgid."""
    if pgid is None:
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp, ..., utime and stime are fields 14 and 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def read_text(path: str) -> str:
    """A file's text ("" if it cannot be read: a process of /proc gone meanwhile)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0.0 once it is gone)."""
    stat = read_text(f"/proc/{pid}/stat")
    if not stat:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def services_seconds() -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL and Redis process on the host, by pid."""
    return {
        int(entry.name): process_seconds(int(entry.name))
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and read_text(f"{entry}/comm").strip() in SERVICES
    }


def sample(pgid: int | None) -> Sample:
    """Take a sample; the generator is this process plus its already-reaped children (wrk)."""
    t = os.times()
    return Sample(
        host_busy_s=host_busy_seconds(),
        group_s=group_seconds(pgid),
        generator_s=t.user + t.system + t.children_user + t.children_system,
        services=services_seconds(),
    )


def wait_for_quiet(
    max_wait_s: float, busy_cores: float = QUIET_CORES, window_s: float = 1.0
) -> float:
    """Wait (at most max_wait_s) until the host is nearly idle; return the last busy cores seen."""
    deadline = time.monotonic() + max_wait_s
    while True:
        start = host_busy_seconds()
        time.sleep(window_s)
        busy = (host_busy_seconds() - start) / window_s
        if busy <= busy_cores or time.monotonic() >= deadline:
            return busy


def settle(max_wait_s: float) -> None:
    """Before a measurement, wait a bounded time for other work on the host to stop."""
    busy = wait_for_quiet(max_wait_s)
    if busy > QUIET_CORES:
        print(f"warning: host still busy ({busy:.2f} cores) after {max_wait_s:g}s", file=sys.stderr)


GENERATOR_NICE = -10


@contextmanager
def generator_priority(nice: int = GENERATOR_NICE) -> Iterator[int]:
    """Run the block with the calling thread at CPU priority `nice` where the system allows
    it; yields the nice value it runs at.

    An open-loop generator on the same cores as the server must send on time: if the kernel
    lets the server's threads run first, requests leave late and the run measures the
    generator's wait, which a client on another machine would not have. A higher priority
    lets the generator's timer wake-ups preempt the server; it uses no more CPU for it.
    On Linux the nice value belongs to the thread: call this from the one that sends.
    """
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:  # raising a priority needs CAP_SYS_NICE
        yield before
        return
    try:
        yield nice
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)
