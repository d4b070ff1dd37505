"""Ensembles: a weighted average of other versions' outputs.

An ensemble version's artifact is a small JSON document naming member versions of the same
model and their weights::

    {"members": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 3}]}

Weights are positive and normalised to sum to 1. Members are plain versions (no nested
ensembles); they must agree on the number of inputs and outputs.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from predictions.runtime.errors import ArtifactError
from predictions.runtime.sources import Source, source_bytes

M = TypeVar("M")
# An ensemble document names a few versions: anything larger is not one.
MAX_SPEC_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EnsembleSpec:
    members: tuple[tuple[str, float], ...]  # (version label, normalised weight)


def parse_spec(source: Source) -> EnsembleSpec:
    """Read and check an ensemble document; ArtifactError says what is wrong."""
    data = source_bytes(source, limit=MAX_SPEC_BYTES, what="an ensemble document")
    try:
        document = json.loads(data.decode("utf-8"))
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


class Ensemble(Generic[M]):
    """Members (predictors, or handles the caller runs them by) with weights and one shape."""

    def __init__(self, members: Sequence[tuple[M, float, int, int]]) -> None:
        """``members``: (member, normalised weight, its number of inputs, of outputs)."""
        if len(members) < 2:
            raise ArtifactError("an ensemble needs at least two members")
        shapes = {(n_inputs, n_outputs) for _, _, n_inputs, n_outputs in members}
        if len(shapes) != 1:
            raise ArtifactError(
                "ensemble members disagree on inputs or outputs: "
                + ", ".join(f"{i} -> {o}" for i, o in sorted(shapes))
            )
        self.n_inputs, self.n_outputs = shapes.pop()
        self.members: tuple[tuple[M, float], ...] = tuple((m, w) for m, w, _, _ in members)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(weight for _, weight in self.members)


def weighted_sum(outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The members' outputs averaged with their (normalised) weights, as float32."""
    total = np.zeros_like(outputs[0], dtype=np.float32)
    for output, weight in zip(outputs, weights, strict=True):
        total += np.float32(weight) * output
    return total
