"""The prediction pipeline's targets, each measured against a baseline in the same run.

Scenarios (``--scenario``, several allowed; all by default):

* ``rest``: ``POST /api/v1/predict`` on iris with an API key, against the tutorial's design
  (``reference_app.py``: FastAPI on one uvicorn worker as ``pip install fastapi uvicorn`` gives
  it, h11 and asyncio, an in-memory dict, no auth, no storage).
* ``faces``: V2 one-row ``infer`` and GraphQL ``predict`` against REST ``/predict``, on one
  server.
* ``batching``: a dense model (1024 -> 4096 -> 4096 -> 10) with ``max_batch_size`` 64 against
  the same version with batching off (``max_batch_size`` 1): 64 clients, and one client.
* ``ws``: rows over ``/api/v1/predict/ws`` (``ws_load.py``: each socket keeps 64 rows
  unanswered) against REST ``/predict`` with the same row, over 1 and over 16 clients.
* ``sqlite``: REST ``/predict`` on the embedded profile with SQLite's ``synchronous=FULL``
  (survives a power loss) against ``NORMAL`` (survives a crash of the process).

Every server of a scenario runs for the whole scenario and the loads alternate between them,
round after round (``--rounds``); the median round of each is shown. Load comes from wrk (the
WebSocket load from a Python client, ``ws_load.py``), closed loop (each connection sends its
next request when its answer came). The steady figure is the server's CPU per request (all its
processes, from /proc); throughput and p99 are shown too, and move with whatever else the host
is doing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu, platform_setup  # noqa: E402
from bench.loadtypes import LoadResult, LoadSettings, Target  # noqa: E402
from bench.servers import Server, free_port  # noqa: E402
from bench.wrk import ensure_wrk, run_wrk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IRIS = [5.1, 3.5, 1.4, 0.2]
JSON_HEADERS = {"Content-Type": "application/json"}
SCENARIOS = ("rest", "faces", "batching", "ws", "sqlite")
DENSE_SIZES = (1024, 4096, 4096, 10)

DENSE_SNIPPET = """
import io, numpy as np
from predictions.models import MLModel
from predictions.runtime.artifacts import dump_dense
from predictions.services import model_save, model_version_create
sizes = {sizes}
rng = np.random.default_rng(0)
pairs = list(zip(sizes, sizes[1:]))
weights = [rng.standard_normal(pair).astype(np.float32) / np.sqrt(pair[0]) for pair in pairs]
biases = [np.zeros(b, np.float32) for b in sizes[1:]]
artifact = dump_dense(weights, biases, ["relu"] * (len(weights) - 1) + ["softmax"])
model, _ = MLModel.objects.get_or_create(
    name="dense", defaults={{"feature_names": [f"f{{i}}" for i in range(sizes[0])],
    "labels": [f"c{{i}}" for i in range(sizes[-1])]}})
for label, size in (("batched", 64), ("unbatched", 1)):
    model_version_create(model=model, label=label, artifact=artifact, status="active",
                         max_batch_size=size)
"""


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: how to load it and which server's CPU to count."""

    name: str
    target: Target
    server: Server
    # A load other than wrk's: (settings, seconds) -> result.
    run: Callable[[LoadSettings, float], LoadResult] | None = None


@dataclass
class Measured:
    name: str
    rounds: list[LoadResult]

    @property
    def median(self) -> LoadResult:
        return sorted(self.rounds, key=lambda r: r.rps)[(len(self.rounds) - 1) // 2]

    def figure(self, what: Callable[[LoadResult], float]) -> float:
        return statistics.median(what(r) for r in self.rounds)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    p.add_argument("--profile", choices=("embedded", "production"), default="embedded")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per round")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quiet-wait", type=float, default=20.0, help="max wait for an idle host")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p.parse_args(argv)


def load(contender: Contender, settings: LoadSettings, wrk: str) -> LoadResult:
    """Warm up, then one measured wrk run, with the CPU of the contender's server counted."""
    run = contender.run or (lambda s, seconds: run_wrk(wrk, contender.target, s, seconds))
    if settings.warmup_s > 0:
        run(settings, settings.warmup_s)
    before = cpu.sample(contender.server.pgid)
    result = run(settings, settings.duration_s)
    after = cpu.sample(contender.server.pgid)
    return replace(
        result,
        server_cpu_s=after.group_s - before.group_s,
        generator_cpu_s=after.generator_s - before.generator_s,
        host_busy_s=after.host_busy_s - before.host_busy_s,
        services_cpu_s=after.services_since(before),
    )


