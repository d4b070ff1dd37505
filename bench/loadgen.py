"""Closed-loop HTTP load with CPU accounting: wrk, or a Python fallback when wrk is missing."""

from __future__ import annotations

from dataclasses import replace

from bench import cpu, pyloadgen
from bench.loadtypes import LoadResult, LoadSettings, Target
from bench.wrk import ensure_wrk, run_wrk

__all__ = ["LoadResult", "LoadSettings", "Target", "measure"]


def measure(
    target: Target, settings: LoadSettings, generator: str = "auto", server_pgid: int | None = None
) -> LoadResult:
    """Warm up, then measure, with CPU accounting of the server's process group if given.

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
    before = cpu.sample(server_pgid)
    result = once(settings.duration_s)
    after = cpu.sample(server_pgid)
    return replace(
        result,
        server_cpu_s=after.group_s - before.group_s,
        generator_cpu_s=after.generator_s - before.generator_s,
        host_busy_s=after.host_busy_s - before.host_busy_s,
    )
