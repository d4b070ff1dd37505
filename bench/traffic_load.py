"""Load-test the traffic features of POST /api/v1/predict: response cache and shadow versions.

1. Cached versus uncached throughput (closed loop): `wide` and `wider` (dense networks whose
   inference costs about 0.7 and 3 ms) and `iris` v1, each with `cache_ttl = 0` and then 600 s
   with the same input every time.
2. Predict latency with an active shadow version versus without (open loop at a fixed rate,
   alternating rounds; a run during which the load generator or the host stalled, or other
   work kept the host busy, is measured again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup, traffic_admin, traffic_report
from bench.correctness import Answer, MismatchError, probe
from bench.loadgen import LoadSettings, PacedResult, Target, measure_paced, measure_server
from bench.traffic_report import (
    OUTSIDE_LIMIT_CORES,
    STALL_LIMIT_MS,
    CachePair,
    ProfileResult,
    ShadowRuns,
)

IRIS_FEATURES = [5.1, 3.5, 1.4, 0.2]
CACHE_TTL_S = 600
HIT_MARKER, MISS_MARKER = '"cached":true', '"cached":false'
SHADOW_LABEL, SHADOW_ARTIFACT_OF = "v3", "v2"
MIN_SHADOWED = 0.99  # share of live predictions that must have a shadow row afterwards
DRAIN_POLLS = 5  # reads of the shadow counts, a second apart, while the shadow queue drains
DRAIN_S = 1.0  # after a run, for its last shadow copies to be answered
TOLERANCE = 1e-6
# runs again after a stall of ours (STALL_LIMIT_MS, OUTSIDE_LIMIT_CORES); the last one is kept
STALL_REPEATS = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="embedded")
    p.add_argument("--connections", type=int, default=16, help="closed-loop connections (cache)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per cache run")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each run")
    p.add_argument(
        "--no-keepalive",
        action="store_true",
        help="cache part: a connection per request (spreads load over production's workers)",
    )
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--rate",
        type=float,
        help="requests per second of the shadow runs (default: --rate-share of iris's "
        "saturated throughput measured in the cache part)",
    )
    p.add_argument("--rate-share", type=float, default=0.45, help="see --rate")
    p.add_argument(
        "--parts",
        choices=("both", "shadow"),
        default="both",
        help="both parts, or the shadow part alone (it then needs --rate)",
    )
    p.add_argument(
        "--paced-duration", type=float, default=12.0, help="measured seconds per shadow run"
    )
    p.add_argument(
        "--paced-connections", type=int, default=8, help="connection pool of the shadow runs"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="shadow off/on pairs, in alternating order (v3 staged between them)",
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="shadow part: keep v3 staged on both sides (A/A), to show the ratio's noise",
    )
    p.add_argument(
        "--quiet-wait", type=float, default=20.0, help="max seconds to wait for an idle host"
    )
    p.add_argument(
        "--redis-db", type=int, default=6, help="Redis db for production (flushed before and after)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = p.parse_args(argv)
    if not (1 <= args.connections <= 1024 and 1 <= args.paced_connections <= 1024):
        p.error("connections must be between 1 and 1024")
    if not (0 < args.duration <= 600 and 0 < args.paced_duration <= 600 and args.warmup <= 60):
        p.error("durations must be at most 600 s, the warm-up at most 60 s")
    if args.rate is not None and not 0 < args.rate <= 10_000:
        p.error("--rate must be between 0 and 10000")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be between 1 and 20")
    if args.parts == "shadow" and args.rate is None:
        p.error("--parts shadow needs --rate (there is no cache run to take it from)")
    if not 0 < args.rate_share <= 1:
        p.error("--rate-share must be in (0, 1]")
    return args


def closed_settings(args: argparse.Namespace) -> LoadSettings:
    """Settings of the closed-loop cache runs."""
    return LoadSettings(
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        keepalive=not args.no_keepalive,
    )


def predict_body(model: str, version: str, input_data: list[float]) -> str:
    """The JSON body of a prediction request for an explicit version."""
    return json.dumps({"input_data": input_data, "model": model, "model_version": version})


class Bench:
    """One profile's instance and running server, and the runs made against it."""

    def __init__(
        self,
        args: argparse.Namespace,
        instance: platform_setup.Instance,
        running: platform_setup.Running,
    ) -> None:
        self.args, self.instance, self.running = args, instance, running
        self.problems: list[str] = []
        self.repeated: list[str] = []  # shadow runs measured again, and why
        self.shadow_on = self.shadow_created = False  # shadow v3 is created when first on
        self.closed = closed_settings(args)
        self.paced = LoadSettings(
            connections=args.paced_connections,
            duration_s=args.paced_duration,
            warmup_s=args.warmup,
        )

    def target(self, body: str, marker: str = "") -> Target:
        return self.running.predict_target(self.instance.api_key, body, marker)

    def set_ttl(self, model: str, ttl: int) -> None:
        """Change the cache TTL and give the server time to notice."""
        traffic_admin.set_cache_ttl(self.instance.env, model, ttl)
        time.sleep(traffic_admin.NOTICE_S)

    def cache_pair(self, model: str, input_data: list[float]) -> CachePair:
        """The same request with the cache off (every answer inferred), then on (all hits)."""
        body = predict_body(model, "v1", input_data)
        runs = {}
        for name, ttl, marker in (("miss", 0, MISS_MARKER), ("hit", CACHE_TTL_S, HIT_MARKER)):
            self.set_ttl(model, ttl)
            target = self.target(body, marker)
            probe(target)  # with the cache on, this first answer fills it
            cpu.settle(self.args.quiet_wait)
            result = measure_server(
                target,
                self.closed,
                self.args.generator,
                self.running.server.pgid,
                self.running.port,
            )
            if result.marked != result.requests:
                self.problems.append(
                    f"{model} {name}: {result.requests - result.marked} of {result.requests} "
                    f"answers lacked {marker}"
                )
            if result.errors:
                self.problems.append(f"{model} {name}: {result.errors} errors")
            runs[name] = result
        return CachePair(model=model, miss=runs["miss"], hit=runs["hit"])

    def shadow_runs(self, rate: float, saturated_rps: float) -> ShadowRuns:
        """iris v1 at a fixed rate without a shadow and with shadow v3 copying every request.

        Each round measures both, in alternating order (none-v3, v3-none, ...), switching v3
        on and off (staged) between runs, so that drift on the host affects both sides alike.
        The target compares the p99 of all requests of each side's runs together.
        """
        self.set_ttl("iris", 0)
        v1 = probe(self.target(predict_body("iris", "v1", IRIS_FEATURES)))
        shadow_answer = probe(self.target(predict_body("iris", SHADOW_ARTIFACT_OF, IRIS_FEATURES)))
        if _same(v1, shadow_answer):
            self.problems.append("v1 and the shadow's artifact answer alike: leaks are invisible")
        target = self.target(predict_body("iris", "v1", IRIS_FEATURES))
        if self.args.control:  # v3 exists, staged, on both sides
            self.switch_shadow(True)
            self.switch_shadow(False)
        runs: dict[str, list[PacedResult]] = {"none": [], "v3": []}
        windows: dict[str, list[tuple[str, str]]] = {"none": [], "v3": []}
        with cpu.generator_priority() as generator_nice:
            for round_no in range(self.args.rounds):
                self.shadow_round(round_no, target, rate, runs, windows)
        counts = self.drained_counts(windows)
        leaks = {name: sum(_not_v1(r.bodies, v1) for r in rs) for name, rs in runs.items()}
        for name, rs in runs.items():
            for i, r in enumerate(rs, 1):
                if r.errors:
                    self.problems.append(f"paced run {name} #{i}: {r.errors} errors")
        if leaks["v3"] or leaks["none"]:
            self.problems.append(f"answers not purely from v1: {leaks}")
        if not self.args.control and counts["shadowed"] < MIN_SHADOWED * counts["predictions"]:
            self.problems.append(
                f"only {counts['shadowed']} of {counts['predictions']} predictions got a shadow row"
            )
        if counts["baseline_shadowed"]:
            self.problems.append(
                f"{counts['baseline_shadowed']} predictions got a shadow row while v3 was staged"
            )
        return ShadowRuns(
            rate=rate,
            saturated_rps=saturated_rps,
            baseline=runs["none"],
            shadow=runs["v3"],
            counts=counts,
            leaks=leaks["v3"],
            checked=sum(len(r.bodies) for r in runs["v3"]),
            control=self.args.control,
            generator_nice=generator_nice,
            repeated=self.repeated,
        )

    def shadow_round(
        self,
        round_no: int,
        target: Target,
        rate: float,
        runs: dict[str, list[PacedResult]],
        windows: dict[str, list[tuple[str, str]]],
    ) -> None:
        """One pair of runs, without and with the shadow, in this round's order."""
        for name in ("none", "v3") if round_no % 2 == 0 else ("v3", "none"):
            self.switch_shadow(name == "v3" and not self.args.control)
            for attempt in range(STALL_REPEATS + 1):
                cpu.settle(self.args.quiet_wait)
                started = _now()
                result = measure_paced(
                    target,
                    rate,
                    self.paced,
                    self.running.server.pgid,
                    keep_bodies=True,
                    port=self.running.port,
                    watch_host=True,
                    balance=True,
                )
                time.sleep(DRAIN_S)
                windows[name].append((started, _now()))
                stall = _measuring_stall(result)
                if stall is None or attempt == STALL_REPEATS:
                    break
                run = f"{name} #{round_no + 1}"
                self.repeated.append(f"{run} ({stall}, p99 {result.p99_ms:.1f} ms)")
            runs[name].append(result)

    def switch_shadow(self, on: bool) -> None:
        """Make iris v3 an active shadow (created the first time) or stage it; wait for it."""
        if on == self.shadow_on:
            return
        env = self.instance.env
        if self.shadow_created:
            status = "active" if on else "staged"
            traffic_admin.set_version_status(env, "iris", SHADOW_LABEL, status)
        else:
            traffic_admin.create_shadow(env, "iris", SHADOW_LABEL, SHADOW_ARTIFACT_OF)
            self.shadow_created = True
        self.shadow_on = on
        time.sleep(traffic_admin.NOTICE_S)

    def drained_counts(self, windows: dict[str, list[tuple[str, str]]]) -> dict[str, int]:
        """Shadow counts once the background queue has caught up (a bounded number of reads)."""
        counts: dict[str, int] = {}
        for _ in range(DRAIN_POLLS):
            counts = traffic_admin.shadow_counts(
                self.instance.env,
                "iris",
                "v1",
                SHADOW_LABEL,
                on=windows["v3"],
                off=windows["none"],
            )
            if self.args.control or counts["shadowed"] >= counts["predictions"]:
                break
            time.sleep(1.0)
        return counts


