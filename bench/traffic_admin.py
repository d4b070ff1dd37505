"""Registry changes for the traffic benchmark, made on a throw-away instance via manage.py shell.

Each change runs the platform's own services (`model_save`, `model_version_create`,
`model_version_save`) in a `manage.py shell -c` process, as an operator would, so the running
server picks it up the way it picks up admin changes: through the registry revision, within
about a second (`NOTICE_S` is the wait this benchmark allows).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench import platform_setup

NOTICE_S = 2.0  # the server re-reads the registry revision at most once a second
RESULT_PREFIX = "BENCH_JSON "
# Dense benchmark models: name -> layer sizes (input, hidden..., labels). `wide` infers one row
# in about 0.7 ms with one BLAS thread, `wider` in about 3 ms: the range where a response cache
# starts to pay for the request around it.
WIDE_MODELS = {"wide": (64, 2048, 2048, 10), "wider": (64, 4096, 4096, 10)}
WIDE_SEED = 20261127

_PRELUDE = f"""
import json, time
import numpy as np
from predictions.models import MLModel, ModelVersion, Prediction, ShadowPrediction
from predictions.services import model_save, model_version_create, model_version_save
def emit(value):
    print({RESULT_PREFIX!r} + json.dumps(value))
"""

_REGISTER_WIDE = """
from predictions.runtime.artifacts import dump_dense
from predictions.runtime.predictors import load_predictor
rng = np.random.default_rng(P["seed"])
sizes = P["sizes"]
weights = [
    (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    for n_in, n_out in zip(sizes, sizes[1:])
]
biases = [np.zeros(n_out, np.float32) for n_out in sizes[1:]]
activations = ["relu"] * (len(sizes) - 2) + ["softmax"]
artifact = dump_dense(weights, biases, activations)
model = model_save(model=MLModel(
    name=P["name"],
    description="benchmark: a dense network big enough for inference to cost milliseconds",
    feature_names=[f"f{i}" for i in range(sizes[0])],
    labels=[f"class{i}" for i in range(sizes[-1])],
))
version = model_version_create(
    model=model, label="v1", artifact=artifact, status=ModelVersion.Status.ACTIVE
)
model.default_version = version
model_save(model=model)
predictor = load_predictor("numpy", artifact)
row = rng.standard_normal((1, sizes[0])).astype(np.float32)
for _ in range(5):
    predictor.predict(row)
times = []
for _ in range(P["repeats"]):
    started = time.perf_counter()
    predictor.predict(row)
    times.append(time.perf_counter() - started)
emit({
    "artifact_bytes": len(artifact),
    "parameters": int(sum(w.size + b.size for w, b in zip(weights, biases))),
    "inference_ms_median": 1e3 * float(np.median(times)),
    "inference_ms_min": 1e3 * min(times),
    "input": [round(float(v), 4) for v in row[0]],
})
"""

_SET_CACHE_TTL = """
model = MLModel.objects.get(name=P["name"])
model.cache_ttl = P["ttl"]
model_save(model=model)
emit({"cache_ttl": model.cache_ttl})
"""

_CREATE_SHADOW = """
from predictions.artifact_files import artifact_bytes
model = MLModel.objects.get(name=P["name"])
source = ModelVersion.objects.get(model=model, label=P["artifact_of"])
version = model_version_create(
    model=model,
    label=P["label"],
    artifact=artifact_bytes(source),
    runtime=source.runtime,
    description="benchmark shadow",
)
version.is_shadow = True
version.shadow_share = P["share"]
version.status = ModelVersion.Status.ACTIVE
model_version_save(version=version)
emit({"id": version.id, "created_at": version.created_at.isoformat()})
"""

_SET_STATUS = """
version = ModelVersion.objects.get(model__name=P["name"], label=P["label"])
version.status = P["status"]
model_version_save(version=version)
emit({"status": version.status})
"""

_SWITCH_LOOP = """
import sys
version = ModelVersion.objects.get(model__name=P["name"], label=P["label"])
for line in sys.stdin:
    version.status = line.strip()
    model_version_save(version=version)
    emit({"status": version.status})
    sys.stdout.flush()
"""

_SHADOW_COUNTS = """
from datetime import datetime
from django.db.models import Q
shadow = ModelVersion.objects.get(model__name=P["name"], label=P["shadow"])
def made_in(windows):
    when = Q(pk__in=[])
    for start, end in windows:
        when |= Q(created_at__gte=datetime.fromisoformat(start),
                  created_at__lt=datetime.fromisoformat(end))
    return Prediction.objects.filter(
        when, model_version__model__name=P["name"], model_version__label=P["primary"]
    )
on, off = made_in(P["on"]), made_in(P["off"])
rows = ShadowPrediction.objects.filter(model_version=shadow)
emit({
    "predictions": on.count(),
    "shadowed": on.filter(shadows__model_version=shadow).count(),
    "baseline_predictions": off.count(),
    "baseline_shadowed": off.filter(shadows__model_version=shadow).count(),
    "shadow_rows": rows.count(),
    "shadow_errors": rows.exclude(error="").count(),
    "agreeing": rows.filter(agrees=True).count(),
})
"""


def run_snippet(env: dict[str, str], body: str, **params: Any) -> dict[str, Any]:
    """Run one snippet with its parameters bound to `P`; return the JSON it emitted."""
    code = f"{_PRELUDE}\nP = json.loads({json.dumps(params)!r})\n{body}"
    out = platform_setup.shell(env, code)
    lines = [x for x in out.splitlines() if x.startswith(RESULT_PREFIX)]
    if not lines:
        raise platform_setup.SetupError(f"manage.py shell printed no result: {out[-2000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def register_wide_model(env: dict[str, str], name: str, repeats: int = 50) -> dict[str, Any]:
    """Register `name` v1 (seeded random weights); report its single-row inference time."""
    sizes = WIDE_MODELS[name]
    info = run_snippet(env, _REGISTER_WIDE, name=name, sizes=sizes, seed=WIDE_SEED, repeats=repeats)
    return {**info, "sizes": list(sizes)}


def set_cache_ttl(env: dict[str, str], model: str, ttl: int) -> None:
    """Set a model's response-cache TTL in seconds (0: no cache)."""
    run_snippet(env, _SET_CACHE_TTL, name=model, ttl=ttl)


def create_shadow(
    env: dict[str, str], model: str, label: str, artifact_of: str, share: float = 1.0
) -> dict[str, Any]:
    """Add an active shadow version `label` carrying the artifact of version `artifact_of`."""
    return run_snippet(
        env, _CREATE_SHADOW, name=model, label=label, artifact_of=artifact_of, share=share
    )


def set_version_status(env: dict[str, str], model: str, label: str, status: str) -> None:
    """Set a version's status (a staged shadow gets no copies, an active one does)."""
    run_snippet(env, _SET_STATUS, name=model, label=label, status=status)


def shadow_counts(
    env: dict[str, str],
    model: str,
    primary: str,
    shadow: str,
    on: list[tuple[str, str]],
    off: list[tuple[str, str]],
) -> dict[str, int]:
    """Predictions of `primary` made in the time windows `on` (shadow active) and `off`, and
    how many of them have a shadow row; with the shadow's row, error and agreement totals."""
    return run_snippet(
        env, _SHADOW_COUNTS, name=model, primary=primary, shadow=shadow, on=on, off=off
    )


class StatusSwitch:
    """A `manage.py shell` kept open that sets a version's status on request, through the
    same service as `set_version_status`: a switch costs one service call, not a Django start.
    """

    def __init__(self, env: dict[str, str], model: str, label: str) -> None:
        params = json.dumps({"name": model, "label": label})
        code = f"{_PRELUDE}\nP = json.loads({params!r})\n{_SWITCH_LOOP}"
        self._proc = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=platform_setup.ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def set(self, status: str) -> None:
        """Set the status; return once the service call has returned."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(status + "\n")
        self._proc.stdin.flush()
        for line in self._proc.stdout:
            if line.startswith(RESULT_PREFIX):
                return
        raise platform_setup.SetupError(f"the status switch exited {self._proc.wait()}")

    def close(self) -> None:
        """End the shell process."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