def alternate(
    contenders: list[Contender], settings: LoadSettings, args: argparse.Namespace, wrk: str
) -> list[Measured]:
    """Load each contender in turn, ``args.rounds`` times over."""
    measured = [Measured(c.name, []) for c in contenders]
    for _ in range(args.rounds):
        for contender, result in zip(contenders, measured, strict=True):
            cpu.settle(args.quiet_wait)
            result.rounds.append(load(contender, settings, wrk))
    return measured


@contextlib.contextmanager
def platform_server(
    instance: platform_setup.Instance, logs: Path, name: str, **env: str
) -> Iterator[tuple[Server, str]]:
    """``manage.py serve --no-worker`` on the instance; yields it and its base URL."""
    port = free_port()
    command = [*platform_setup.serve_command(port), "--no-worker"]
    server = Server(name, command, {**instance.env, **env}, ROOT, logs / f"{name}.log")
    try:
        server.start()
        server.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=120)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def reference_server(logs: Path) -> Iterator[tuple[Server, str]]:
    """The tutorial's design on one uvicorn worker, h11 and asyncio (not httptools, uvloop)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.reference_app:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--http", "h11", "--loop", "asyncio"]
    command += ["--no-access-log", "--log-level", "warning"]
    server = Server("reference", command, dict(os.environ), ROOT, logs / "reference.log")
    try:
        server.start()
        server.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=60)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def key_headers(instance: platform_setup.Instance) -> dict[str, str]:
    return {**JSON_HEADERS, "X-API-Key": instance.api_key}


def rate_limited_key(instance: platform_setup.Instance) -> platform_setup.Instance:
    """The instance with rate limiting on, as the platform runs, and a key (and user ceiling)
    whose limits no run reaches: every request is still counted, on both counters."""
    env = {
        **instance.env,
        "RATELIMIT_ENABLE": "1",
        "MLPLATFORM_USER_RATE_LIMITS": "predict=1000000000/m",
    }
    raw = platform_setup.manage(
        env,
        "createapikey",
        "demo",
        "--scopes",
        "predict",
        "--name",
        "bench-limited",
        "--rate",
        "predict=1000000000/m",
    ).strip()
    return replace(instance, env=env, api_key=raw)


def rest_target(base: str, instance: platform_setup.Instance, model="iris", row=IRIS) -> Target:
    body = json.dumps({"input_data": row, "model": model, "model_version": "v1"})
    return Target(f"{base}/api/v1/predict", body, key_headers(instance))


def scenario_rest(instance, settings, args, wrk, logs) -> dict[str, list[Measured]]:
    with (
        reference_server(logs) as (reference, ref_base),
        platform_server(instance, logs, "platform") as (ours, base),
    ):
        body = json.dumps({"input_data": IRIS, "model_version": "v1"})
        contenders = [
            Contender(
                "tutorial design", Target(f"{ref_base}/predict", body, JSON_HEADERS), reference
            ),
            Contender("platform /predict", rest_target(base, instance), ours),
        ]
        return {f"rest ({instance.profile})": alternate(contenders, settings, args, wrk)}


def scenario_faces(instance, settings, args, wrk, logs) -> dict[str, list[Measured]]:
    query = 'mutation P($row: JSON!) { predict(inputData: $row, model: "iris", modelVersion: "v1") '
    query += "{ predictionId label confidence } }"
    graphql = json.dumps({"query": query, "variables": {"row": IRIS}})
    v2 = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]}
    )
    with platform_server(instance, logs, "platform") as (ours, base):
        headers = key_headers(instance)
        contenders = [
            Contender("REST /predict", rest_target(base, instance), ours),
            Contender(
                "V2 infer", Target(f"{base}/v2/models/iris/versions/v1/infer", v2, headers), ours
            ),
            Contender("GraphQL predict", Target(f"{base}/graphql", graphql, headers), ours),
        ]
        return {"faces": alternate(contenders, settings, args, wrk)}


def scenario_batching(instance, settings, args, wrk, logs) -> dict[str, list[Measured]]:
    platform_setup.shell(instance.env, DENSE_SNIPPET.format(sizes=list(DENSE_SIZES)))
    row = [0.5] * DENSE_SIZES[0]
    results = {}
    with platform_server(instance, logs, "platform") as (ours, base):
        for clients in (64, 1):
            contenders = [
                Contender(
                    f"max_batch_size {size}",
                    Target(
                        f"{base}/api/v1/predict",
                        json.dumps({"input_data": row, "model": "dense", "model_version": label}),
                        key_headers(instance),
                    ),
                    ours,
                )
                for label, size in (("unbatched", 1), ("batched", 64))
            ]
            title = f"batching, {clients} client{'s' if clients > 1 else ''}"
            results[title] = alternate(
                contenders, replace(settings, connections=clients), args, wrk
            )
    return results


def scenario_ws(instance, settings, args, wrk, logs) -> dict[str, list[Measured]]:
    from bench.ws_load import run_ws

    results = {}
    with platform_server(instance, logs, "platform") as (ours, base):
        url = base.replace("http://", "ws://") + "/api/v1/predict/ws"

        def sockets(load: LoadSettings, seconds: float) -> LoadResult:
            return run_ws(url, instance.api_key, IRIS, load, seconds)

        for clients in (1, 16):
            contenders = [
                Contender("REST /predict", rest_target(base, instance), ours),
                Contender("WebSocket rows", rest_target(base, instance), ours, run=sockets),
            ]
            title = f"ws ({instance.profile}), {clients} client{'s' if clients > 1 else ''}"
            results[title] = alternate(
                contenders, replace(settings, connections=clients), args, wrk
            )
    return results


def scenario_sqlite(instance, settings, args, wrk, logs) -> dict[str, list[Measured]]:
    if instance.profile != "embedded":
        return {}
    with (
        platform_server(instance, logs, "normal", SQLITE_SYNCHRONOUS="NORMAL") as (
            normal,
            normal_base,
        ),
        platform_server(instance, logs, "full", SQLITE_SYNCHRONOUS="FULL") as (full, full_base),
    ):
        contenders = [
            Contender("synchronous=NORMAL", rest_target(normal_base, instance), normal),
            Contender("synchronous=FULL", rest_target(full_base, instance), full),
        ]
        return {"sqlite": alternate(contenders, settings, args, wrk)}


RUNNERS = {
    "rest": scenario_rest,
    "faces": scenario_faces,
    "batching": scenario_batching,
    "ws": scenario_ws,
    "sqlite": scenario_sqlite,
}


def table(scenario: str, measured: list[Measured]) -> str:
    lines = [
        f"{scenario}:",
        f"  {'':28s} {'req/s':>9s} {'cpu ms/req':>11s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'errors':>7s}   vs {measured[0].name}"
        if measured
        else "",
    ]
    base = measured[0] if measured else None
    for m in measured:
        rps = m.figure(lambda r: r.rps)
        cpu_ms = m.figure(lambda r: r.server_cpu_ms_per_request)
        p50, p99 = m.figure(lambda r: r.p50_ms), m.figure(lambda r: r.p99_ms)
        errors = sum(r.errors for r in m.rounds)
        ratio = ""
        if base is not None and m is not base:
            b_rps = base.figure(lambda r: r.rps)
            b_cpu = base.figure(lambda r: r.server_cpu_ms_per_request)
            b_p99 = base.figure(lambda r: r.p99_ms)
            ratio = (
                f"   {rps / b_rps:.2f}x req/s, {cpu_ms / b_cpu:.2f}x cpu, {p99 / b_p99:.2f}x p99"
            )
        lines.append(
            f"  {m.name:28s} {rps:9.1f} {cpu_ms:11.3f} {p50:8.2f} {p99:8.2f} {errors:7d}{ratio}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    if wrk is None:
        print("wrk is not installed and could not be installed", file=sys.stderr)
        return 1
    settings = LoadSettings(
        connections=args.connections, duration_s=args.duration, warmup_s=args.warmup
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    out: dict[str, list[Measured]] = {}
    with platform_setup.instance(args.profile) as plain:
        instance = rate_limited_key(plain)
        for scenario in args.scenario or SCENARIOS:
            for title, measured in RUNNERS[scenario](instance, settings, args, wrk, logs).items():
                out[title] = measured
                if not args.json:
                    print(table(title, measured), flush=True)
    if args.json:
        print(
            json.dumps(
                {s: {m.name: [r.as_dict() for r in m.rounds] for m in ms} for s, ms in out.items()},
                indent=2,
            )
        )
    failed = [m.name for ms in out.values() for m in ms if any(r.errors for r in m.rounds)]
    if failed:
        print(f"errors in: {', '.join(failed)}; server logs in {logs}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
