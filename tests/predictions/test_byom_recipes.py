"""The export recipes of docs/models.md, run as written, registered each way, served.

Each recipe (scikit-learn with skl2onnx, LightGBM with onnxmltools, PyTorch with
``torch.onnx.export``) is executed from the page's own code block; the ONNX file it writes is
registered over REST, with ``register_model`` and with the admin's "Add model from file", and
``/api/v1/predict`` must answer what the framework itself predicts, within 1e-5.
"""

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from predictions.catalogue.versions import registry_touch
from predictions.models import MLModel
from predictions.runtime.signature import read_signature

pytestmark = pytest.mark.usefixtures("demo_models")

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def docs_block(heading: str) -> str:
    """The first ```python block under the ``#### heading`` section of docs/models.md."""
    text = DOC.read_text()
    section = text.split(f"\n#### {heading}\n", 1)[1].split("\n#", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run_recipe(heading: str, directory: Path) -> dict:
    """Run a recipe of the page in ``directory``; return the names it defines."""
    namespace: dict = {"__name__": "recipe"}
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        exec(compile(docs_block(heading), f"docs/models.md: {heading}", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    return namespace


@dataclass(frozen=True)
class Recipe:
    heading: str
    filename: str
    labels: list[str]
    # The framework's own probabilities for float32 rows, from the recipe's namespace.
    own_answer: Callable[[dict, np.ndarray], np.ndarray]


def _torch_answer(ns: dict, rows: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return ns["classifier"](torch.tensor(rows, dtype=torch.float32)).numpy()


RECIPES = {
    "sklearn": Recipe(
        "scikit-learn (skl2onnx)",
        "iris-sklearn.onnx",
        ["setosa", "versicolor", "virginica"],
        lambda ns, rows: ns["pipeline"].predict_proba(rows),
    ),
    "lightgbm": Recipe(
        "LightGBM (onnxmltools)",
        "cancer-lightgbm.onnx",
        ["malignant", "benign"],
        lambda ns, rows: ns["booster"].predict_proba(rows),
    ),
    "pytorch": Recipe(
        "PyTorch (torch.onnx.export)",
        "iris-torch.onnx",
        ["setosa", "versicolor", "virginica"],
        _torch_answer,
    ),
}


@dataclass(frozen=True)
class Export:
    recipe: Recipe
    namespace: dict
    data: bytes

    def rows(self, n: int) -> np.ndarray:
        """``n`` rows spread over the training data (every class), as float32."""
        X = self.namespace["X"]
        return X[np.linspace(0, len(X) - 1, n).astype(int)].astype(np.float32)

    def own_answer(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.recipe.own_answer(self.namespace, rows), dtype=np.float64)


@pytest.fixture(scope="module", params=list(RECIPES))
def export(request, tmp_path_factory) -> Export:
    """A recipe of the page, run once per module: its namespace and the file it wrote."""
    recipe = RECIPES[request.param]
    directory = tmp_path_factory.mktemp(request.param)
    namespace = run_recipe(recipe.heading, directory)
    return Export(recipe, namespace, (directory / recipe.filename).read_bytes())


def _predict(client, model: str, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    registry_touch()
    answers, labels = [], []
    for row in rows:
        response = client.post(
            "/api/v1/predict",
            {"input_data": row.tolist(), "model": model, "model_version": "v1"},
            format="json",
        )
        assert response.status_code == 200, response.content
        answers.append(response.json()["prediction"])
        labels.append(response.json()["label"])
    return np.asarray(answers), labels


def _by_rest(client, name: str, export: Export) -> None:
    created = client.post("/api/v1/models", {"name": name, "task": "classification"}, format="json")
    assert created.status_code == 201, created.content
    response = client.post(
        f"/api/v1/models/{name}/versions",
        {
            "artifact": SimpleUploadedFile(export.recipe.filename, export.data),
            "label": "v1",
            "status": "active",
            "traffic_weight": "1",
            "labels": ",".join(export.recipe.labels),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["labels"] == export.recipe.labels


def _by_command(tmp_path: Path, name: str, export: Export) -> None:
    path = tmp_path / export.recipe.filename
    path.write_bytes(export.data)
    out = io.StringIO()
    call_command(
        "register_model",
        name,
        str(path),
        "--labels",
        ",".join(export.recipe.labels),
        "--status",
        "active",
        stdout=out,
    )
    assert f"{name}:v1 registered (onnx, active" in out.getvalue()


def _by_admin(admin_client, name: str, export: Export) -> None:
    response = admin_client.post(
        "/admin/predictions/mlmodel/add-from-file/",
        {
            "artifact": SimpleUploadedFile(export.recipe.filename, export.data),
            "name": name,
            "labels": ",".join(export.recipe.labels),
            "status": "active",
            "traffic_weight": "1",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]


@pytest.mark.parametrize("way", ["rest", "command", "admin"])
def test_a_recipes_file_registers_and_serves_the_frameworks_own_probabilities(
    way, export, models_client, admin_client, tmp_path
):
    name = f"byom-{export.recipe.filename.removesuffix('.onnx')}-{way}"
    if way == "rest":
        _by_rest(models_client, name, export)
    elif way == "command":
        _by_command(tmp_path, name, export)
    else:
        _by_admin(admin_client, name, export)

    model = MLModel.objects.get(name=name)
    n_features = export.namespace["X"].shape[1]
    assert (model.task, len(model.feature_names), model.labels) == (
        "classification",
        n_features,
        export.recipe.labels,
    )
    assert model.versions.get(label="v1").runtime == "onnx"
    rows = export.rows(24)
    served, labels = _predict(models_client, name, rows)
    expected = export.own_answer(rows)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert labels == [export.recipe.labels[i] for i in expected.argmax(axis=1)]


def test_a_recipes_file_serves_the_frameworks_answer_on_every_training_row(export):
    # Every row, through the runtime the platform serves with (the HTTP test above takes 24).
    predictor, signature = read_signature("onnx", export.data)
    X = export.namespace["X"].astype(np.float32)

    assert (signature.n_features, signature.n_outputs) == (X.shape[1], len(export.recipe.labels))
    assert signature.task_guess == "classification"
    np.testing.assert_allclose(predictor.predict(X), export.own_answer(X), atol=1e-5)


class _Payload:
    """A pickle that makes a directory when it is loaded: the proof that it was."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize(
    "filename", ["model.pkl", "model.joblib", "model.pt", "model.onnx", "x.npz"]
)
def test_a_pickled_model_is_refused_and_never_loaded(models_client, tmp_path, filename):
    import pickle

    marker = tmp_path / "unpickled"
    data = pickle.dumps(_Payload(marker))
    models_client.post(
        "/api/v1/models", {"name": "pickled", "task": "classification"}, format="json"
    )

    response = models_client.post(
        "/api/v1/models/pickled/versions",
        {"artifact": SimpleUploadedFile(filename, data)},
        format="multipart",
    )

    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith("artifact: ")
    assert not marker.exists()
    assert not MLModel.objects.get(name="pickled").versions.exists()


def test_a_pytorch_export_without_a_dynamic_batch_is_refused_naming_the_fix(
    models_client, tmp_path
):
    # The recipe's network, exported as torch does by default: the example's batch of 1 fixed.
    import torch

    namespace = run_recipe(RECIPES["pytorch"].heading, tmp_path)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        namespace["classifier"],
        (namespace["features"][:1],),
        str(path),
        input_names=["input"],
        output_names=["probabilities"],
        external_data=False,
    )
    models_client.post("/api/v1/models", {"name": "fixed", "task": "classification"}, format="json")

    response = models_client.post(
        "/api/v1/models/fixed/versions",
        {"artifact": SimpleUploadedFile("fixed.onnx", path.read_bytes()), "labels": "a,b,c"},
        format="multipart",
    )

    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert "input 'input' has a fixed batch size of 1" in detail
    assert "dynamic_shapes=({0: 'batch'},)" in detail
    assert not MLModel.objects.get(name="fixed").versions.exists()
