"""Predict latency with an active shadow version versus without, in interleaved slices.

`traffic_load.py` compares runs of 12 s with and without the shadow; on a host whose speed
changes from one run to the next, two identical sides differ by more than the 10 % to be
shown. Here one open-loop run at a fixed rate lasts the whole measurement while the shadow
version `v3` of iris (v2's artifact, `shadow_share` 1.0) is switched on (active) and off
(staged) every `--slice` seconds, by a `manage.py shell` kept open for it
(`traffic_admin.StatusSwitch`): the two sides alternate every few seconds, so that a change
of the host's speed falls on both alike. Each request is counted on the side its slice was
on, by its scheduled send time; those scheduled in the first `--guard` seconds after a
switch are left out (the server notices a switch within about a second). The target
compares the p99 of all requests of each side.

A pair of slices during which the load generator's loop was late, or the host stalled
(`hoststall.py`), by more than `--stall-limit` ms measured the measuring side, not the
server: it is left out and measured again in a further run of as many pairs as were left
out (at most `--remeasure` further runs; the last one's pairs are kept whatever happened,
and reported).

Checked as in `traffic_load.py`: every answer is v1's own, every v1 prediction made while
v3 was on has a shadow row, and none made while it was off. `--control` leaves v3 staged
in every slice (an A/A run): its ratio is the measurement's own noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup, traffic_admin
from bench.correctness import probe
from bench.loadgen import LoadSettings, PacedResult, measure_paced, measure_server
from bench.traffic_load import (
    IRIS_FEATURES,
    SHADOW_ARTIFACT_OF,
    SHADOW_LABEL,
    _not_v1,
    _same,
    predict_body,
)
from bench.traffic_report import STALL_LIMIT_MS

TARGET = 1.10  # p99 with the shadow at most this many times p99 without
MIN_SHADOWED = 0.99
SIDES = ("none", "v3")
DRAIN_S = 1.0  # after the run, for the last copies to be stored before they are counted


@dataclass(frozen=True)
class Side:
    """The requests of one side: every slice's latencies, and the pooled percentiles."""

    slices: list[list[float]]

    @property
    def latencies(self) -> np.ndarray:
        return np.concatenate([np.asarray(s) for s in self.slices if s] or [np.zeros(0)])

    def pooled(self, q: float) -> float:
        values = self.latencies
        return float(np.percentile(values, q)) if values.size else 0.0

    def slice_p99(self) -> list[float]:
        return [float(np.percentile(s, 99)) if s else 0.0 for s in self.slices]


@dataclass(frozen=True)
class Slice:
    """The requests of one slice, after its guard: latencies, wall-clock window."""

    latencies: list[float]
    window: tuple[str, str]


