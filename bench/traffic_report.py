"""Results of the traffic benchmark (cache and shadow runs) as tables or JSON, with targets."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.loadtypes import LoadResult, LoadSettings, PacedResult

CACHE_TARGET = 1.5  # a cache hit at least this many times the throughput of a miss, ...
# ... judged on the model whose inference costs more than the rest of a request (about 3 ms
# against 1.5-3.5 ms): a cache cannot save more than the inference, and a hit is still stored.
CACHE_TARGET_MODEL = "wider"
SHADOW_TARGET = 1.10  # p99 with a shadow at most this many times the p99 without
# A shadow run in which the load generator's own loop, or the host itself (the canary), was
# later than this measured a stall of the measuring side, not of the server: it is run again.
STALL_LIMIT_MS = 20.0
# So is a run during which processes the benchmark does not run (neither the server, the load
# generator, PostgreSQL nor Redis) kept more than this many cores busy: it measured a host
# shared with other work, on one side only.
OUTSIDE_LIMIT_CORES = 0.25
POOLED = (50, 95, 99)  # latency percentiles over all requests of a side's runs together
SHADOW_FIGURES = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_ms_per_request")


@dataclass(frozen=True)
class CachePair:
    """One model loaded with its cache off (every answer inferred) and on (every answer a hit)."""

    model: str
    miss: LoadResult
    hit: LoadResult

    @property
    def speedup(self) -> float:
        """Hit throughput over miss throughput."""
        return self.hit.rps / self.miss.rps if self.miss.rps else 0.0


@dataclass(frozen=True)
class ShadowRuns:
    """The same fixed-rate load without a shadow version and with one, one pair per round."""

    rate: float
    saturated_rps: float
    baseline: list[PacedResult]
    shadow: list[PacedResult]
    counts: dict[str, int]
    leaks: int  # answers under shadow that were not v1's own
    checked: int  # answers under shadow that were inspected
    control: bool = False  # v3 staged on both sides (A/A): the ratios show the noise alone
    generator_nice: int = 0  # the load generator's CPU priority during the runs
    repeated: list[str] = field(default_factory=list)  # runs measured again: a stall of ours

    def runs(self, side: str) -> list[PacedResult]:
        """One side's runs: "none" (no shadow) or "v3"."""
        return self.baseline if side == "none" else self.shadow

    def median(self, side: str, figure: str) -> float:
        """Median over the rounds of one figure ("p99_ms", ...) of one side ("none", "v3")."""
        return float(statistics.median(_figure(r, figure) for r in self.runs(side)))

    def ratio(self, figure: str) -> float:
        """Median with the shadow over median without, for one figure."""
        without = self.median("none", figure)
        return self.median("v3", figure) / without if without else 0.0

    def pooled(self, side: str, percentile: float) -> float:
        """A latency percentile (ms) of every request of one side's runs taken together."""
        samples = [v for r in self.runs(side) for v in r.latencies_ms]
        return float(np.percentile(samples, percentile)) if samples else 0.0

    def pooled_ratio(self, percentile: float) -> float:
        """Pooled percentile with the shadow over the same without."""
        without = self.pooled("none", percentile)
        return self.pooled("v3", percentile) / without if without else 0.0

    @property
    def p99_ratio(self) -> float:
        """The target's figure: pooled p99 with the shadow over pooled p99 without."""
        return self.pooled_ratio(99)


