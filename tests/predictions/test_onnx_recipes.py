"""A scikit-learn pipeline exported to ONNX as docs/models.md shows, served over V2."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from predictions.demo.datasets import load_dataset
from predictions.models import ModelVersion

pytestmark = pytest.mark.usefixtures("demo_models")


def v2_infer(client, path: str, rows: np.ndarray) -> dict[str, np.ndarray | list]:
    document = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ],
        "outputs": [{"name": "prediction"}, {"name": "label"}],
    }
    response = client.post(path, json.dumps(document), content_type="application/json")
    assert response.status_code == 200, response.content
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    prediction = outputs["prediction"]
    return {
        "prediction": np.asarray(prediction["data"]).reshape(prediction["shape"]),
        "label": outputs["label"]["data"],
    }


def test_the_scikit_learn_recipe_serves_the_pipelines_own_probabilities(tmp_path, key_client):
    # docs/models.md, "scikit-learn (skl2onnx)", on the project's iris data (classes 0..2 in the
    # order of the model's labels, as the recipe asks).
    iris = load_dataset("iris")
    X, y = iris.X, iris.y
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    onx = to_onnx(
        pipeline, X[:1].astype(np.float32), options={id(pipeline.steps[-1][1]): {"zipmap": False}}
    )
    path = tmp_path / "iris-sklearn.onnx"
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())

    # "Upload", by the command, as the docs show it.
    out = io.StringIO()
    call_command("register_model", "iris", str(path), "--label", "v3", stdout=out)

    assert "iris:v3 registered (onnx, staged, weight 0)" in out.getvalue()
    assert ModelVersion.objects.get(model__name="iris", label="v3").runtime == "onnx"
    served = v2_infer(key_client, "/v2/models/iris/versions/v3/infer", X.astype(np.float32))
    np.testing.assert_allclose(served["prediction"], pipeline.predict_proba(X), atol=1e-5)
    assert served["label"] == [iris.labels[i] for i in pipeline.predict(X)]
