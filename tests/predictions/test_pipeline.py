"""The prediction pipeline: micro-batching, deadlines, and what it tells the operator."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlplatform.errors import InferenceTimeout
from predictions.catalogue.registry import registry
from predictions.catalogue.versions import model_version_save
from predictions.models import ModelVersion
from predictions.pipeline import NonFiniteOutputs, Pipeline, route

pytestmark = pytest.mark.usefixtures("demo_models")


class Slow:
    """A predictor that answers as ``inner`` does, after ``first`` is released (the model busy)."""

    def __init__(self, inner) -> None:
        self.inner, self.n_inputs, self.n_outputs = inner, inner.n_inputs, inner.n_outputs
        self.calls: list[int] = []
        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        self.started.set()
        assert self.release.wait(5)
        return self.inner.predict(rows)


@pytest.fixture
def digits():
    """A fresh pipeline, digits v1's route, and its loaded predictor wrapped to hold it busy."""
    served = route("digits", "v1", principal="test")
    slow = Slow(registry.predictor(served.version))
    registry._loaded[(served.version.id, served.version.checksum)] = slow
    return Pipeline(), served, slow


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 16, (n, 64)).astype(np.float32)


def wait_queued(pipeline: Pipeline, served, count: int) -> None:
    """Return once ``count`` requests wait behind the busy model."""
    deadline = time.monotonic() + 5
    while (queued := pipeline.queued(served.version)) < count:
        assert time.monotonic() < deadline, f"{queued} of {count} requests queued"
        time.sleep(0.005)


def test_rows_queued_while_the_model_is_busy_are_answered_together_as_they_would_be_alone(
    digits,
):
    pipeline, served, slow = digits
    rows = _rows(12)
    slow.release.set()
    alone = [pipeline.infer(served, rows[i : i + 1], timeout=5).outputs[0] for i in range(12)]
    slow.calls.clear()
    slow.release.clear()

    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(pipeline.infer, served, rows[:1], timeout=5)
        assert slow.started.wait(5)
        rest = [
            pool.submit(pipeline.infer, served, rows[i : i + 1], timeout=5) for i in range(1, 12)
        ]
        wait_queued(pipeline, served, 11)
        slow.release.set()
        together = [first.result().outputs[0]] + [f.result().outputs[0] for f in rest]

    assert slow.calls == [1, 11]
    np.testing.assert_allclose(np.array(together), np.array(alone), atol=1e-6)


def test_a_row_the_model_cannot_answer_fails_only_its_own_request(digits):
    pipeline, served, slow = digits
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(pipeline.infer, served, _rows(1), timeout=5)
        assert slow.started.wait(5)
        good = pool.submit(pipeline.infer, served, _rows(2)[1:], timeout=5)
        bad = pool.submit(pipeline.infer, served, np.full((1, 64), np.inf, np.float32), timeout=5)
        other = pool.submit(pipeline.infer, served, _rows(3)[2:], timeout=5)
        wait_queued(pipeline, served, 3)
        slow.release.set()

        assert first.result().outputs.shape == (1, 10)
        assert good.result().outputs.shape == (1, 10)
        with pytest.raises(NonFiniteOutputs, match="input_data: these values overflow the model"):
            bad.result()
        assert other.result().outputs.shape == (1, 10)
    assert slow.calls == [1, 3]


def test_a_requests_timeout_holds_while_it_waits_behind_a_busy_model(digits):
    pipeline, served, slow = digits
    with ThreadPoolExecutor(2) as pool:
        pool.submit(pipeline.infer, served, _rows(1), timeout=5)
        assert slow.started.wait(5)
        started = time.monotonic()

        with pytest.raises(InferenceTimeout, match="within the timeout of 0.2 s"):
            pipeline.infer(served, _rows(1), timeout=0.2)
        waited = time.monotonic() - started
        slow.release.set()

    # It gave up while the model was still held (released only below), not when it was done.
    assert 0.2 <= waited < 5
    assert slow.calls == [1]  # the abandoned request was never run


def test_a_max_batch_size_of_one_turns_batching_off(digits):
    pipeline, served, slow = digits
    version = ModelVersion.objects.get(model__name="digits", label="v1")
    version.max_batch_size = 1
    model_version_save(version=version)
    served = route("digits", "v1", principal="test")
    registry._loaded[(served.version.id, served.version.checksum)] = slow

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(pipeline.infer, served, _rows(1), timeout=5) for _ in range(5)]
        assert slow.started.wait(5)
        wait_queued(pipeline, served, 4)
        slow.release.set()
        for future in futures:
            future.result()

    assert slow.calls == [1, 1, 1, 1, 1]


def test_the_rows_of_each_call_of_a_model_are_counted_per_version(digits):
    pipeline, served, slow = digits

    def calls_of(rows: int) -> float:
        labels = {"model": "digits", "version": "v1", "le": str(float(rows))}
        return REGISTRY.get_sample_value("mlplatform_inference_batch_rows_bucket", labels) or 0

    ones, fours = calls_of(1), calls_of(4)
    slow.release.set()
    pipeline.infer(served, _rows(1), timeout=5)
    pipeline.infer(served, _rows(3), timeout=5)

    assert calls_of(1) == ones + 1
    assert calls_of(4) == fours + 2  # buckets count every call at or below them


def test_models_show_their_batching_settings(key_client):
    version = ModelVersion.objects.get(model__name="iris", label="v1")
    version.max_batch_size, version.batch_wait_ms = 32, 2.5
    model_version_save(version=version)

    body = key_client.get("/api/v1/models/iris").json()

    v1 = next(v for v in body["versions"] if v["label"] == "v1")
    assert (v1["max_batch_size"], v1["batch_wait_ms"]) == (32, 2.5)
    config = key_client.get("/v2/models/iris/versions/v1/config").json()
    assert config["max_batch_size"] == 32
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2500}
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
