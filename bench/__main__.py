"""Benchmarks of the platform, each against a baseline measured in the same run.

  predict          POST /api/v1/predict (iris, API key, stored) vs the tutorial's design
                   (reference_app.py: FastAPI on one uvicorn worker, h11, asyncio)
  faces            V2 one-row infer and the GraphQL predict mutation vs REST /predict
  batching         a dense 1024-4096-4096-10 model, max_batch_size 64 vs 1; 64 clients, then 1
  sqlite           SQLite synchronous=FULL vs NORMAL (embedded only)
  ws               rows over /api/v1/predict/ws vs REST /predict; 16 clients, then 1
  streams          /predict while --streams prediction streams are left unread vs none open
  traffic          a response-cache hit vs a miss; /predict with a shadow version vs without
  instrumentation  /predict with metrics and logs vs MLPLATFORM_INSTRUMENTATION=0
  batch            a batch job (--rows, --format) from upload to completed, and its CSV
                   download, vs the tutorial's per-row loop over the same rows
  remote           one client: /predict to a remote version (a real MLServer, tests/mlserver.py)
                   and to the same pipeline as a local ONNX version vs MLServer's own infer;
                   a batch job's rows/s through the remote vs its rows sent to MLServer directly

Every comparison loads its sides in turn, --rounds times, and prints the median of each
figure: req/s, server CPU per request (all the server's processes, from /proc), p50, p99,
errors. Load comes from wrk (wrk_post.lua), closed loop; WebSocket and stream clients from
clients.py. Each run sets up a throw-away instance (harness.instance).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import requests

from bench.clients import stalled_streams, ws_load
from bench.harness import (
    FAILED,
    Server,
    Side,
    compare,
    free_port,
    instance,
    manage,
    platform,
    post,
    serve,
    wrk,
)

IRIS = [5.1, 3.5, 1.4, 0.2]
PREDICT = "/api/v1/predict"
TERMINAL = ("completed", "failed", "cancelled")
DENSE = """
import numpy as np
from predictions.models import MLModel
from predictions.runtime.artifacts import dump_dense
from predictions.catalogue.versions import model_save, model_version_create
sizes = (1024, 4096, 4096, 10)
rng = np.random.default_rng(0)
w = [(rng.standard_normal(p) / np.sqrt(p[0])).astype(np.float32) for p in zip(sizes, sizes[1:])]
b = [np.zeros(n, np.float32) for n in sizes[1:]]
art = dump_dense(w, b, ["relu"] * (len(w) - 1) + ["softmax"])
m = model_save(model=MLModel(name="dense", feature_names=[f"f{i}" for i in range(sizes[0])],
                             labels=[f"c{i}" for i in range(sizes[-1])]))
for label, size in (("unbatched", 1), ("batched", 64)):
    model_version_create(model=m, label=label, artifact=art, status="active", max_batch_size=size)
"""
TRAFFIC = """
from predictions.catalogue.artifacts import artifact_bytes
from predictions.models import MLModel
from predictions.catalogue.versions import model_save, model_version_create, model_version_save
iris = MLModel.objects.get(name="iris")
art = {v.label: artifact_bytes(v) for v in iris.versions.all()}
for name, ttl in (("iris-cached", 600), ("iris-shadowed", 0)):
    m = model_save(model=MLModel(name=name, task=iris.task, feature_names=iris.feature_names,
                                 labels=iris.labels, cache_ttl=ttl))
    m.default_version = model_version_create(model=m, label="v1", artifact=art["v1"],
                                             status="active")
    model_save(model=m)
