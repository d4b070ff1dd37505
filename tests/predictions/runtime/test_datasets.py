"""Tests for loading the shipped demo data sets."""

import numpy as np
import pytest

from predictions.demo.datasets import DATA_DIR, load_dataset


@pytest.mark.parametrize(
    ("name", "shape", "labels", "first_feature", "last_feature", "class_counts"),
    [
        (
            "iris",
            (150, 4),
            ("setosa", "versicolor", "virginica"),
            "sepal_length",
            "petal_width",
            [50, 50, 50],
        ),
        (
            "breast-cancer",
            (569, 30),
            ("malignant", "benign"),
            "mean_radius",
            "worst_fractal_dimension",
            [212, 357],
        ),
        (
            "digits",
            (1797, 64),
            tuple("0123456789"),
            "pixel_0",
            "pixel_63",
            [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
        ),
    ],
)
def test_load_dataset_gives_features_classes_and_names(
    name, shape, labels, first_feature, last_feature, class_counts
):
    dataset = load_dataset(name)

    assert dataset.X.shape == shape
    assert dataset.X.dtype == np.float64
    assert dataset.labels == labels
    assert len(dataset.feature_names) == shape[1]
    assert (dataset.feature_names[0], dataset.feature_names[-1]) == (first_feature, last_feature)
    assert np.bincount(dataset.y).tolist() == class_counts


def test_breast_cancer_feature_names_follow_the_wisconsin_order():
    names = load_dataset("breast-cancer").feature_names

    assert names[7] == "mean_concave_points"
    assert names[10] == "radius_error"
    assert names[20] == "worst_radius"
    assert len(set(names)) == 30


def test_first_iris_row_is_the_first_csv_row():
    dataset = load_dataset("iris")

    assert dataset.X[0].tolist() == [5.1, 3.5, 1.4, 0.2]
    assert dataset.y[0] == 0


def test_data_files_ship_inside_the_package():
    assert {p.name for p in DATA_DIR.iterdir()} >= {
        "iris.csv",
        "breast_cancer.csv",
        "digits.csv",
        "README.md",
    }


def test_if_name_is_unknown_then_value_error_lists_the_data_sets():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist' \(choose from iris, breast"):
        load_dataset("mnist")
