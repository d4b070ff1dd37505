"""A real MLServer (Seldon's V2 inference server) serving a scikit-learn iris model on loopback.

MLServer pins versions of FastAPI, Starlette and OpenTelemetry that the project's own packages
do not accept, so it lives in a virtualenv of its own, built once under ``var/`` from
``tests/mlserver-requirements.txt`` with the scikit-learn version of the project's environment
(MLServer loads the model with joblib, which needs the version that saved it). The model is
saved with joblib: that is MLServer's side; the platform never unpickles anything. The same
model converted with skl2onnx is the platform's local version to compare with.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import requests
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).with_name("mlserver-requirements.txt")
MODEL_NAME = "iris-sk"
MODEL_VERSION = "v1"
START_TIMEOUT = 120.0
BUILD_TIMEOUT = 900.0


def _venv_dir() -> Path:
    sklearn = metadata.version("scikit-learn")
    spec = REQUIREMENTS.read_bytes() + sklearn.encode()
    return ROOT / "var" / f"mlserver-{hashlib.sha256(spec).hexdigest()[:12]}"


def mlserver_command() -> Path:
    """The ``mlserver`` program of the environment, built the first time (a few minutes)."""
    venv = _venv_dir()
    program = venv / "bin" / "mlserver"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "mlserver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, whoever asks
        if (venv / "ready").exists():
            return program
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
                f"scikit-learn=={metadata.version('scikit-learn')}",
            ],
            check=True,
            timeout=BUILD_TIMEOUT,
        )
        (venv / "ready").write_text("ok\n")
    return program


@dataclass(frozen=True)
class IrisModels:
    """The same scikit-learn pipeline twice: MLServer's joblib file and an ONNX graph."""

    pipeline: object = field(repr=False)
    onnx: bytes = field(repr=False)
    X: np.ndarray = field(repr=False)
    labels: tuple[str, ...] = ()


def iris_models() -> IrisModels:
    from predictions.demo.datasets import load_dataset

    iris = load_dataset("iris")
    X = iris.X.astype(np.float32)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, iris.y)
    graph = to_onnx(pipeline, X[:1], options={id(pipeline.steps[-1][1]): {"zipmap": False}})
    return IrisModels(pipeline, graph.SerializeToString(), X, iris.labels)


@dataclass
class MLServer:
    """A running ``mlserver start`` in a process group of its own."""

    process: subprocess.Popen
    url: str
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def pause(self) -> None:
        """Stop the server's processes (SIGSTOP): connections open, nothing answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)


def start_mlserver(workdir: Path, pipeline, *, http_port: int, grpc_port: int) -> MLServer:
    """Save ``pipeline`` with joblib as MLServer's model ``iris-sk`` and serve it on loopback."""
    program = mlserver_command()
    model_dir = workdir / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    (model_dir / "model.joblib").write_bytes(buffer.getvalue())
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": MODEL_VERSION},
            }
        )
    )
    (workdir / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_endpoint": None,
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    log = workdir / "mlserver.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO"))}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(program), "start", str(workdir)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MLServer(process, f"http://127.0.0.1:{http_port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    ready = f"{server.url}/v2/models/{MODEL_NAME}/ready"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlserver exited with {process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(ready, timeout=2).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"mlserver not ready in {START_TIMEOUT:g} s:\n{server.log_tail()}")
        time.sleep(0.2)
