"""Fixtures for runtime tests: small valid networks and a way to write arbitrary .npz files."""

import io
from collections.abc import Callable

import numpy as np
import pytest

from predictions.runtime.artifacts import FORMAT


@pytest.fixture
def network_arrays() -> dict[str, np.ndarray]:
    """Arrays of a valid 4 -> 5 (relu) -> 3 (softmax) network with standardisation."""
    rng = np.random.default_rng(42)
    return {
        "format": np.array(FORMAT),
        "activations": np.array(["relu", "softmax"]),
        "W0": rng.normal(size=(4, 5)),
        "b0": rng.normal(size=5),
        "W1": rng.normal(size=(5, 3)),
        "b1": rng.normal(size=3),
        "input_mean": np.array([5.8, 3.0, 3.7, 1.2]),
        "input_scale": np.array([0.8, 0.4, 1.8, 0.8]),
    }


@pytest.fixture
def make_npz() -> Callable[..., bytes]:
    """Return a function writing keyword arrays to .npz bytes with np.savez, as users would."""

    def make(**arrays: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    return make
