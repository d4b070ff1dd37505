"""Tests for deterministic training of the demo models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictions.demo.datasets import load_dataset
from predictions.demo.training import (
    DemoModel,
    standardisation,
    stratified_split,
    train_demo_models,
)
from predictions.runtime.artifacts import checksum, load_dense

ROOT = Path(__file__).resolve().parents[3]
CHECKSUMS_SCRIPT = """
import json
from predictions.runtime.artifacts import checksum
from predictions.demo.training import train_demo_models
print(json.dumps([[m.name, v.label, checksum(v.artifact)] for m in train_demo_models()
                  for v in m.versions]))
"""


@pytest.fixture(scope="module")
def demo_models() -> list[DemoModel]:
    return train_demo_models()


def checksums(models: list[DemoModel]) -> list[list[str]]:
    return [[m.name, v.label, checksum(v.artifact)] for m in models for v in m.versions]


def test_demo_models_come_in_the_documented_order(demo_models):
    assert [(m.name, [v.label for v in m.versions]) for m in demo_models] == [
        ("iris", ["v1", "v2"]),
        ("breast-cancer", ["v1"]),
        ("digits", ["v1"]),
    ]
    assert {m.task for m in demo_models} == {"classification"}


@pytest.mark.parametrize(
    ("name", "label", "target"),
    [
        ("iris", "v1", 0.9),
        ("iris", "v2", 0.9),
        ("breast-cancer", "v1", 0.93),
        ("digits", "v1", 0.93),
    ],
)
def test_demo_models_reach_their_holdout_accuracy_target(demo_models, name, label, target):
    model = next(m for m in demo_models if m.name == name)
    version = next(v for v in model.versions if v.label == label)

    assert version.metrics["holdout_accuracy"] >= target


def test_reported_accuracy_is_what_the_stored_artifact_achieves(demo_models):
    iris = load_dataset("iris")
    _, test = stratified_split(iris.y)

    for version in demo_models[0].versions:
        predicted = load_dense(version.artifact).predict(iris.X[test]).argmax(axis=1)
        accuracy = float(np.mean(predicted == iris.y[test]))
        assert version.metrics["holdout_accuracy"] == round(accuracy, 4)


def test_metrics_record_rows_and_algorithm(demo_models):
    metrics = demo_models[0].versions[0].metrics

    assert metrics.keys() == {"holdout_accuracy", "train_rows", "test_rows", "algorithm"}
    assert metrics["train_rows"] + metrics["test_rows"] == 150


def test_artifacts_match_their_model_metadata(demo_models):
    for model in demo_models:
        for version in model.versions:
            network = load_dense(version.artifact)
            assert network.n_inputs == len(model.feature_names)
            assert network.n_outputs == len(model.labels)
            assert network.activations[-1] == "softmax"


def test_training_gives_identical_bytes_in_fresh_processes(demo_models):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", CHECKSUMS_SCRIPT],
            cwd=ROOT,
            env=env | extra,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for extra in ({}, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    ]

    assert json.loads(runs[0]) == json.loads(runs[1]) == checksums(demo_models)


def test_stratified_split_holds_out_a_quarter_of_each_class():
    y = np.repeat([0, 1, 2], [40, 20, 8])

    train, test = stratified_split(y, seed=3)

    assert np.bincount(y[test]).tolist() == [10, 5, 2]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(stratified_split(y, seed=3)[1], test)
    assert not np.array_equal(stratified_split(y, seed=4)[1], test)


def test_standardisation_gives_a_constant_feature_scale_one():
    X = np.array([[1.0, 5.0], [3.0, 5.0]])

    mean, scale = standardisation(X)

    assert mean.tolist() == [2.0, 5.0]
    assert scale.tolist() == [1.0, 1.0]
