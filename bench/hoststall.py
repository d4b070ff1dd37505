"""Host stalls: how late a process that only sleeps 1 ms at a time wakes up.

A latency percentile measured on a shared virtual machine moves with stalls of the host
itself (its virtual CPUs not running, the kernel busy), which hit whichever run happens to be
measuring. `HostWatch` runs a separate process that sleeps 1 ms in a loop, at a real-time
priority where the system allows it (else normal), and reports the longest it overslept: with
the real-time priority no process of ours can delay it, so a long oversleep is the host's,
not the platform's. A GIL held in the server, a full CPU or a slow query do not show there.
It also reports when each oversleep of more than `EVENT_MS` ended (`time.monotonic()`, the
same clock in every process), so that a stall can be placed in a part of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

EVENT_MS = 5.0  # oversleeps longer than this are reported with their time
MAX_EVENTS = 10_000

_CANARY = rf"""
import json, os, signal, sys, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    policy = "realtime"
except (AttributeError, OSError):
    policy = "normal"
longest = 0.0
events = []
def report(*_):
    print(f"{{longest * 1e3:.3f}} {{policy}}", flush=True)
    print(json.dumps(events), flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, report)
print("ready", flush=True)
while True:
    started = time.perf_counter()
    time.sleep(0.001)
    late = time.perf_counter() - started - 0.001
    if late > longest:
        longest = late
    if late * 1e3 > {EVENT_MS} and len(events) < {MAX_EVENTS}:
        events.append((time.monotonic(), late * 1e3))
"""


@dataclass(frozen=True)
class Stall:
    """The longest the canary overslept while watched, and the priority it ran at."""

    longest_ms: float
    policy: str  # "realtime", or "normal" where the system refused a real-time priority
    # (when it ended, time.monotonic(); how long, ms) of each stall longer than EVENT_MS
    events: tuple[tuple[float, float], ...] = ()


class HostWatch:
    """Start the canary process; `stop()` ends it and returns what it saw."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CANARY],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        ready = self._process.stdout.readline() if self._process.stdout else ""
        if ready.strip() != "ready":
            self._process.kill()
            raise RuntimeError(f"the host-stall canary did not start: {ready!r}")

    def stop(self) -> Stall:
        try:
            os.kill(self._process.pid, signal.SIGTERM)
            out, _ = self._process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise RuntimeError("the host-stall canary did not report") from None
        first, events = out.splitlines()[:2]
        longest, policy = first.split()
        return Stall(float(longest), policy, tuple((at, ms) for at, ms in json.loads(events)))