@dataclass(frozen=True)
class SliceRun:
    profile: str
    rate: float
    saturated_rps: float
    runs: list[PacedResult]  # the first run, then each that measured disturbed pairs again
    sides: dict[str, Side]
    counts: dict[str, int]
    leaks: int
    control: bool
    switch_ms: list[float]  # how long each switch's service call took
    disturbed: list[str]  # each pair measured again (or kept, in the last run), and why

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def ratio(self) -> float:
        none = self.sides["none"].pooled(99)
        return self.sides["v3"].pooled(99) / none if none else 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="both")
    p.add_argument("--rate", type=float, help="req/s (default: --rate-share of saturation)")
    p.add_argument("--rate-share", type=float, default=0.45)
    p.add_argument("--slice", type=float, default=6.0, help="seconds between switches")
    p.add_argument("--guard", type=float, default=2.0, help="seconds left out after a switch")
    p.add_argument("--pairs", type=int, default=14, help="off/on slice pairs")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--control", action="store_true", help="v3 staged in every slice (A/A)")
    p.add_argument(
        "--stall-limit",
        type=float,
        default=STALL_LIMIT_MS,
        help="ms: a pair in which the generator or the host stalled longer is measured again",
    )
    p.add_argument("--remeasure", type=int, default=2, help="runs for disturbed pairs, at most")
    p.add_argument("--quiet-wait", type=float, default=20.0)
    p.add_argument("--redis-db", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.guard < args.slice <= 60:
        p.error("need 0 < --guard < --slice <= 60")
    if not 1 <= args.pairs <= 100:
        p.error("--pairs must be between 1 and 100")
    if not 0 <= args.remeasure <= 5:
        p.error("--remeasure must be between 0 and 5")
    if args.rate is not None and not 0 < args.rate <= 10_000:
        p.error("--rate must be between 0 and 10000")
    return args


def saturation(running: platform_setup.Running, target) -> float:
    """iris v1's closed-loop req/s (16 connections, 10 s), as in traffic_load's cache part."""
    result = measure_server(target, LoadSettings(), "auto", running.server.pgid, running.port)
    return result.rps


def measure(profile: str, args: argparse.Namespace, logs: Path) -> SliceRun:
    log = logs / f"slices-{profile}.log"
    with (
        platform_setup.instance(profile, args.redis_db) as instance,
        platform_setup.serving(instance, log) as running,
    ):
        env = instance.env
        traffic_admin.set_cache_ttl(env, "iris", 0)
        target = running.predict_target(instance.api_key, predict_body("iris", "v1", IRIS_FEATURES))
        v1 = probe(target)
        other = probe(
            running.predict_target(
                instance.api_key, predict_body("iris", SHADOW_ARTIFACT_OF, IRIS_FEATURES)
            )
        )
        if _same(v1, other):
            raise RuntimeError("v1 and the shadow's artifact answer alike")
        saturated = 0.0 if args.rate else saturation(running, target)
        rate = args.rate or round(args.rate_share * saturated, 1)
        traffic_admin.create_shadow(env, "iris", SHADOW_LABEL, SHADOW_ARTIFACT_OF)
        switch = traffic_admin.StatusSwitch(env, "iris", SHADOW_LABEL)
        runs: list[PacedResult] = []
        kept: list[tuple[Slice, Slice]] = []
        disturbed: list[str] = []
        switch_ms: list[float] = []
        try:
            switch.set("staged")
            time.sleep(traffic_admin.NOTICE_S)
            for attempt in range(args.remeasure + 1):
                last = attempt == args.remeasure
                pairs = args.pairs - len(kept)
                run, slices, took = _interleaved(args, running, target, rate, switch, pairs)
                runs.append(run)
                switch_ms += took
                for k in range(pairs):
                    none, v3 = slices[2 * k], slices[2 * k + 1]
                    why = _stalls(run, none[1], v3[2], args.stall_limit)
                    if why:
                        what = "kept, last run" if last else "measured again"
                        disturbed.append(f"run {attempt + 1}, pair {k + 1} ({what}): {why}")
                    if not why or last:
                        kept.append((_slice(args, run, *none[1:]), _slice(args, run, *v3[1:])))
                if len(kept) == args.pairs:
                    break
        finally:
            switch.close()
        time.sleep(DRAIN_S)
        sides = {side: Side([pair[i].latencies for pair in kept]) for i, side in enumerate(SIDES)}
        windows = {side: [pair[i].window for pair in kept] for i, side in enumerate(SIDES)}
        counts = traffic_admin.shadow_counts(
            env, "iris", "v1", SHADOW_LABEL, on=windows["v3"], off=windows["none"]
        )
    return SliceRun(
        profile=profile,
        rate=rate,
        saturated_rps=saturated,
        runs=runs,
        sides=sides,
        counts=counts,
        leaks=sum(_not_v1(run.bodies, v1) for run in runs),
        control=args.control,
        switch_ms=switch_ms,
        disturbed=disturbed,
    )


def _interleaved(args, running, target, rate, switch, pairs):
    """One paced run while another thread switches v3 on and off; the slices' times."""
    warmup = 2.0
    lead = 1.0  # the measured part starts after the warm-up and a connection balance
    switches: list[tuple[str, float, float]] = []  # side, asked, done (time.monotonic())

    def switching(first: float) -> None:
        for k in range(2 * pairs):
            side = SIDES[k % 2]
            time.sleep(max(0.0, first + k * args.slice - time.monotonic()))
            asked = time.monotonic()
            switch.set("active" if side == "v3" and not args.control else "staged")
            switches.append((side, asked, time.monotonic()))

    cpu.settle(args.quiet_wait)
    settings = LoadSettings(
        connections=args.connections,
        duration_s=2 * pairs * args.slice + lead + 0.5,
        warmup_s=warmup,
    )
    first = time.monotonic() + warmup + lead
    thread = threading.Thread(target=switching, args=(first,), name="switch", daemon=True)
    with cpu.generator_priority():
        thread.start()
        run = measure_paced(
            target,
            rate,
            settings,
            running.server.pgid,
            keep_bodies=True,
            port=running.port,
            watch_host=True,
            balance=True,
        )
    thread.join()
    # A slice lasts from its switch's return to the next switch's call (the last: its end).
    ends = [asked for _, asked, _ in switches[1:]] + [first + len(switches) * args.slice]
    slices = [(side, done, end) for (side, _, done), end in zip(switches, ends, strict=True)]
    switch_ms = [(done - asked) * 1e3 for _, asked, done in switches]
    return run, slices, switch_ms


def _slice(args, run: PacedResult, switched: float, until: float) -> Slice:
    """The requests of a slice scheduled after its guard, and its wall-clock window."""
    wall = time.time() - time.monotonic()
    at = np.asarray(run.scheduled_at)
    start = switched + args.guard
    inside = (at >= start) & (at < until)
    latencies = np.asarray(run.latencies_ms)[inside].tolist()
    return Slice(latencies, (_iso(start + wall), _iso(until + wall)))


def _stalls(run: PacedResult, start: float, until: float, limit_ms: float) -> str:
    """The measuring side's stalls longer than `limit_ms` between start and until, if any:
    the generator's loop late for a request scheduled then, or the host-stall canary."""
    late = [ms for at, ms in run.generator_stalls if start <= at < until and ms > limit_ms]
    host = [
        ms
        for end, ms in run.host_stalls
        if ms > limit_ms and end >= start and end - ms / 1e3 < until
    ]
    parts = []
    if late:
        parts.append(f"generator {max(late):.0f} ms late")
    if host:
        parts.append(f"host stalled {max(host):.0f} ms")
    return ", ".join(parts)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def problems(r: SliceRun) -> list[str]:
    out = []
    if r.errors:
        out.append(f"{r.errors} errors")
    if r.leaks:
        out.append(f"{r.leaks} answers not purely from v1")
    c = r.counts
    if not r.control and c["shadowed"] < MIN_SHADOWED * c["predictions"]:
        out.append(f"only {c['shadowed']} of {c['predictions']} predictions got a shadow row")
    if c["baseline_shadowed"]:
        out.append(f"{c['baseline_shadowed']} predictions got a shadow row while v3 was staged")
    return out


def as_tables(args: argparse.Namespace, results: list[SliceRun]) -> str:
    lines = [
        f"Shadow, interleaved: POST predict iris v1, open loop, {args.connections} connections; "
        f"v3 switched {'(control: staged both ways)' if args.control else 'on and off'} every "
        f"{args.slice:g} s, {args.pairs} pairs; the first {args.guard:g} s after each switch left"
        " out; latency from the scheduled send time",
        f"{'profile':<11}{'side':<9}{'slices':>7}{'requests':>9}{'p50 ms':>8}{'p95 ms':>8}"
        f"{'p99 ms':>8}{'max ms':>8}",
    ]
    for r in results:
        for side in SIDES:
            s = r.sides[side]
            values = s.latencies
            lines.append(
                f"{r.profile:<11}{side:<9}{len(s.slices):>7}{values.size:>9}"
                + "".join(f"{s.pooled(q):>8.2f}" for q in (50, 95, 99))
                + f"{(values.max() if values.size else 0.0):>8.1f}"
            )
        none, v3 = r.sides["none"], r.sides["v3"]
        lines.append(
            f"{r.profile:<11}{'v3/none':<9}{'':>7}{'':>9}"
            + "".join(f"{_x(v3.pooled(q), none.pooled(q)):>8}" for q in (50, 95, 99))
        )
        pairs = [b / a for a, b in zip(none.slice_p99(), v3.slice_p99(), strict=False) if a]
        lines += [
            f"{r.profile:<11}p99 of each slice, none: {_list(none.slice_p99())}",
            f"{r.profile:<11}p99 of each slice, v3:   {_list(v3.slice_p99())}",
            f"{r.profile:<11}median of the pairs' p99 ratios: {float(np.median(pairs)):.2f}x; "
            f"v3 higher in {sum(p > 1 for p in pairs)} of {len(pairs)} pairs",
        ]
        for number, run in enumerate(r.runs, 1):
            lines.append(
                f"{r.profile:<11}run {number}: {run.rate:g} req/s"
                + (
                    f" ({r.rate / r.saturated_rps:.0%} of iris saturated {r.saturated_rps:.1f})"
                    if r.saturated_rps
                    else " (--rate)"
                )
                + f", {run.scheduled} sent, cpu {run.server_cpu_ms_per_request:.2f} ms/req, "
                f"lag p99 {run.lag_p99_ms:.2f} ms, {run.errors} errors, other cpu "
                f"{run.other_cpu_cores:.2f}, outside {run.outside_cpu_cores:.2f}, conns "
                f"{'+'.join(map(str, run.connection_spread)) or '?'}, gen "
                f"{run.generator_late_ms:.1f} ms, host "
                f"{run.host_stall_ms if run.host_stall_ms is not None else float('nan'):.1f} ms"
            )
        lines += [f"{r.profile:<11}disturbed: {why}" for why in r.disturbed]
        lines += [
            f"{r.profile:<11}switches took {min(r.switch_ms):.0f}-{max(r.switch_ms):.0f} ms; "
            f"shadow rows for {r.counts['shadowed']} of {r.counts['predictions']} "
            f"predictions while v3 was on, {r.counts['baseline_shadowed']} of "
            f"{r.counts['baseline_predictions']} while off; answers not v1's own: {r.leaks} of "
            f"{sum(len(run.bodies) for run in r.runs)}",
        ]
        if r.control:
            lines.append(
                f"{r.profile:<11}control: pooled p99 ratio of two identical sides: {r.ratio:.2f}x"
            )
        else:
            lines.append(
                f"{r.profile:<11}target: p99 with shadow <= {TARGET:g}x without (all requests "
                f"of {args.pairs} slices each): {r.ratio:.2f}x, "
                f"{'met' if r.ratio <= TARGET else 'NOT met'}"
            )
    return "\n".join(lines)


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _list(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def as_json(args: argparse.Namespace, results: list[SliceRun]) -> str:
    return json.dumps(
        {
            "settings": vars(args),
            "profiles": [
                {
                    "profile": r.profile,
                    "rate": r.rate,
                    "saturated_rps": r.saturated_rps,
                    "runs": [run.as_dict() for run in r.runs],
                    "disturbed": r.disturbed,
                    "sides": {
                        side: {
                            "requests": int(s.latencies.size),
                            **{f"p{q}_ms": s.pooled(q) for q in (50, 95, 99)},
                            "slice_p99_ms": s.slice_p99(),
                        }
                        for side, s in r.sides.items()
                    },
                    "p99_ratio": r.ratio,
                    "counts": r.counts,
                    "leaks": r.leaks,
                    "control": r.control,
                    "switch_ms": r.switch_ms,
                }
                for r in results
            ],
        },
        indent=2,
        default=str,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    logs = Path(mkdtemp(prefix="shadow-slices-logs-"))
    results, failures = [], []
    for profile in profiles:
        try:
            result = measure(profile, args, logs)
        except (platform_setup.SetupError, RuntimeError, OSError) as exc:
            failures.append(f"{profile}: {exc}")
            continue
        results.append(result)
        failures += [f"{profile}: {p}" for p in problems(result)]
    print(as_json(args, results) if args.json else as_tables(args, results))
    if failures:
        print("FAILED:\n" + "\n".join(failures), file=sys.stderr)
        print(f"server logs kept in {logs}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