shadow = model_version_create(model=m, label="v2", artifact=art["v2"], status="active")
shadow.is_shadow, shadow.shadow_share = True, 1.0
model_version_save(version=shadow)
"""


def body(model: str = "iris", row: list = IRIS, version: str = "v1") -> str:
    return json.dumps({"input_data": row, "model": model, "model_version": version})


def predict(inst, args) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.reference_app:app", "--port", str(port)]
    cmd += ["--workers", "1", "--http", "h11", "--loop", "asyncio", "--no-access-log"]
    with serve(cmd, dict(os.environ), port, "reference") as ref, platform(inst) as ours:
        row = json.dumps({"input_data": IRIS, "model_version": "v1"})
        headers = {"Content-Type": "application/json"}
        tutorial = Side(
            "tutorial design", ref, lambda c, s: wrk(ref.base + "/predict", row, headers, c, s)
        )
        sides = [tutorial, post(ours, PREDICT, body(), inst, "platform /predict")]
        compare(f"POST /api/v1/predict, {inst.profile}", sides, args.connections or 32, args)


def faces(inst, args) -> None:
    v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]}
    query = 'mutation P($row: JSON!) { predict(inputData: $row, model: "iris", modelVersion: '
    query += '"v1") { predictionId label confidence } }'
    graphql = json.dumps({"query": query, "variables": {"row": IRIS}})
    with platform(inst) as ours:
        sides = [
            post(ours, PREDICT, body(), inst, "REST /predict"),
            post(ours, "/v2/models/iris/versions/v1/infer", json.dumps(v2), inst, "V2 infer"),
            post(ours, "/graphql", graphql, inst, "GraphQL predict"),
        ]
        compare(f"one row, three faces, {inst.profile}", sides, args.connections or 32, args)


def batching(inst, args) -> None:
    manage(inst.env, "shell", "-c", DENSE)
    row = [0.5] * 1024
    with platform(inst) as ours:
        for conns in (64, 1):
            sides = [
                post(ours, PREDICT, body("dense", row, label), inst, f"max_batch_size {size}")
                for label, size in (("unbatched", 1), ("batched", 64))
            ]
            compare(f"dense 1024-4096-4096-10, {inst.profile}", sides, conns, args)


def sqlite(inst, args) -> None:
    if inst.profile != "embedded":
        sys.exit("sqlite: the embedded profile only")
    with (
        platform(inst, "normal", SQLITE_SYNCHRONOUS="NORMAL") as normal,
        platform(inst, "full", SQLITE_SYNCHRONOUS="FULL") as full,
    ):
        sides = [
            post(s, PREDICT, body(), inst, f"synchronous={name}")
            for s, name in ((normal, "NORMAL"), (full, "FULL"))
        ]
        compare("SQLite synchronous", sides, args.connections or 32, args)


def ws(inst, args) -> None:
    with platform(inst) as ours:
        url = ours.base.replace("http", "ws", 1) + "/api/v1/predict/ws"
        row = json.loads(body())
        for conns in (16, 1):
            sockets = Side("WebSocket rows", ours, lambda c, s: ws_load(url, inst.key, row, c, s))
            sides = [post(ours, PREDICT, body(), inst, "REST /predict"), sockets]
            compare(f"WebSocket rows vs REST, {inst.profile}", sides, conns, args)


def streams(inst, args) -> None:
    # One user holds them all, and for the whole run (as shipped, a stream unread for 30 s ends).
    limits = {"MLPLATFORM_MAX_OPEN_STREAMS_PER_USER": str(args.streams)}
    with platform(inst, MLPLATFORM_STREAM_SEND_TIMEOUT="3600", **limits) as ours:
        held = post(ours, PREDICT, body(), inst, f"{args.streams} stalled streams")
        held.around = lambda: stalled_streams(ours, inst, args.streams)
        sides = [post(ours, PREDICT, body(), inst, "no stream open"), held]
        compare(
            f"/predict beside held streams, {inst.profile}", sides, args.connections or 16, args
        )


def traffic(inst, args) -> None:
    manage(inst.env, "shell", "-c", TRAFFIC)
    conns = args.connections or 16
    with platform(inst) as ours:
        miss = post(ours, PREDICT, body(), inst, "cache miss (iris)", '"cached":false')
        hit = post(ours, PREDICT, body("iris-cached"), inst, "cache hit", '"cached":true')
        compare(f"response cache, {inst.profile}", [miss, hit], conns, args)
        plain = post(ours, PREDICT, body(), inst, "no shadow (iris)")
        shadowed = post(ours, PREDICT, body("iris-shadowed"), inst, "shadow on every request")
        compare(f"shadow version, {inst.profile}", [plain, shadowed], conns, args)


def instrumentation(inst, args) -> None:
    with (
        platform(inst, "off", MLPLATFORM_INSTRUMENTATION="0") as off,
        platform(inst, "on") as on,
    ):
        sides = [
            post(off, PREDICT, body(), inst, "instrumentation off"),
            post(on, PREDICT, body(), inst, "metrics and logs on"),
        ]
        compare(f"instrumentation, {inst.profile}", sides, args.connections or 16, args)


def batch(inst, args) -> None:
    from predictions.demo.datasets import load_dataset
    from predictions.demo.training import train_demo_models
    from predictions.runtime.outputs import describe
    from predictions.runtime.predictors import load_predictor

    iris, rng = load_dataset("iris"), np.random.default_rng(0)
    x = iris.X[rng.integers(0, len(iris.X), args.rows)]
    x = np.round(np.clip(x + rng.normal(0, 0.05, x.shape), 0.01, None), 2).astype(np.float32)
    upload = io.BytesIO()
    if args.format == "npy":
        np.save(upload, x)
    else:
        np.savetxt(
            upload, x, fmt="%.2f", delimiter=",", header=",".join(iris.feature_names), comments=""
        )
    data = upload.getvalue()
    demo = next(m for m in train_demo_models() if m.name == "iris")
    model = load_predictor("numpy", next(v for v in demo.versions if v.label == "v1").artifact)

    # The tutorial's loop: one predict call per row as it reads them, results as dicts.
    n = min(args.rows, args.loop_rows)
    start, results = time.perf_counter(), []
    rows = (
        x[:n].tolist()
        if args.format == "npy"
        else ([float(c) for c in line.split(",")] for line in data.decode().splitlines()[1 : n + 1])
    )
    for i, features in enumerate(rows):
        x1 = np.array([features], np.float32)
        out = describe(model.predict(x1), task="classification", labels=demo.labels)[0]
        results.append(
            {
                "input_index": i,
                "prediction": out.prediction,
                "label": out.label,
                "confidence": out.confidence,
            }
        )
    loop_rps = n / (time.perf_counter() - start)

    with platform(inst, worker=True) as ours:
        session = requests.Session()
        session.headers["X-API-Key"] = inst.key
        cpu, t0 = ours.cpu_s(), time.monotonic()
        answer = session.post(
            f"{ours.base}/api/v1/predict/batch",
            timeout=args.timeout,
            data={"model": "iris", "model_version": "v1"},
            files={"file": (f"rows.{args.format}", data)},
        )
        if answer.status_code != 202:
            sys.exit(f"batch submit answered {answer.status_code}: {answer.text[:300]}")
        status = ours.base + answer.json()["links"]["self"]
        while (job := session.get(status, timeout=30).json())["status"] not in TERMINAL:
            if time.monotonic() - t0 > args.timeout:
                sys.exit(f"the job is not done after {args.timeout:g} s: {job}")
            time.sleep(0.05)
        seconds, cpu = time.monotonic() - t0, ours.cpu_s() - cpu
        if job["status"] != "completed":
            sys.exit(f"the job ended {job['status']}: {job.get('error')}")
        peak = max(worker_peaks_mb(ours.pgid), default=0.0)
        results_url = f"{ours.base}/api/v1/predict/batch/{job['job_id']}/results"
        t1 = time.monotonic()
        csv = session.get(results_url + "?format=csv", timeout=600)
        csv_s = time.monotonic() - t1
        npy = np.load(io.BytesIO(session.get(results_url + "?format=npy", timeout=600).content))
    error = float(np.abs(npy - model.predict(x)).max())
    lines, rate = csv.content.count(b"\n"), args.rows / seconds
    print(
        f"\nbatch job of {args.rows:,} iris rows as {args.format.upper()} ({len(data) / 1e6:.0f}"
        f" MB), {inst.profile}, Q_WORKERS={os.environ.get('Q_WORKERS', 'default')}\n"
        f"  upload to completed    {seconds:8.2f} s {rate:12,.0f} rows/s  {rate / loop_rps:.1f}x "
        f"the loop; server CPU {cpu:.1f} s; worker peak {peak:.0f} MB per process\n"
        f"  CSV download           {csv_s:8.2f} s {args.rows / csv_s:12,.0f} rows/s\n"
        f"  tutorial per-row loop  {n / loop_rps:8.2f} s {loop_rps:12,.0f} rows/s ({n:,} rows)\n"
        f"  results vs the runtime: max difference {error:.1g}",
        flush=True,
    )
    if error > 1e-5 or lines != args.rows + 1:
        sys.exit("the job's results differ from the runtime's")


def remote(inst, args) -> None:
    import statistics
    import tempfile

    from tests.mlserver import MODEL_NAME, MODEL_VERSION, iris_models, start_mlserver

    iris, work = iris_models(), Path(tempfile.mkdtemp(prefix="bench-remote-"))
    upstream = start_mlserver(work, iris.pipeline, http_port=free_port(), grpc_port=free_port())
    try:
        (work / "iris.onnx").write_bytes(iris.onnx)
        labels = ["--labels", ",".join(iris.labels), "--status", "active"]
        manage(
            inst.env,
            "register_model",
            "iris-remote",
            str(work / "iris.onnx"),
            "--label",
            "local",
            *labels,
        )
        target = ["--remote-url", upstream.url, "--remote-model", MODEL_NAME]
        target += [
            "--remote-model-version",
            MODEL_VERSION,
            "--label",
            "remote",
            "--status",
            "active",
        ]
        manage(inst.env, "register_model", "iris-remote", *target)
        row = iris.X[60].tolist()
        tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}
        v2 = json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})
        infer = f"/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
        with platform(inst, worker=True) as ours:
            direct = post(
                Server(upstream.process, upstream.url, upstream.log),
                infer,
                v2,
                inst,
                "MLServer infer, directly",
            )
            sides = [
                direct,
                post(
                    ours,
                    PREDICT,
                    body("iris-remote", row, "remote"),
                    inst,
                    "/predict, remote version",
                ),
                post(
                    ours, PREDICT, body("iris-remote", row, "local"), inst, "/predict, local ONNX"
                ),
            ]
            compare(f"one client, a remote version, {inst.profile}", sides, 1, args)
            p50 = [statistics.median(r.p50 for r in side.rounds) for side in sides]
            print(f"  added by the platform to MLServer's p50: {p50[1] - p50[0]:+.2f} ms")

            rows = np.tile(iris.X, (args.rows // len(iris.X) + 1, 1))[: args.rows]
            upload = io.BytesIO()
            np.save(upload, rows)
            session = requests.Session()
            session.headers["X-API-Key"] = inst.key
            answer = session.post(
                f"{ours.base}/api/v1/predict/batch",
                data={"model": "iris-remote", "model_version": "remote"},
                files={"file": ("rows.npy", upload.getvalue())},
                timeout=args.timeout,
            )
            status = ours.base + answer.json()["links"]["self"]
            while (job := session.get(status, timeout=30).json())["status"] not in TERMINAL:
                time.sleep(0.05)
            if job["status"] != "completed":
                sys.exit(f"the job through the remote ended {job['status']}: {job.get('error')}")
            started, chunk = time.perf_counter(), 100_000
            for at in range(0, len(rows), chunk):
                part = rows[at : at + chunk]
                tensor = {"name": "input", "shape": list(part.shape), "datatype": "FP32"}
                document = {"inputs": [{**tensor, "data": part.ravel().tolist()}]}
                requests.post(upstream.url + infer, json=document, timeout=600).raise_for_status()
            alone = len(rows) / (time.perf_counter() - started)
            print(
                f"  batch job of {len(rows):,} rows through the remote: "
                f"{len(rows) / job['processing_seconds']:,.0f} rows/s (processing); "
                f"the rows sent to MLServer directly as {chunk:,}-row JSON tensors: "
                f"{alone:,.0f} rows/s",
                flush=True,
            )
    finally:
        upstream.stop()


def worker_peaks_mb(pgid: int) -> list[float]:
    """VmHWM of each background-worker (qcluster) process of the server's group."""
    peaks = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (
                os.getpgid(int(proc.name)) == pgid
                and b"qcluster" in (proc / "cmdline").read_bytes()
            ):
                peaks.append(
                    int((proc / "status").read_text().split("VmHWM:")[1].split()[0]) / 1024
                )
    return peaks


