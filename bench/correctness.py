"""One request to each server before loading: same label, same probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from bench.loadgen import Target

TOLERANCE = 1e-5


@dataclass(frozen=True)
class Answer:
    """Label and class probabilities read from a prediction response."""

    label: str
    probabilities: list[float]


class MismatchError(AssertionError):
    """The two servers disagree, or one of them answered badly."""


def _probabilities(body: dict[str, Any]) -> list[float]:
    """Find the class probabilities in a response, whichever field holds them."""
    for key in ("probabilities", "prediction", "output", "outputs"):
        value = body.get(key)
        if isinstance(value, dict):
            if isinstance(value.get("probabilities"), list | dict):
                value = value["probabilities"]
            else:
                continue
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list) and value and isinstance(value[0], list):
            value = value[0]
        if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
            return [float(v) for v in value]
    raise MismatchError(f"no class probabilities in response: {body}")


def probe(target: Target) -> Answer:
    """Send one request to target and read its label and probabilities."""
    resp = requests.post(target.url, data=target.body.encode(), headers=target.headers, timeout=30)
    if resp.status_code != 200:
        raise MismatchError(f"{target.url} answered {resp.status_code}: {resp.text[:500]}")
    body = resp.json()
    label = body.get("label")
    if not isinstance(label, str):
        raise MismatchError(f"no label in response: {json.dumps(body)[:500]}")
    return Answer(label=label, probabilities=_probabilities(body))


def compare(reference: Answer, ours: Answer, tolerance: float = TOLERANCE) -> None:
    """Raise MismatchError unless label and probabilities agree within tolerance."""
    if reference.label != ours.label:
        raise MismatchError(f"label differs: reference {reference.label!r}, ours {ours.label!r}")
    pairs = list(zip(reference.probabilities, ours.probabilities, strict=False))
    if len(reference.probabilities) != len(ours.probabilities) or any(
        abs(a - b) > tolerance for a, b in pairs
    ):
        raise MismatchError(
            f"probabilities differ by more than {tolerance}: "
            f"reference {reference.probabilities}, ours {ours.probabilities}"
        )
