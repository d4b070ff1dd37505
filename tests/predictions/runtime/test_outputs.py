"""Tests for turning model outputs into per-row outcomes."""

import dataclasses

import numpy as np
import pytest

from predictions.runtime.outputs import Outcome, describe


def test_classification_gives_probabilities_top_label_and_confidence():
    outputs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)

    first, second = describe(outputs, task="classification", labels=["a", "b", "c"])

    assert first.label == "b"
    assert first.confidence == pytest.approx(0.7)
    assert first.prediction == pytest.approx([0.1, 0.7, 0.2])
    assert (second.label, second.confidence) == ("a", pytest.approx(0.6))


def test_values_are_plain_python_floats():
    outcome = describe(np.array([[0.25, 0.75]], "f4"), task="classification", labels=["n", "y"])[0]

    assert type(outcome.confidence) is float
    assert all(type(p) is float for p in outcome.prediction)
    assert outcome.prediction == [0.25, 0.75]


def test_regression_gives_values_without_label_or_confidence():
    outcomes = describe(np.array([[1.5], [-2.0]]), task="regression", labels=[])

    assert outcomes == [Outcome([1.5], None, None), Outcome([-2.0], None, None)]


def test_if_there_are_no_labels_then_classes_are_named_by_index():
    outcome = describe(np.array([[0.2, 0.8]]), task="classification", labels=())[0]

    assert outcome.label == "1"


def test_if_label_count_differs_from_outputs_then_value_error():
    with pytest.raises(ValueError, match="2 outputs but 3 labels"):
        describe(np.array([[0.2, 0.8]]), task="classification", labels=["a", "b", "c"])


def test_if_task_is_unknown_then_value_error_lists_the_tasks():
    with pytest.raises(ValueError, match=r"unknown task 'ranking' \(choose from classification"):
        describe(np.array([[0.2, 0.8]]), task="ranking", labels=[])


def test_outcome_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outcome([1.0], "a", 1.0).label = "b"
