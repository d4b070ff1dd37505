"""Load-test POST /api/v1/predict of our platform against a minimal FastAPI reference."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup, report
from bench.correctness import Answer, MismatchError, compare, probe
from bench.loadgen import LoadResult, LoadSettings, Target, measure_server
from bench.servers import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
FEATURES = [5.1, 3.5, 1.4, 0.2]
REFERENCE_BODY = json.dumps({"input_data": FEATURES, "model_version": "v1"})
OURS_BODY = json.dumps({"input_data": FEATURES, "model": "iris", "model_version": "v1"})
JSON_HEADERS = {"Content-Type": "application/json"}
Runs = dict[str, list[LoadResult]]  # server name -> one result per round


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=("embedded", "production", "both"), default="embedded")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections")
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="measured seconds per server (wrk: whole seconds)",
    )
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before measuring")
    p.add_argument("--rounds", type=int, default=1, help="reference/ours pairs; median shown")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument(
        "--no-keepalive",
        action="store_true",
        help="send Connection: close (a connection per request)",
    )
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for an idle host"
    )
    p.add_argument("--redis-db", type=int, default=5, help="Redis db number for production")
    p.add_argument("--reference-only", action="store_true", help="skip our platform")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if not (1 <= args.connections <= 1024 and 0 < args.duration <= 600 and args.warmup <= 60):
        p.error("need 1-1024 connections, a duration of at most 600 s, a warm-up of at most 60 s")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be between 1 and 20")
    return args


def run_reference(settings: LoadSettings, generator: str, logs: Path) -> tuple[Answer, LoadResult]:
    """Start the reference on one uvicorn worker, probe it, load it, stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.reference_app:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    server = Server("reference", cmd, dict(os.environ), ROOT, logs / "ref.log")
    target = Target(f"http://127.0.0.1:{port}/predict", REFERENCE_BODY, JSON_HEADERS)
    try:
        server.start()
        server.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=60)
        answer = probe(target)
        return answer, measure_server(target, settings, generator, server.pgid, port)
    finally:
        server.stop()


def run_ours(
    instance: platform_setup.Instance,
    settings: LoadSettings,
    generator: str,
    expected: Answer,
    logs: Path,
) -> LoadResult:
    """Start our platform, check it agrees with the reference, load it, stop it."""
    with platform_setup.serving(instance, logs / f"ours-{instance.profile}.log") as running:
        target = running.predict_target(instance.api_key, OURS_BODY)
        compare(expected, probe(target))
        return measure_server(target, settings, generator, running.server.pgid, running.port)


def run_profile(
    profile: str, settings: LoadSettings, args: argparse.Namespace, logs: Path, runs: Runs
) -> None:
    """Benchmark the reference, then our platform, one after the other, `args.rounds` times."""
    with contextlib.ExitStack() as stack:
        instance = None
        if not args.reference_only:
            instance = stack.enter_context(platform_setup.instance(profile, args.redis_db))
        for _ in range(args.rounds):
            cpu.settle(args.quiet_wait)
            expected, ref = run_reference(settings, args.generator, logs)
            runs.setdefault("reference", []).append(ref)
            if instance is not None:
                cpu.settle(args.quiet_wait)
                ours = run_ours(instance, settings, args.generator, expected, logs)
                runs.setdefault("ours", []).append(ours)


def main(argv: list[str] | None = None) -> int:
    """Run the requested profiles; exit non-zero on any error or disagreement."""
    args = parse_args(argv)
    settings = LoadSettings(
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        threads=args.threads,
        keepalive=not args.no_keepalive,
    )
    profiles = ["embedded", "production"] if args.profile == "both" else [args.profile]
    logs = Path(tempfile.mkdtemp(prefix="predict-load-logs-"))
    results: dict[str, Runs] = {}
    failures: list[str] = []
    for profile in profiles:
        try:
            run_profile(profile, settings, args, logs, results.setdefault(profile, {}))
        except (platform_setup.SetupError, MismatchError, RuntimeError, OSError) as exc:
            failures.append(f"{profile}: {exc}")
    failures += [
        f"{profile}/{name} round {i}: {r.non200} non-200 answers, {r.socket_errors} socket errors"
        for profile, by_server in results.items()
        for name, rounds in by_server.items()
        for i, r in enumerate(rounds, 1)
        if r.errors
    ]
    print(report.as_json(settings, results) if args.json else report.as_table(settings, results))
    if failures:
        print("FAILED:\n" + "\n".join(failures), file=sys.stderr)
        print(f"server logs kept in {logs}", file=sys.stderr)
        return 1
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
