"""Ensembles: a weighted average of other versions' outputs, the members run concurrently.

An ensemble version's artifact is a small JSON document naming member versions of the same
model and their weights::

    {"members": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 3}]}

Weights are positive and normalised to sum to 1. Members are plain versions (no nested
ensembles); they must agree on the number of inputs and outputs.
"""

import json
import math
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import Predictor


class EnsembleTimeout(TimeoutError):
    """Not every member answered within the time allowed."""


@dataclass(frozen=True, slots=True)
class EnsembleSpec:
    members: tuple[tuple[str, float], ...]  # (version label, normalised weight)


def parse_spec(data: bytes) -> EnsembleSpec:
    """Read and check an ensemble document; ArtifactError says what is wrong."""
    try:
        document = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"an ensemble is a JSON document: {exc}") from None
    members = document.get("members") if isinstance(document, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise ArtifactError('an ensemble needs "members": a list of at least two versions')
    parsed: list[tuple[str, float]] = []
    for index, member in enumerate(members):
        if not isinstance(member, dict) or set(member) - {"version", "weight"}:
            raise ArtifactError(f'members[{index}] must be {{"version": ..., "weight": ...}}')
        label, weight = member.get("version"), member.get("weight", 1)
        if not isinstance(label, str) or not label:
            raise ArtifactError(f"members[{index}].version must be a version label")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ArtifactError(f"members[{index}].weight must be a positive number")
        parsed.append((label, float(weight)))
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
        raise ArtifactError("each member version may appear only once")
    total = sum(weight for _, weight in parsed)
    return EnsembleSpec(members=tuple((label, weight / total) for label, weight in parsed))


class WeightedEnsemble:
    """Runs member predictors concurrently and averages their outputs with fixed weights."""

    def __init__(
        self, members: Sequence[tuple[Predictor, float]], executor: Executor | None
    ) -> None:
        if len(members) < 2:
            raise ArtifactError("an ensemble needs at least two members")
        shapes = {(p.n_inputs, p.n_outputs) for p, _ in members}
        if len(shapes) != 1:
            raise ArtifactError(
                "ensemble members disagree on inputs or outputs: "
                + ", ".join(f"{i} -> {o}" for i, o in sorted(shapes))
            )
        self.n_inputs, self.n_outputs = shapes.pop()
        self._members = tuple(members)
        self._executor = executor

    def predict(self, X: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Weighted average of the members' outputs; EnsembleTimeout past ``timeout`` seconds."""
        if self._executor is None:
            return sum(np.float32(w) * p.predict(X) for p, w in self._members)
        futures = [(self._executor.submit(p.predict, X), w) for p, w in self._members]
        done, pending = wait([f for f, _ in futures], timeout=timeout)
        if pending:
            for future in pending:
                future.cancel()
            raise EnsembleTimeout(f"{len(pending)} of {len(futures)} members did not answer")
        total = np.zeros((X.shape[0], self.n_outputs), dtype=np.float32)
        for future, weight in futures:
            total += np.float32(weight) * future.result()
        return total


def member_pool(max_workers: int = 4) -> ThreadPoolExecutor:
    """A thread pool for running members (numpy releases the GIL while it multiplies)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ensemble")
