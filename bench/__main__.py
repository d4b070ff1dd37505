"""Benchmarks of the platform, each against a baseline measured in the same run, on a
throw-away instance. What each figure means: bench/README.md."""

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench.clients import stalled_streams, ws_load
from bench.harness import (
    FAILED,
    Instance,
    Server,
    Side,
    compare,
    free_port,
    instance,
    manage,
    platform,
    post,
    serve,
)

IRIS = [5.1, 3.5, 1.4, 0.2]
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


def rest(
    server: Server, inst: Instance, name: str, model="iris", row=IRIS, version="v1", marker=""
) -> Side:
    """A side loading REST /predict with one row."""
    body = json.dumps({"input_data": row, "model": model, "model_version": version})
    return post(server, "/api/v1/predict", body, name, inst.key, marker)


def run_job(
    server: Server, inst: Instance, fields: dict, file: tuple, timeout: float
) -> tuple[dict, float, float]:
    """Submit a batch job and wait for it to complete: its status, seconds, server CPU seconds."""
    session = requests.Session()
    session.headers["X-API-Key"] = inst.key
    cpu, t0 = server.cpu_s(), time.monotonic()
    url = f"{server.base}/api/v1/predict/batch"
    answer = session.post(url, data=fields, files={"file": file}, timeout=timeout)
    if answer.status_code != 202:
        sys.exit(f"batch submit answered {answer.status_code}: {answer.text[:300]}")
    status = server.base + answer.json()["links"]["self"]
    while (job := session.get(status, timeout=30).json())["status"] not in TERMINAL:
        if time.monotonic() - t0 > timeout:
            sys.exit(f"the job is not done after {timeout:g} s: {job}")
        time.sleep(0.05)
    if job["status"] != "completed":
        sys.exit(f"the job ended {job['status']}: {job.get('error')}")
    return job, time.monotonic() - t0, server.cpu_s() - cpu