def _figure(run: PacedResult, figure: str) -> float:
    return float(getattr(run, figure))


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    wide: dict[str, dict[str, Any]]  # benchmark model name -> its size and inference time
    cache: list[CachePair]
    shadow: ShadowRuns
    problems: list[str] = field(default_factory=list)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def as_json(
    closed: LoadSettings,
    paced_connections: int,
    paced_duration: float,
    results: list[ProfileResult],
) -> str:
    """Everything measured, per profile, with the ratios and whether each target was met."""
    out: dict[str, Any] = {
        "closed_loop": vars(closed),
        "open_loop": {
            "connections": paced_connections,
            "duration_s": paced_duration,
            "warmup_s": closed.warmup_s,
        },
        "profiles": {},
    }
    for r in results:
        wide = {
            name: {k: v for k, v in info.items() if k != "input"} for name, info in r.wide.items()
        }
        s = r.shadow
        out["profiles"][r.profile] = {
            "wide_models": wide,
            "cache": {
                c.model: {
                    "miss": c.miss.as_dict(),
                    "hit": c.hit.as_dict(),
                    "rps_hit_over_miss": _ratio(c.hit.rps, c.miss.rps),
                    "p50_hit_over_miss": _ratio(c.hit.p50_ms, c.miss.p50_ms),
                    "p99_hit_over_miss": _ratio(c.hit.p99_ms, c.miss.p99_ms),
                }
                for c in r.cache
            },
            "cache_target_model": CACHE_TARGET_MODEL,
            "cache_target_met": (
                _cache_pair(r, CACHE_TARGET_MODEL).speedup >= CACHE_TARGET if r.cache else None
            ),
            "shadow": {
                "rate": s.rate,
                "iris_saturated_rps": round(s.saturated_rps, 1),
                "rounds": {
                    "without": [r.as_dict() for r in s.baseline],
                    "with": [r.as_dict() for r in s.shadow],
                },
                "medians": {
                    side: {f: round(s.median(side, f), 3) for f in SHADOW_FIGURES}
                    for side in ("none", "v3")
                },
                "with_over_without": {f: round(s.ratio(f), 3) for f in SHADOW_FIGURES},
                "pooled_ms": {
                    side: {f"p{q}": round(s.pooled(side, q), 3) for q in POOLED}
                    for side in ("none", "v3")
                },
                "pooled_with_over_without": {f"p{q}": round(s.pooled_ratio(q), 3) for q in POOLED},
                "rows": s.counts,
                "answers_not_from_v1": s.leaks,
                "answers_checked": s.checked,
                "control": s.control,
                "generator_nice": s.generator_nice,
                "repeated": s.repeated,
            },
            "shadow_target_met": None if s.control else s.p99_ratio <= SHADOW_TARGET,
            "problems": r.problems,
        }
    return json.dumps(out, indent=2)


def _cache_pair(result: ProfileResult, model: str) -> CachePair:
    return next(c for c in result.cache if c.model == model)


