"""What instrumentation costs: POST /api/v1/predict with metrics and logging on, then off.

One instance per profile is served twice at the same time: as configured (Prometheus
middleware and database wrappers, platform metrics in multiprocess mode, one JSON log line
per request, request tallies for /stats) and with ``MLPLATFORM_INSTRUMENTATION=0`` (all of
that off). The load goes to one server at a time, in short slices that alternate in the
order on-off, off-on, on-off, ... so that a host whose speed drifts (other machines sharing
it) slows both alike. Both send the same authenticated, stored prediction; rate limits are
off in both so they measure the instrumentation alone. The target: throughput within 10%,
over all slices of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup
from bench.correctness import probe
from bench.loadgen import LoadResult, LoadSettings, measure_server
from bench.report import median_round

BODY = json.dumps({"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris", "model_version": "v1"})
MODES = {"on": {}, "off": {"MLPLATFORM_INSTRUMENTATION": "0"}}
TARGET = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="embedded")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per slice")
    p.add_argument("--warmup", type=float, default=1.0, help="discarded seconds before a slice")
    p.add_argument("--pairs", type=int, default=8, help="on/off slice pairs per profile")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--redis-db", type=int, default=5)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def serve_mode(
    stack: contextlib.ExitStack, instance: platform_setup.Instance, mode: str, logs: Path
) -> tuple[platform_setup.Running, Path]:
    """Serve the instance with instrumentation ``mode`` until the stack closes; check an answer."""
    env = {**instance.env, "RATELIMIT_ENABLE": "0", "SECURE_SSL_REDIRECT": "0", **MODES[mode]}
    log = logs / f"{instance.profile}-{mode}.log"
    running = stack.enter_context(platform_setup.serving(replace(instance, env=env), log))
    answer = probe(running.predict_target(instance.api_key, BODY))
    assert answer.label == "setosa", answer
    return running, log


def request_lines(log: Path) -> int:
    return sum(
        1 for line in log.read_text(errors="replace").splitlines() if "mlplatform.request" in line
    )


def pooled(slices: list[LoadResult]) -> LoadResult:
    """All slices of one mode as one run: requests and CPU summed, latency of the median slice."""
    middle = median_round(slices)
    return replace(
        middle,
        requests=sum(r.requests for r in slices),
        duration_s=sum(r.duration_s for r in slices),
        non200=sum(r.non200 for r in slices),
        socket_errors=sum(r.socket_errors for r in slices),
        server_cpu_s=sum(r.server_cpu_s for r in slices),
        generator_cpu_s=sum(r.generator_cpu_s for r in slices),
        host_busy_s=sum(r.host_busy_s for r in slices),
    )


def measure_profile(profile: str, args: argparse.Namespace, logs: Path) -> dict:
    settings = LoadSettings(
        connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    slices: dict[str, list[LoadResult]] = {"on": [], "off": []}
    with platform_setup.instance(profile, args.redis_db) as instance:
        with contextlib.ExitStack() as stack:
            served = {mode: serve_mode(stack, instance, mode, logs) for mode in MODES}
            for pair in range(args.pairs):
                for mode in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                    running, _ = served[mode]
                    cpu.settle(args.quiet_wait)
                    target = running.predict_target(instance.api_key, BODY)
                    slices[mode].append(
                        measure_server(
                            target, settings, args.generator, running.server.pgid, running.port
                        )
                    )
        lines = {mode: request_lines(log) for mode, (_, log) in served.items()}
    on, off = pooled(slices["on"]), pooled(slices["off"])
    paired = [1 - a.rps / b.rps for a, b in zip(slices["on"], slices["off"], strict=True)]
    gap = 1 - on.rps / off.rps if off.rps else float("nan")
    return {
        "on": on.as_dict(),
        "off": off.as_dict(),
        "slices_rps": {m: [round(r.rps, 1) for r in rs] for m, rs in slices.items()},
        "paired_cost_median": round(statistics.median(paired), 4),
        "cpu_per_request_cost": round(
            on.server_cpu_ms_per_request / off.server_cpu_ms_per_request - 1, 4
        ),
        "request_log_lines": lines,
        "spreads": {
            m: ["+".join(map(str, r.connection_spread)) for r in rs] for m, rs in slices.items()
        },
        "throughput_cost": round(gap, 4),
        "target_met": gap < TARGET,
        "errors": on.errors + off.errors,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    logs = Path(tempfile.mkdtemp(prefix="instrumentation-load-"))
    report = {profile: measure_profile(profile, args, logs) for profile in profiles}
    failed = any(entry["errors"] for entry in report.values())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(as_table(report, args))
    if failed:
        print(f"errors in some runs; server logs kept in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if failed else 0


def as_table(report: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        f"POST /api/v1/predict, {args.connections} connections, {args.pairs} on/off pairs of "
        f"{args.duration:g} s slices, interleaved; req/s and cpu over all slices of a mode, "
        "latency of its median slice",
        f"{'profile':<11} {'instr.':<6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu ms/req':>10} {'oth cores':>9} {'errors':>6} {'log lines':>9}",
    ]
    for profile, entry in report.items():
        for mode in ("on", "off"):
            r = entry[mode]
            lines.append(
                f"{profile:<11} {mode:<6} {r['rps']:>8,.0f} {r['p50_ms']:>7.2f} "
                f"{r['p99_ms']:>7.2f} {r['server_cpu_ms_per_request']:>10.3f} "
                f"{r['other_cpu_cores']:>9.2f} {r['errors']:>6} "
                f"{entry['request_log_lines'][mode]:>9,}"
            )
        verdict = "met" if entry["target_met"] else "MISSED"
        lines.append(
            f"{profile:<11} cost   {100 * entry['throughput_cost']:>7.1f}% of throughput "
            f"(target < {100 * TARGET:.0f}%: {verdict}); median of the pairs "
            f"{100 * entry['paired_cost_median']:.1f}%; cpu per request "
            f"{100 * entry['cpu_per_request_cost']:+.1f}%"
        )
        lines.append(f"{profile:<11} slices req/s {entry['slices_rps']}")
        lines.append(f"{profile:<11} connections per web process {entry['spreads']}")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
