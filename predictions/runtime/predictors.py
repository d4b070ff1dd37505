"""The Predictor interface and the registry of runtimes that load artifacts into predictors."""

from collections.abc import Callable
from typing import Protocol

import numpy as np

from predictions.runtime.artifacts import load_dense
from predictions.runtime.dense import DenseNetwork
from predictions.runtime.errors import ArtifactError
from predictions.runtime.sources import Source

__all__ = ["RUNTIMES", "DenseNetwork", "Predictor", "load_predictor"]


class Predictor(Protocol):
    """Anything that maps float rows (n_rows, n_inputs) to outputs (n_rows, n_outputs)."""

    n_inputs: int
    n_outputs: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return one row of outputs per row of `X`."""
        ...


def _load_onnx(source: Source) -> Predictor:
    # Imported on first use: onnxruntime costs a process that serves no ONNX model nothing.
    from predictions.runtime.onnx import load_onnx

    return load_onnx(source)


RUNTIMES: dict[str, Callable[[Source], Predictor]] = {"numpy": load_dense, "onnx": _load_onnx}


def load_predictor(runtime: str, source: Source) -> Predictor:
    """Load an artifact (bytes or a local file) with the named runtime; raise ArtifactError for
    unknown runtimes."""
    loader = RUNTIMES.get(runtime)
    if loader is None:
        raise ArtifactError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    return loader(source)
