"""Deterministic numpy training of the demo models into `mlplatform.dense/1` artifacts."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictions.demo.datasets import Dataset, load_dataset
from predictions.runtime.artifacts import dump_dense, load_dense

HIDDEN_ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class TrainedModel:
    """An artifact and how well it did on rows it never saw."""

    artifact: bytes
    holdout_accuracy: float
    train_rows: int
    test_rows: int


@dataclass(frozen=True)
class DemoVersion:
    """One trained version of a demo model, ready to be stored."""

    label: str
    description: str
    artifact: bytes
    metrics: dict[str, Any]


@dataclass(frozen=True)
class DemoModel:
    """A demo model with its metadata and trained versions, oldest first."""

    name: str
    task: str
    description: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]
    versions: list[DemoVersion] = field(default_factory=list)


def stratified_split(
    y: np.ndarray, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted train and test row indices holding out `test_fraction` of each class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(len(rows) * test_fraction + 0.5)  # half up, unlike round()
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-feature mean and scale; a constant feature gets scale 1, not 0."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


def train_softmax_regression(
    dataset: Dataset,
    *,
    seed: int = 0,
    epochs: int = 300,
    learning_rate: float = 0.05,
    l2: float = 1e-3,
) -> TrainedModel:
    """Fit multinomial logistic regression (full-batch Adam) and evaluate it on a hold-out."""
    return _train(
        dataset,
        hidden=(),
        hidden_activation="relu",
        seed=seed,
        epochs=epochs,
        batch_size=None,
        learning_rate=learning_rate,
        l2=l2,
    )


def train_mlp(
    dataset: Dataset,
    *,
    hidden: int,
    activation: str = "relu",
    seed: int = 0,
    epochs: int = 200,
    batch_size: int | None = None,
    learning_rate: float = 0.01,
    l2: float = 1e-4,
) -> TrainedModel:
    """Fit a one-hidden-layer network with a softmax output and evaluate it on a hold-out."""
    if activation not in HIDDEN_ACTIVATIONS:
        raise ValueError(
            f"unknown hidden activation {activation!r} (choose from "
            f"{', '.join(HIDDEN_ACTIVATIONS)})"
        )
    return _train(
        dataset,
        hidden=(hidden,),
        hidden_activation=activation,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        l2=l2,
    )


def train_demo_models() -> list[DemoModel]:
    """Train every demo model from the shipped CSV files; the same bytes on every run."""
    iris = load_dataset("iris")
    cancer = load_dataset("breast-cancer")
    digits = load_dataset("digits")
    return [
        DemoModel(
            name="iris",
            task="classification",
            description="Iris species from sepal and petal measurements in centimetres.",
            feature_names=iris.feature_names,
            labels=iris.labels,
            versions=[
                _version(
                    "v1",
                    "Softmax regression on standardised features.",
                    "softmax_regression",
                    train_softmax_regression(iris, epochs=300, learning_rate=0.05),
                ),
                _version(
                    "v2",
                    "Neural network with 16 tanh hidden units.",
                    "mlp(16, tanh)",
                    train_mlp(iris, hidden=16, activation="tanh", epochs=300),
                ),
            ],
        ),
        DemoModel(
            name="breast-cancer",
            task="classification",
            description="Malignant or benign tumour from 30 cell-nucleus measurements (Wisconsin).",
            feature_names=cancer.feature_names,
            labels=cancer.labels,
            versions=[
                _version(
                    "v1",
                    "Logistic regression (two-class softmax) on standardised features.",
                    "softmax_regression",
                    train_softmax_regression(cancer, epochs=200, learning_rate=0.05, l2=1e-2),
                ),
            ],
        ),
        DemoModel(
            name="digits",
            task="classification",
            description="Handwritten digit from an 8x8 image, 64 pixel intensities from 0 to 16.",
            feature_names=digits.feature_names,
            labels=digits.labels,
            versions=[
                _version(
                    "v1",
                    "Neural network with 64 ReLU hidden units.",
                    "mlp(64, relu)",
                    train_mlp(digits, hidden=64, activation="relu", epochs=40, batch_size=64),
                ),
            ],
        ),
    ]


def _version(label: str, description: str, algorithm: str, trained: TrainedModel) -> DemoVersion:
    metrics = {
        "holdout_accuracy": round(trained.holdout_accuracy, 4),
        "train_rows": trained.train_rows,
        "test_rows": trained.test_rows,
        "algorithm": algorithm,
    }
    return DemoVersion(label, description, trained.artifact, metrics)


def _train(
    dataset: Dataset,
    *,
    hidden: tuple[int, ...],
    hidden_activation: str,
    seed: int,
    epochs: int,
    batch_size: int | None,
    learning_rate: float,
    l2: float,
) -> TrainedModel:
    train, test = stratified_split(dataset.y, seed=seed)
    mean, scale = standardisation(dataset.X[train])
    X = (dataset.X[train] - mean) / scale
    n_classes = len(dataset.labels)
    sizes = (X.shape[1], *hidden, n_classes)
    weights, biases = _fit_adam(
        X,
        dataset.y[train],
        sizes=sizes,
        hidden_activation=hidden_activation,
        rng=np.random.default_rng(seed),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        l2=l2,
    )
    activations = [hidden_activation] * len(hidden) + ["softmax"]
    artifact = dump_dense(weights, biases, activations, input_mean=mean, input_scale=scale)
    # Scored through the runtime on raw features, so the number describes what gets served.
    predicted = load_dense(artifact).predict(dataset.X[test]).argmax(axis=1)
    return TrainedModel(
        artifact=artifact,
        holdout_accuracy=float(np.mean(predicted == dataset.y[test])),
        train_rows=len(train),
        test_rows=len(test),
    )


def _fit_adam(
    X: np.ndarray,
    y: np.ndarray,
    *,
    sizes: tuple[int, ...],
    hidden_activation: str,
    rng: np.random.Generator,
    epochs: int,
    batch_size: int | None,
    learning_rate: float,
    l2: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Minimise mean cross-entropy plus L2 on the weights with Adam, in float64."""
    weights = [
        _initial_weight(rng, n_in, n_out, hidden_activation)
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    if len(weights) == 1:
        # A convex model needs no symmetry breaking; zeros make the start independent of rng.
        weights[0][:] = 0.0
    biases = [np.zeros(n_out) for n_out in sizes[1:]]
    params = weights + biases
    moments = [np.zeros_like(p) for p in params]
    velocities = [np.zeros_like(p) for p in params]
    targets = np.eye(sizes[-1])[y]
    n_rows = len(X)
    step = 0
    for _ in range(epochs):
        if batch_size:
            order = rng.permutation(n_rows)
            batches = [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]
        else:
            batches = [slice(None)]
        for batch in batches:
            grads = _gradients(X[batch], targets[batch], weights, biases, hidden_activation, l2)
            step += 1
            correction1 = 1 - beta1**step
            correction2 = 1 - beta2**step
            for param, grad, m, v in zip(params, grads, moments, velocities, strict=True):
                m *= beta1
                m += (1 - beta1) * grad
                v *= beta2
                v += (1 - beta2) * grad * grad
                param -= learning_rate * (m / correction1) / (np.sqrt(v / correction2) + eps)
    return weights, biases


def _initial_weight(rng: np.random.Generator, n_in: int, n_out: int, activation: str) -> np.ndarray:
    # He initialisation keeps ReLU activations from shrinking; Glorot suits tanh.
    if activation == "relu":
        return rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out))
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out))


def _gradients(
    X: np.ndarray,
    targets: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    hidden_activation: str,
    l2: float,
) -> list[np.ndarray]:
    """Return gradients for weights then biases, in the order `_fit_adam` keeps its params."""
    layer_inputs = [X]
    h = X
    for i, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        z = h @ weight + bias
        if i < len(weights) - 1:
            h = np.maximum(z, 0.0) if hidden_activation == "relu" else np.tanh(z)
            layer_inputs.append(h)
        else:
            z -= z.max(axis=1, keepdims=True)
            h = np.exp(z)
            h /= h.sum(axis=1, keepdims=True)
    # Softmax with cross-entropy has the simple gradient (p - y) / n at the logits.
    delta = (h - targets) / len(X)
    weight_grads: list[np.ndarray] = [np.empty(0)] * len(weights)
    bias_grads: list[np.ndarray] = [np.empty(0)] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        weight_grads[i] = layer_inputs[i].T @ delta + l2 * weights[i]
        bias_grads[i] = delta.sum(axis=0)
        if i > 0:
            upstream = delta @ weights[i].T
            a = layer_inputs[i]
            delta = upstream * (a > 0) if hidden_activation == "relu" else upstream * (1 - a * a)
    return weight_grads + bias_grads
