"""A remote version's overhead: the platform in front of MLServer against MLServer alone.

MLServer (``tests/mlserver.py``: its own virtualenv, a scikit-learn iris pipeline) is registered
as the remote version of a model. One client sends the same row, one request at a time over a
kept-alive connection, in alternated rounds: ``POST /api/v1/predict`` to that version (routed,
batched, stored) and ``POST /v2/models/iris-sk/versions/v1/infer`` to MLServer itself, and
``/api/v1/predict`` to the same pipeline as a local ONNX version (the platform's own cost, for
scale). Printed: each median latency (the median round), the difference (target: at most 1.5
ms), and a batch job's rows/s through the remote against the same chunks sent to MLServer.

    .venv/bin/python bench/remote.py [--rounds 7] [--requests 300] [--rows 200000]
                                     [--profile embedded|production]
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.platform_setup import instance, manage, serving  # noqa: E402
from bench.servers import free_port  # noqa: E402
from tests.mlserver import MODEL_NAME, MODEL_VERSION, iris_models, start_mlserver  # noqa: E402

MODEL = "iris-remote"


def timed(session: requests.Session, url: str, body: bytes, headers: dict, n: int) -> float:
    """The median milliseconds of ``n`` sequential POSTs (every answer must be a 200)."""
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        response = session.post(url, data=body, headers=headers, timeout=30)
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
    return statistics.median(seconds) * 1000


def v2_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows}
    document = {"inputs": [tensor], "outputs": [{"name": "predict_proba"}]}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def batch_rows_per_second(base: str, auth: dict, rows: np.ndarray) -> float:
    """Rows/s of a batch job through the remote version, over its processing time."""
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    submitted = requests.post(
        f"{base}/api/v1/predict/batch",
        files={"file": ("rows.npy", buffer.getvalue(), "application/octet-stream")},
        data={"model": MODEL, "model_version": "remote"},
        headers=auth,
        timeout=120,
    )
    submitted.raise_for_status()
    job_url = f"{base}/api/v1/predict/batch/{submitted.json()['job_id']}"
    while (job := requests.get(job_url, headers=auth, timeout=10).json())["status"] in (
        "queued",
        "processing",
    ):
        time.sleep(0.1)
    if job["status"] != "completed":
        raise SystemExit(f"the batch job ended {job['status']}: {job.get('error')}")
    return len(rows) / job["processing_seconds"]


def direct_rows_per_second(url: str, rows: np.ndarray, chunk: int) -> float:
    """Rows/s of the same rows sent to MLServer itself, as JSON tensors of ``chunk`` rows."""
    started = time.perf_counter()
    with requests.Session() as session:
        for start in range(0, len(rows), chunk):
            session.post(url, data=v2_body(rows[start : start + chunk]), timeout=120)
    return len(rows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--profile", choices=["embedded", "production"], default="embedded")
    args = parser.parse_args()
    iris = iris_models()
    work = Path(tempfile.mkdtemp(prefix="mlplatform-bench-remote-"))
    upstream = start_mlserver(work, iris.pipeline, http_port=free_port(), grpc_port=free_port())
    try:
        with instance(args.profile) as inst, serving(inst, work / "platform.log") as platform:
            created = manage(inst.env, "createapikey", "admin", "--scopes", "predict,batch,models")
            base, auth = platform.base_url, {"X-API-Key": created.strip().splitlines()[-1]}
            model = {"name": MODEL, "task": "classification", "feature_names": list("abcd")}
            model["labels"] = list(iris.labels)
            remote = {"remote_url": upstream.url, "remote_model": MODEL_NAME, "label": "remote"}
            remote |= {"remote_model_version": MODEL_VERSION, "status": "active"}
            for path, document in (("", model), (f"/{MODEL}/versions", remote)):
                url = f"{base}/api/v1/models{path}"
                requests.post(url, json=document, headers=auth, timeout=30).raise_for_status()
            requests.post(  # the same pipeline in ONNX, as a local version
                f"{base}/api/v1/models/{MODEL}/versions",
                files={"artifact": ("iris.onnx", iris.onnx)},
                data={"label": "local", "status": "active"},
                headers=auth,
                timeout=30,
            ).raise_for_status()

            row = iris.X[60:61]
            via = (f"{base}/api/v1/predict", {"Content-Type": "application/json", **auth})
            bodies = {
                v: orjson.dumps({"input_data": row[0].tolist(), "model": MODEL, "model_version": v})
                for v in ("remote", "local")
            }
            direct = (f"{upstream.url}/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer",)
            direct += ({"Content-Type": "application/json"},)
            medians: dict[str, list[float]] = {"remote": [], "local": [], "direct": []}
            with requests.Session() as one, requests.Session() as other:
                for _ in range(args.rounds + 1):  # the first round warms up, uncounted
                    for version, body in bodies.items():
                        medians[version].append(timed(one, via[0], body, via[1], args.requests))
                    medians["direct"].append(
                        timed(other, direct[0], v2_body(row), direct[1], args.requests)
                    )
            remote_ms, local_ms, alone = (statistics.median(m[1:]) for m in medians.values())
            print(f"one row at a time, {args.profile}, median of {args.rounds} alternated rounds:")
            print(f"  POST /api/v1/predict, remote version: {remote_ms:.2f} ms")
            print(f"  MLServer's infer directly:            {alone:.2f} ms")
            print(f"  added by the platform: {remote_ms - alone:+.2f} ms (target: at most 1.5)")
            print(f"  the local ONNX version of the pipeline, for scale: {local_ms:.2f} ms")

            rows = np.tile(iris.X, (args.rows // len(iris.X) + 1, 1))[: args.rows]
            job = batch_rows_per_second(base, auth, rows)
            own = direct_rows_per_second(direct[0], rows, chunk=100_000)
            print(f"batch job of {len(rows):,} rows through the remote: {job:,.0f} rows/s")
            print(f"  MLServer directly, 100,000-row JSON tensors: {own:,.0f} rows/s")
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
