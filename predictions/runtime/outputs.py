"""Turning model outputs into per-row outcomes: probabilities, label and confidence."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "regression")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One row's result: class probabilities or regression values, plus the top label."""

    prediction: list[float]
    label: str | None
    confidence: float | None


def describe(outputs: np.ndarray, *, task: str, labels: Sequence[str]) -> list[Outcome]:
    """Return one Outcome per row of `outputs`; without labels, classes are named by index."""
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be 2-D (n_rows, n_outputs), got shape {outputs.shape}")
    # tolist() converts the whole array to Python floats in one C call.
    rows = outputs.tolist()
    if task == "regression":
        return [Outcome(row, None, None) for row in rows]
    if task != "classification":
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    n_outputs = outputs.shape[1]
    names = list(labels) if labels else [str(i) for i in range(n_outputs)]
    if len(names) != n_outputs:
        raise ValueError(f"the model has {n_outputs} outputs but {len(names)} labels")
    top = outputs.argmax(axis=1).tolist()
    return [Outcome(row, names[i], row[i]) for row, i in zip(rows, top, strict=True)]
