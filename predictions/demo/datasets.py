"""The demo data sets shipped in `predictions/demo/data`, loaded as numpy arrays."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

_CANCER_MEASURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave_points",
    "symmetry",
    "fractal_dimension",
)


@dataclass(frozen=True)
class Dataset:
    """Features, integer classes and the names of both."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    filename: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]
    has_header: bool


_SOURCES = {
    "iris": _Source(
        "iris.csv",
        ("sepal_length", "sepal_width", "petal_length", "petal_width"),
        ("setosa", "versicolor", "virginica"),
        has_header=True,
    ),
    "breast-cancer": _Source(
        "breast_cancer.csv",
        # The Wisconsin data set's order: ten measures' means, then standard errors, then worst.
        tuple(f"mean_{m}" for m in _CANCER_MEASURES)
        + tuple(f"{m}_error" for m in _CANCER_MEASURES)
        + tuple(f"worst_{m}" for m in _CANCER_MEASURES),
        ("malignant", "benign"),
        has_header=True,
    ),
    "digits": _Source(
        "digits.csv",
        tuple(f"pixel_{i}" for i in range(64)),
        tuple(str(d) for d in range(10)),
        has_header=False,
    ),
}

DATASETS = tuple(_SOURCES)


def load_dataset(name: str) -> Dataset:
    """Load a demo data set by name: iris, breast-cancer or digits."""
    source = _SOURCES.get(name)
    if source is None:
        raise ValueError(f"unknown data set {name!r} (choose from {', '.join(DATASETS)})")
    path = DATA_DIR / source.filename
    table = np.loadtxt(path, delimiter=",", skiprows=1 if source.has_header else 0, ndmin=2)
    n_features = len(source.feature_names)
    if table.shape[1] != n_features + 1:
        raise ValueError(f"{path} has {table.shape[1]} columns, expected {n_features + 1}")
    y = table[:, -1].astype(np.int64)
    if source.has_header:
        _check_header(path, table.shape[0], n_features, source.labels)
    if y.min() < 0 or y.max() >= len(source.labels) or not np.array_equal(y, table[:, -1]):
        raise ValueError(f"{path} has class values outside 0..{len(source.labels) - 1}")
    return Dataset(
        X=np.ascontiguousarray(table[:, :-1]),
        y=y,
        feature_names=source.feature_names,
        labels=source.labels,
    )


def _check_header(path: Path, n_rows: int, n_features: int, labels: tuple[str, ...]) -> None:
    """The header says `n_samples,n_features,class names...`; catch a swapped or cut file."""
    with path.open(encoding="utf-8") as file:
        header = file.readline().strip().split(",")
    if header != [str(n_rows), str(n_features), *labels]:
        raise ValueError(f"{path} header {header} does not match its {n_rows} rows")