SCENARIOS = {
    f.__name__: f
    for f in (
        predict,
        faces,
        batching,
        sqlite,
        ws,
        streams,
        traffic,
        instrumentation,
        batch,
        remote,
    )
}


KNOBS = (  # flag, type, default, help
    ("--profile", str, "embedded", "production: a fresh PostgreSQL database and Redis db"),
    ("--rounds", int, 3, "rounds of each side"),
    ("--duration", float, 8.0, "measured seconds of a round"),
    ("--warmup", float, 2.0, "unmeasured seconds of load before each round"),
    ("--connections", int, None, "default 32; streams, traffic, instrumentation 16"),
    ("--web-processes", int, int(os.environ.get("WEB_CONCURRENCY", 1)), "of the platform"),
    ("--streams", int, 100, "streams: prediction streams held unread"),
    ("--rows", int, 1_000_000, "batch: rows of the job"),
    ("--format", str, "csv", "batch: the uploaded file"),
    ("--loop-rows", int, 1_000_000, "batch: rows of the per-row loop"),
    ("--timeout", float, 600.0, "batch: most seconds the job may take"),
    ("--redis-db", int, 5, "production: the Redis db (flushed before and after)"),
)


def main() -> None:
    p = argparse.ArgumentParser(
        "python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenario", nargs="+", choices=SCENARIOS)
    choices = {"--profile": ("embedded", "production", "both"), "--format": ("csv", "npy")}
    for flag, kind, default, text in KNOBS:
        text += "" if default is None else " (default: %(default)s)"
        p.add_argument(flag, type=kind, default=default, choices=choices.get(flag), help=text)
    args = p.parse_args()
    os.environ["WEB_CONCURRENCY"] = str(args.web_processes)  # read by manage.py serve
    for profile in ("embedded", "production") if args.profile == "both" else (args.profile,):
        with instance(profile, args.redis_db) as inst:
            for name in args.scenario:
                SCENARIOS[name](inst, args)
    if FAILED:
        sys.exit(f"errors in: {', '.join(FAILED)}")


if __name__ == "__main__":
    main()
