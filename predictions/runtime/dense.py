"""Dense feed-forward network evaluated with numpy: float32 values, float64 sums.

Each layer's matrix product is summed in float64 and its result rounded to float32, where the
activation runs. BLAS sums a product in an order that depends on the number of rows (one row
takes another kernel than many): in float32 a row's answer would differ by a few units in the
last place with the rows it is batched with; rounded from float64 it is the same, however the
rows are batched (``mlplatform.background.Batcher``). Values beyond the float32 range still
overflow to infinity, as the inputs and outputs are float32.
"""

from collections.abc import Callable, Sequence

import numpy as np

from predictions.runtime.errors import ArtifactError

_FLOAT32 = np.dtype(np.float32)


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0, out=h)


def _tanh(h: np.ndarray) -> np.ndarray:
    return np.tanh(h, out=h)


def _sigmoid(h: np.ndarray) -> np.ndarray:
    # exp(-|h|) never overflows, so large negative inputs give 0 instead of a warning.
    e = np.exp(-np.abs(h))
    return np.divide(np.where(h >= 0, 1, e), 1 + e, out=h)


def _softmax(h: np.ndarray) -> np.ndarray:
    # Subtracting the row maximum keeps exp() in range; the largest term becomes exp(0) = 1.
    h -= h.max(axis=1, keepdims=True)
    np.exp(h, out=h)
    h /= h.sum(axis=1, keepdims=True)
    return h


def _identity(h: np.ndarray) -> np.ndarray:
    return h


# Each function works in place on a fresh float32 array owned by predict().
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "identity": _identity,
}


def _frozen_float32(value: object, what: str, *, verb: str = "contain") -> np.ndarray:
    """Return `value` as a read-only C-contiguous float32 array, refusing non-numbers."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ArtifactError(f"{what} must hold real numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # overflow becomes infinity, reported just below
        array = np.array(array, dtype=_FLOAT32, order="C")
    # Checked after the cast: float64 values beyond the float32 range have become infinite.
    if not np.isfinite(array).all():
        raise ArtifactError(f"{what} {verb} NaN or infinity")
    array.flags.writeable = False
    return array


class DenseNetwork:
    """A validated stack of dense layers; `predict` does one matmul per layer for all rows."""

    __slots__ = (
        "n_inputs",
        "n_outputs",
        "weights",
        "biases",
        "activations",
        "input_mean",
        "input_scale",
        "_layers",
    )

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        activations: Sequence[str],
        *,
        input_mean: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
    ) -> None:
        if not weights:
            raise ArtifactError("a network needs at least one layer")
        if not len(weights) == len(biases) == len(activations):
            raise ArtifactError(
                f"got {len(weights)} weight matrices, {len(biases)} bias vectors "
                f"and {len(activations)} activations; they must match one per layer"
            )
        self.weights = tuple(
            _frozen_float32(w, f"layer {i} weights") for i, w in enumerate(weights)
        )
        self.biases = tuple(_frozen_float32(b, f"layer {i} biases") for i, b in enumerate(biases))
        self.activations = tuple(_checked_activation(name) for name in activations)
        _check_shapes(self.weights, self.biases)
        self.n_inputs = self.weights[0].shape[0]
        self.n_outputs = self.weights[-1].shape[1]
        self.input_mean = self._input_vector(input_mean, "input_mean")
        self.input_scale = self._input_vector(input_scale, "input_scale")
        if self.input_scale is not None and not self.input_scale.all():
            zero = int(np.flatnonzero(self.input_scale == 0)[0])
            raise ArtifactError(f"input_scale must be non-zero, but input_scale[{zero}] is 0")
        layers = [
            (w, b, ACTIVATIONS[a])
            for w, b, a in zip(self.weights, self.biases, self.activations, strict=True)
        ]
        # Folding the standardisation into layer 0 saves two numpy calls per request; the fold is
        # computed in float64, as the layers are.
        layers[0] = (*self._folded_first_layer(), layers[0][2])
        self._layers = tuple(
            (w.astype(np.float64), b.astype(np.float64), activation) for w, b, activation in layers
        )

    def _input_vector(self, value: np.ndarray | None, name: str) -> np.ndarray | None:
        if value is None:
            return None
        vector = _frozen_float32(value, name, verb="contains")
        if vector.shape != (self.n_inputs,):
            raise ArtifactError(
                f"{name} has shape {vector.shape} but layer 0 takes {self.n_inputs} inputs"
            )
        return vector

    def _folded_first_layer(self) -> tuple[np.ndarray, np.ndarray]:
        weight = self.weights[0].astype(np.float64)
        bias = self.biases[0].astype(np.float64)
        if self.input_scale is not None:
            weight /= self.input_scale[:, np.newaxis]
        if self.input_mean is not None:
            bias -= self.input_mean @ weight
        with np.errstate(over="ignore"):
            finite = np.isfinite(weight.astype(_FLOAT32)).all() and np.isfinite(bias).all()
        if not finite:
            raise ArtifactError("input_scale is too close to zero for the layer 0 weights")
        return weight, bias

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return the outputs for each row of `X` (n_rows, n_inputs) as (n_rows, n_outputs)."""
        X = np.asarray(X, dtype=_FLOAT32)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"expected an array of shape (n_rows, {self.n_inputs}), got {X.shape}")
        h = X
        # Extreme inputs may overflow to inf/NaN: callers check the outputs with np.isfinite,
        # so numpy's warnings would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            for weight, bias, activation in self._layers:
                # A new array: the in-place steps below never touch the caller's X.
                total = h @ weight
                total += bias
                h = activation(total.astype(_FLOAT32))
        return h


def _checked_activation(name: object) -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ArtifactError(f"unknown activation {name!r} (choose from {', '.join(ACTIVATIONS)})")
    return str(name)


def _check_shapes(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
    previous_outputs: int | None = None
    for i, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        if weight.ndim != 2 or min(weight.shape) < 1:
            raise ArtifactError(
                f"layer {i} weight has shape {weight.shape}; "
                "it must be 2-D (inputs, outputs) with both sizes at least 1"
            )
        if previous_outputs is not None and weight.shape[0] != previous_outputs:
            raise ArtifactError(
                f"layer {i} weight has shape {weight.shape} "
                f"but the previous layer outputs {previous_outputs} values"
            )
        previous_outputs = weight.shape[1]
        if bias.shape != (previous_outputs,):
            raise ArtifactError(
                f"layer {i} bias has shape {bias.shape} "
                f"but the layer outputs {previous_outputs} values"
            )