def predict(inst, args) -> None:
    """REST /predict (iris, API key, stored) vs the tutorial's FastAPI design."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.reference_app:app", "--port", str(port)]
    cmd += ["--workers", "1", "--http", "h11", "--loop", "asyncio", "--no-access-log"]
    with serve(cmd, dict(os.environ), port, "reference") as ref, platform(inst) as ours:
        row = json.dumps({"input_data": IRIS, "model_version": "v1"})
        tutorial = post(ref, "/predict", row, "tutorial design")
        sides = [tutorial, rest(ours, inst, "platform /predict")]
        compare(f"POST /api/v1/predict, {inst.profile}", sides, args.connections or 32, args)


def faces(inst, args) -> None:
    """V2 one-row infer and the GraphQL predict mutation vs REST /predict."""
    v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]}
    query = 'mutation P($row: JSON!) { predict(inputData: $row, model: "iris", modelVersion: '
    query += '"v1") { predictionId label confidence } }'
    graphql = json.dumps({"query": query, "variables": {"row": IRIS}})
    with platform(inst) as ours:
        sides = [
            rest(ours, inst, "REST /predict"),
            post(ours, "/v2/models/iris/versions/v1/infer", json.dumps(v2), "V2 infer", inst.key),
            post(ours, "/graphql", graphql, "GraphQL predict", inst.key),
        ]
        compare(f"one row, three faces, {inst.profile}", sides, args.connections or 32, args)


def batching(inst, args) -> None:
    """A dense 1024-4096-4096-10 model, max_batch_size 64 vs 1; 64 clients, then 1."""
    manage(inst.env, "shell", "-c", DENSE)
    with platform(inst) as ours:
        for conns in (64, 1):
            sides = [
                rest(ours, inst, f"max_batch_size {size}", "dense", [0.5] * 1024, label)
                for label, size in (("unbatched", 1), ("batched", 64))
            ]
            compare(f"dense 1024-4096-4096-10, {inst.profile}", sides, conns, args)


def sqlite(inst, args) -> None:
    """SQLite synchronous=FULL vs NORMAL (embedded only)."""
    if inst.profile != "embedded":
        sys.exit("sqlite: the embedded profile only")
    with (
        platform(inst, "normal", SQLITE_SYNCHRONOUS="NORMAL") as normal,
        platform(inst, "full", SQLITE_SYNCHRONOUS="FULL") as full,
    ):
        sides = [rest(normal, inst, "synchronous=NORMAL"), rest(full, inst, "synchronous=FULL")]
        compare("SQLite synchronous", sides, args.connections or 32, args)


def ws(inst, args) -> None:
    """Rows over /api/v1/predict/ws vs REST /predict; 16 clients, then 1."""
    with platform(inst) as ours:
        url = ours.base.replace("http", "ws", 1) + "/api/v1/predict/ws"
        row = {"input_data": IRIS, "model": "iris", "model_version": "v1"}
        for conns in (16, 1):
            sockets = Side("WebSocket rows", ours, lambda c, s: ws_load(url, inst.key, row, c, s))
            sides = [rest(ours, inst, "REST /predict"), sockets]
            compare(f"WebSocket rows vs REST, {inst.profile}", sides, conns, args)


def streams(inst, args) -> None:
    """/predict while --streams prediction streams are left unread vs none open."""
    # One user holds them all, and for the whole run (as shipped, a stream unread for 30 s ends).
    limits = {"MLPLATFORM_MAX_OPEN_STREAMS_PER_USER": str(args.streams)}
    with platform(inst, MLPLATFORM_STREAM_SEND_TIMEOUT="3600", **limits) as ours:
        held = rest(ours, inst, f"{args.streams} stalled streams")
        held.around = lambda: stalled_streams(ours, inst, args.streams)
        sides = [rest(ours, inst, "no stream open"), held]
        title = f"/predict beside held streams, {inst.profile}"
        compare(title, sides, args.connections or 16, args)


def traffic(inst, args) -> None:
    """A response-cache hit vs a miss; /predict with a shadow version vs without."""
    manage(inst.env, "shell", "-c", TRAFFIC)
    conns = args.connections or 16
    with platform(inst) as ours:
        miss = rest(ours, inst, "cache miss (iris)", marker='"cached":false')
        hit = rest(ours, inst, "cache hit", "iris-cached", marker='"cached":true')
        compare(f"response cache, {inst.profile}", [miss, hit], conns, args)
        plain = rest(ours, inst, "no shadow (iris)")
        shadowed = rest(ours, inst, "shadow on every request", "iris-shadowed")
        compare(f"shadow version, {inst.profile}", [plain, shadowed], conns, args)


def instrumentation(inst, args) -> None:
    """/predict with metrics and logs vs MLPLATFORM_INSTRUMENTATION=0."""
    with (
        platform(inst, "off", MLPLATFORM_INSTRUMENTATION="0") as off,
        platform(inst, "on") as on,
    ):
        sides = [rest(off, inst, "instrumentation off"), rest(on, inst, "metrics and logs on")]
        compare(f"instrumentation, {inst.profile}", sides, args.connections or 16, args)


def batch(inst, args) -> None:
    """A batch job of --rows rows, then its CSV download, vs a per-row loop."""
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
        header = ",".join(iris.feature_names)
        np.savetxt(upload, x, fmt="%.2f", delimiter=",", header=header, comments="")
    data = upload.getvalue()
    demo = next(m for m in train_demo_models() if m.name == "iris")
    model = load_predictor("numpy", next(v for v in demo.versions if v.label == "v1").artifact)

    # The tutorial's loop: one predict call per row as it reads them, results as dicts.
    n = min(args.rows, args.loop_rows)
    start, results = time.perf_counter(), []
    if args.format == "npy":
        rows = x[:n].tolist()
    else:
        text_rows = data.decode().splitlines()[1 : n + 1]
        rows = ([float(c) for c in line.split(",")] for line in text_rows)
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
        fields = {"model": "iris", "model_version": "v1"}
        job, seconds, cpu = run_job(ours, inst, fields, (f"rows.{args.format}", data), args.timeout)
        peak = max(ours.worker_peaks_mb(), default=0.0)
        results_url = f"{ours.base}/api/v1/predict/batch/{job['job_id']}/results?format="
        auth, t1 = {"X-API-Key": inst.key}, time.monotonic()
        csv = requests.get(results_url + "csv", headers=auth, timeout=600)
        csv_s = time.monotonic() - t1
        npy = requests.get(results_url + "npy", headers=auth, timeout=600).content
    error = float(np.abs(np.load(io.BytesIO(npy)) - model.predict(x)).max())
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
    """/predict to a remote MLServer version and a local ONNX one vs MLServer's infer."""
    from tests.mlserver import MODEL_NAME, MODEL_VERSION, iris_models, start_mlserver

    iris, work = iris_models(), Path(tempfile.mkdtemp(prefix="bench-remote-"))
    upstream = start_mlserver(work, iris.pipeline, http_port=free_port(), grpc_port=free_port())
    try:
        (work / "iris.onnx").write_bytes(iris.onnx)
        local = [str(work / "iris.onnx"), "--label", "local", "--labels", ",".join(iris.labels)]
        manage(inst.env, "register_model", "iris-remote", *local, "--status", "active")
        target = ["--remote-url", upstream.url, "--remote-model", MODEL_NAME, "--label", "remote"]
        target += ["--remote-model-version", MODEL_VERSION, "--status", "active"]
        manage(inst.env, "register_model", "iris-remote", *target)
        row = iris.X[60].tolist()
        tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}
        v2 = json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})
        infer = f"/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
        mlserver = Server(upstream.process, upstream.url)
        with platform(inst, worker=True) as ours:
            sides = [
                post(mlserver, infer, v2, "MLServer infer, directly"),
                rest(ours, inst, "/predict, remote version", "iris-remote", row, "remote"),
                rest(ours, inst, "/predict, local ONNX", "iris-remote", row, "local"),
            ]
            compare(f"one client, a remote version, {inst.profile}", sides, 1, args)
            p50 = [statistics.median(r.p50 for r in side.rounds) for side in sides]
            print(f"  added by the platform to MLServer's p50: {p50[1] - p50[0]:+.2f} ms")

            rows = np.tile(iris.X, (args.rows // len(iris.X) + 1, 1))[: args.rows]
            upload = io.BytesIO()
            np.save(upload, rows)
            fields = {"model": "iris-remote", "model_version": "remote"}
            job, _, _ = run_job(ours, inst, fields, ("rows.npy", upload.getvalue()), args.timeout)
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


SCENARIOS = (predict, faces, batching, sqlite, ws, streams, traffic, instrumentation, batch, remote)

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
    scenarios = {f.__name__: f for f in SCENARIOS}
    listing = "\n".join(f"  {name:17}{f.__doc__}" for name, f in scenarios.items())
    p = argparse.ArgumentParser(
        "python -m bench",
        description=__doc__,
        epilog=f"scenarios:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", nargs="+", choices=scenarios)
    choices = {"--profile": ("embedded", "production", "both"), "--format": ("csv", "npy")}
    for flag, kind, default, text in KNOBS:
        text += "" if default is None else " (default: %(default)s)"
        p.add_argument(flag, type=kind, default=default, choices=choices.get(flag), help=text)
    args = p.parse_args()
    os.environ["WEB_CONCURRENCY"] = str(args.web_processes)  # read by manage.py serve
    for profile in ("embedded", "production") if args.profile == "both" else (args.profile,):
        with instance(profile, args.redis_db) as inst:
            for name in args.scenario:
                scenarios[name](inst, args)
    if FAILED:
        sys.exit(f"errors in: {', '.join(FAILED)}")


if __name__ == "__main__":
    main()
