"""HTTP load with CPU accounting: closed loop (wrk, or a Python fallback) or open loop at a rate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from bench import cpu, pyloadgen
from bench.hoststall import HostWatch
from bench.loadtypes import LoadResult, LoadSettings, PacedResult, Target
from bench.servers import SpreadSampler
from bench.wrk import ensure_wrk, run_wrk

__all__ = [
    "LoadResult",
    "LoadSettings",
    "PacedResult",
    "Target",
    "measure",
    "measure_paced",
    "measure_server",
]

R = TypeVar("R", LoadResult, PacedResult)


def _accounted(run: Callable[[], R], server_pgid: int | None) -> R:
    """Run one measured load and add the CPU time of the server group, generator, services
    and host."""
    before = cpu.sample(server_pgid)
    result = run()
    after = cpu.sample(server_pgid)
    return replace(
        result,
        server_cpu_s=after.group_s - before.group_s,
        generator_cpu_s=after.generator_s - before.generator_s,
        host_busy_s=after.host_busy_s - before.host_busy_s,
        services_cpu_s=after.services_since(before),
    )


def measure(
    target: Target, settings: LoadSettings, generator: str = "auto", server_pgid: int | None = None
) -> LoadResult:
    """Warm up, then measure (closed loop), with CPU accounting of the server's process group.

    `generator` is "wrk", "python" or "auto" (wrk if it is or can be installed).
    """
    if not settings.keepalive:
        target = replace(target, headers={**target.headers, "Connection": "close"})
    wrk = ensure_wrk() if generator in ("auto", "wrk") else None
    if generator == "wrk" and wrk is None:
        raise RuntimeError("wrk is not installed and could not be installed")

    def once(duration_s: float) -> LoadResult:
        if wrk is not None:
            return run_wrk(wrk, target, settings, duration_s)
        return pyloadgen.run(target, settings, duration_s)

    if settings.warmup_s > 0:
        once(settings.warmup_s)
    return _accounted(lambda: once(settings.duration_s), server_pgid)


def measure_server(
    target: Target, settings: LoadSettings, generator: str, server_pgid: int | None, port: int
) -> LoadResult:
    """Like `measure`, noting how the connections spread over the server's processes mid-run."""
    sampler = SpreadSampler(port, delay_s=settings.warmup_s + min(2.0, settings.duration_s / 2))
    sampler.start()
    try:
        result = measure(target, settings, generator, server_pgid)
    finally:
        spread = sampler.stop()
    return replace(result, connection_spread=spread)


def measure_paced(
    target: Target,
    rate: float,
    settings: LoadSettings,
    server_pgid: int | None = None,
    keep_bodies: bool = False,
    port: int | None = None,
    watch_host: bool = False,
    balance: bool = False,
) -> PacedResult:
    """Warm up, then send `rate` requests per second (open loop) over `settings.connections`.

    Only the Python generator paces: Debian has no fixed-rate wrk (wrk2) package. With the
    server's `port`, notes how the connections spread over its processes mid-run; with
    `watch_host`, the longest stall of the host during the measured part (`hoststall`); with
    `balance`, each run's connections are spread evenly over the server's processes.
    """

    def once(duration_s: float, bodies: bool) -> PacedResult:
        return pyloadgen.run_paced(
            target, rate, duration_s, settings.connections, settings.timeout_s, bodies, balance
        )

    def measured() -> PacedResult:
        watch = HostWatch() if watch_host else None
        try:
            result = _accounted(lambda: once(settings.duration_s, keep_bodies), server_pgid)
        finally:
            stall = watch.stop() if watch else None
        if stall is None:
            return result
        return replace(
            result,
            host_stall_ms=stall.longest_ms,
            host_watch=stall.policy,
            host_stalls=stall.events,
        )

    if settings.warmup_s > 0:
        once(settings.warmup_s, bodies=False)
    if port is None:
        return measured()
    sampler = SpreadSampler(port, delay_s=min(2.0, settings.duration_s / 2))
    sampler.start()
    try:
        result = measured()
    finally:
        spread = sampler.stop()
    return replace(result, connection_spread=spread)
