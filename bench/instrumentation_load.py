"""What instrumentation costs: POST /api/v1/predict with metrics and logging on, then off.

One instance per profile is served twice per round, alternately: as configured (Prometheus
middleware and database wrappers, platform metrics in multiprocess mode, one JSON log line
per request, request tallies for /stats) and with ``MLPLATFORM_INSTRUMENTATION=0`` (all of
that off). Both runs send the same authenticated, stored prediction; rate limits are off in
both so they measure the instrumentation alone. The target: throughput within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3, help="on/off pairs; the median is shown")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--redis-db", type=int, default=5)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def run_mode(
    instance: platform_setup.Instance, mode: str, settings: LoadSettings, args, logs: Path
) -> tuple[LoadResult, int]:
    """Serve the instance with instrumentation ``mode``, check an answer, load it, stop it."""
    env = {**instance.env, "RATELIMIT_ENABLE": "0", "SECURE_SSL_REDIRECT": "0", **MODES[mode]}
    served = replace(instance, env=env)
    log = logs / f"{instance.profile}-{mode}.log"
    with platform_setup.serving(served, log) as running:
        target = running.predict_target(instance.api_key, BODY)
        answer = probe(target)
        assert answer.label == "setosa", answer
        result = measure_server(target, settings, args.generator, running.server.pgid, running.port)
    lines = sum(
        1 for line in log.read_text(errors="replace").splitlines() if "mlplatform.request" in line
    )
    return result, lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = LoadSettings(
        connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    logs = Path(tempfile.mkdtemp(prefix="instrumentation-load-"))
    report: dict[str, dict] = {}
    failed = False
    for profile in profiles:
        runs: dict[str, list[LoadResult]] = {"on": [], "off": []}
        log_lines = {"on": 0, "off": 0}
        with platform_setup.instance(profile, args.redis_db) as instance:
            for _ in range(args.rounds):
                for mode in ("on", "off"):
                    cpu.settle(args.quiet_wait)
                    result, lines = run_mode(instance, mode, settings, args, logs)
                    runs[mode].append(result)
                    log_lines[mode] += lines
        on, off = median_round(runs["on"]), median_round(runs["off"])
        gap = 1 - on.rps / off.rps if off.rps else float("nan")
        failed |= any(r.errors for rs in runs.values() for r in rs)
        report[profile] = {
            "on": on.as_dict(),
            "off": off.as_dict(),
            "rounds_rps": {m: [round(r.rps, 1) for r in rs] for m, rs in runs.items()},
            "request_log_lines": log_lines,
            "throughput_cost": round(gap, 4),
            "target_met": gap < TARGET,
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(as_table(report, settings, args.rounds))
    if failed:
        print(f"errors in some runs; server logs kept in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if failed else 0


def as_table(report: dict[str, dict], settings: LoadSettings, rounds: int) -> str:
    lines = [
        f"POST /api/v1/predict, {settings.connections} connections, {settings.duration_s:g} s "
        f"per run, median of {rounds} on/off pairs",
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
            f"(target < {100 * TARGET:.0f}%: {verdict}); rounds {entry['rounds_rps']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