def as_tables(
    closed: LoadSettings,
    paced_connections: int,
    paced_duration: float,
    results: list[ProfileResult],
) -> str:
    """One table for the cache runs and one for the shadow runs, each with its target line."""
    lines = [
        f"Cache: POST predict (explicit v1, same input every time), {closed.connections} "
        f"connections, closed loop, {closed.duration_s:g}s after {closed.warmup_s:g}s warm-up, "
        f"keep-alive {'on' if closed.keepalive else 'off'}",
        f"{'profile':<11}{'model':<6}{'cache':<12}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cpu ms/req':>11}{'requests':>9}{'errors':>7}{'other cpu':>10}{'conns':>7}  answers",
    ]
    for r in results:
        for c in r.cache:
            for name, run, kind in (
                ("off (miss)", c.miss, "uncached"),
                ("on (hit)", c.hit, "cached"),
            ):
                lines.append(
                    f"{r.profile:<11}{c.model:<6}{name:<12}{run.rps:>8.1f}{run.p50_ms:>9.2f}"
                    f"{run.p99_ms:>9.2f}{run.server_cpu_ms_per_request:>11.2f}{run.requests:>9}"
                    f"{run.errors:>7}{run.other_cpu_cores:>10.2f}{_spread(run):>7}  "
                    f"{run.marked}/{run.requests} {kind}"
                )
            lines.append(
                f"{r.profile:<11}{c.model:<6}{'hit/miss':<12}{_x(c.hit.rps, c.miss.rps):>8}"
                f"{_x(c.hit.p50_ms, c.miss.p50_ms):>9}{_x(c.hit.p99_ms, c.miss.p99_ms):>9}"
                f"{_x(c.hit.server_cpu_ms_per_request, c.miss.server_cpu_ms_per_request):>11}"
            )
        for name, w in r.wide.items():
            lines.append(
                f"{r.profile:<11}{name} v1: {'-'.join(map(str, w['sizes']))}, "
                f"{w['parameters']} parameters, one row infers in "
                f"{w['inference_ms_median']:.2f} ms (median, in a shell process)"
            )
        if r.cache:
            judged = _cache_pair(r, CACHE_TARGET_MODEL)
            lines.append(
                f"{r.profile:<11}target: {CACHE_TARGET_MODEL} hit >= {CACHE_TARGET:g}x miss "
                f"req/s: {judged.speedup:.2f}x, {_met(judged.speedup >= CACHE_TARGET)}"
            )
    lines += [
        "",
        f"Shadow: POST predict iris v1, open loop, {paced_connections} connections, "
        f"{paced_duration:g}s after {closed.warmup_s:g}s warm-up; latency from the scheduled "
        "send time",
        f"{'profile':<11}{'shadow':<9}{'req/s':>7}{'sent':>7}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'p99 ms':>8}{'max ms':>8}{'cpu ms/req':>11}{'lag p99':>8}{'errors':>7}{'other cpu':>10}"
        f"{'outside':>8}{'conns':>7}{'gen ms':>7}{'host ms':>8}",
    ]
    for r in results:
        s = r.shadow
        for i, (b, w) in enumerate(zip(s.baseline, s.shadow, strict=True), 1):
            lines.append(_paced_line(r.profile, f"none #{i}", b))
            lines.append(_paced_line(r.profile, f"v3 #{i}", w))
        if len(s.baseline) > 1:
            for side in ("none", "v3"):
                lines.append(
                    f"{r.profile:<11}{side + ' med':<9}{'':>7}{'':>7}"
                    + "".join(f"{s.median(side, f):>8.2f}" for f in SHADOW_FIGURES[:3])
                    + f"{s.median(side, 'max_ms'):>8.1f}"
                    + f"{s.median(side, 'server_cpu_ms_per_request'):>11.2f}"
                )
        lines.append(
            f"{r.profile:<11}{'v3/none':<9}{'':>7}{'':>7}"
            + "".join(f"{s.ratio(f):>7.2f}x" for f in SHADOW_FIGURES[:4])
            + f"{s.ratio('server_cpu_ms_per_request'):>10.2f}x"
        )
        for side in ("none", "v3"):
            lines.append(
                f"{r.profile:<11}{side + ' all':<9}{'':>7}"
                f"{sum(len(run.latencies_ms) for run in s.runs(side)):>7}"
                + "".join(f"{s.pooled(side, q):>8.2f}" for q in POOLED)
            )
        lines.append(
            f"{r.profile:<11}{'v3/none':<9}{'':>7}{'':>7}"
            + "".join(f"{s.pooled_ratio(q):>7.2f}x" for q in POOLED)
        )
        c = s.counts
        lines.append(
            f"{r.profile:<11}rate {s.rate:g} req/s"
            + (
                f" = {s.rate / s.saturated_rps:.0%} of iris saturated {s.saturated_rps:.1f} req/s"
                if s.saturated_rps
                else " (--rate)"
            )
            + f"; shadow rows for {c['shadowed']} of "
            f"{c['predictions']} predictions while v3 was active ({c['shadow_errors']} errors, "
            f"{c['agreeing']} agreeing), {c['baseline_shadowed']} of {c['baseline_predictions']} "
            f"while not; answers not v1's own: {s.leaks} of {s.checked}; "
            f"load generator at nice {s.generator_nice}"
        )
        lines.append(
            f"{r.profile:<11}measured again (load generator or host over {STALL_LIMIT_MS:g} ms "
            f"late, or over {OUTSIDE_LIMIT_CORES:g} cores busy outside the benchmark): "
            f"{', '.join(s.repeated) or 'none'}"
        )
        if s.control:
            lines.append(
                f"{r.profile:<11}control: v3 staged on both sides, so 'v3' rows ran without a "
                f"shadow too; pooled p99 ratio of two identical sides: {s.p99_ratio:.2f}x"
            )
            continue
        lines.append(
            f"{r.profile:<11}target: p99 with shadow <= {SHADOW_TARGET:g}x without"
            + f" (all requests of {len(s.baseline)} runs each)"
            + f": {s.p99_ratio:.2f}x, {_met(s.p99_ratio <= SHADOW_TARGET)}"
        )
    return "\n".join(lines)


def _paced_line(profile: str, name: str, run: PacedResult) -> str:
    return (
        f"{profile:<11}{name:<9}{run.rate:>7.1f}{run.scheduled:>7}{run.p50_ms:>8.2f}"
        f"{run.p95_ms:>8.2f}{run.p99_ms:>8.2f}{run.max_ms:>8.1f}"
        f"{run.server_cpu_ms_per_request:>11.2f}{run.lag_p99_ms:>8.2f}{run.errors:>7}"
        f"{run.other_cpu_cores:>10.2f}{run.outside_cpu_cores:>8.2f}{_spread(run):>7}"
        f"{run.generator_late_ms:>7.1f}"
        + (f"{run.host_stall_ms:>8.1f}" if run.host_stall_ms is not None else f"{'?':>8}")
    )


def _spread(run: LoadResult | PacedResult) -> str:
    """Connections per server process mid-run, e.g. '9+8' ('?' when unknown)."""
    return "+".join(map(str, run.connection_spread)) or "?"


def _x(a: float, b: float) -> str:
    """a/b as '0.42x', or '-' when undefined."""
    return f"{a / b:.2f}x" if b else "-"