def _measuring_stall(result: PacedResult) -> str | None:
    """Why a run measured a stall of the load generator or of the host, or a host busy with
    other work, if it did."""
    if result.generator_late_ms > STALL_LIMIT_MS:
        return f"generator {result.generator_late_ms:.0f} ms late"
    if result.host_stall_ms is not None and result.host_stall_ms > STALL_LIMIT_MS:
        return f"host stalled {result.host_stall_ms:.0f} ms"
    if result.outside_cpu_cores > OUTSIDE_LIMIT_CORES:
        return f"{result.outside_cpu_cores:.2f} cores busy outside"
    return None


def _now() -> str:
    """The current time (UTC, ISO 8601), to mark which predictions a run made."""
    return datetime.now(UTC).isoformat()


def _same(a: Answer, b: Answer) -> bool:
    return a.label == b.label and all(
        abs(x - y) <= TOLERANCE for x, y in zip(a.probabilities, b.probabilities, strict=True)
    )


def _not_v1(bodies: tuple[bytes, ...], v1: Answer) -> int:
    """Answers that are not v1's own: another version, other outputs, or a shadow field."""
    bad = 0
    for raw in bodies:
        try:
            body: dict[str, Any] = json.loads(raw)
            ok = (
                body["model_version"] == "v1"
                and b"shadow" not in raw
                and f'"{SHADOW_LABEL}"'.encode() not in raw
                and _same(v1, Answer(body["label"], [float(v) for v in body["prediction"]]))
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        bad += not ok
    return bad


def run_profile(profile: str, args: argparse.Namespace, logs: Path) -> ProfileResult:
    """Set up an instance with the wide models, serve it, run both measurements, tear down."""
    cache_part = args.parts == "both"
    with platform_setup.instance(profile, args.redis_db) as instance:
        wide = {}
        for name in traffic_admin.WIDE_MODELS if cache_part else ():
            info = wide[name] = traffic_admin.register_wide_model(instance.env, name)
            print(
                f"{profile}: {name} v1 {'-'.join(map(str, info['sizes']))}, "
                f"{info['parameters']} parameters, {info['artifact_bytes'] / 1e6:.1f} MB; one "
                f"row infers in {info['inference_ms_median']:.2f} ms (median, min "
                f"{info['inference_ms_min']:.2f} ms, in a shell process)",
                file=sys.stderr,
            )
        with platform_setup.serving(instance, logs / f"traffic-{profile}.log") as running:
            bench = Bench(args, instance, running)
            cache: list[CachePair] = []
            if cache_part:
                cache = [bench.cache_pair(name, info["input"]) for name, info in wide.items()]
                cache.append(bench.cache_pair("iris", IRIS_FEATURES))
            saturated = cache[-1].miss.rps if cache else 0.0
            rate = args.rate or round(args.rate_share * saturated, 1)
            shadow = bench.shadow_runs(rate, saturated)
    return ProfileResult(
        profile=profile,
        wide=wide,
        cache=cache,
        shadow=shadow,
        problems=bench.problems,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the requested profiles; exit non-zero on errors or failed checks (not on targets)."""
    args = parse_args(argv)
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    logs = Path(tempfile.mkdtemp(prefix="traffic-load-logs-"))
    results: list[ProfileResult] = []
    failures: list[str] = []
    for profile in profiles:
        try:
            result = run_profile(profile, args, logs)
        except (platform_setup.SetupError, MismatchError, RuntimeError, OSError) as exc:
            failures.append(f"{profile}: {exc}")
            continue
        results.append(result)
        failures += [f"{profile}: {p}" for p in result.problems]
    closed = closed_settings(args)
    if args.json:
        print(traffic_report.as_json(closed, args.paced_connections, args.paced_duration, results))
    else:
        print(
            traffic_report.as_tables(closed, args.paced_connections, args.paced_duration, results)
        )
    if failures:
        print("FAILED:\n" + "\n".join(failures), file=sys.stderr)
        print(f"server logs kept in {logs}", file=sys.stderr)
        return 1
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
