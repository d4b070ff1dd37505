"""Artifacts as files in the storage: uploaded over REST, the CLI and the admin, one file per
distinct content named by its SHA-256, limited by MAX_ARTIFACT_BYTES, deleted with the last
version that names them."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from accounts.models import User
from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.versions import model_version_create, model_version_replace_artifact
from predictions.models import ModelVersion
from predictions.runtime.artifacts import dump_dense

pytestmark = pytest.mark.usefixtures("demo_models")
ROW = [5.1, 3.5, 1.4, 0.2]


def network(hidden: int = 6, seed: int = 7) -> bytes:
    """A valid iris network (4 -> hidden tanh -> 3 softmax) with random weights."""
    rng = np.random.default_rng(seed)
    return dump_dense(
        [rng.normal(size=(4, hidden)), rng.normal(size=(hidden, 3))],
        [rng.normal(size=hidden), rng.normal(size=3)],
        ["tanh", "softmax"],
    )


def stored_files() -> dict[str, str]:
    """Every file under the storage's artifacts/ directory and the SHA-256 of its bytes."""
    root = Path(default_storage.path("artifacts"))
    if not root.exists():
        return {}
    return {
        f"artifacts/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()
    }


def iris(label: str) -> ModelVersion:
    return ModelVersion.objects.get(model__name="iris", label=label)


@pytest.fixture
def models_client(user, make_key, client_for):
    user.user_permissions.add(Permission.objects.get(codename="scope_models"))
    user = User.objects.get(pk=user.pk)
    return client_for(make_key(user, scopes=["models", "predict"]))


def upload(client, data: bytes, label: str):
    return client.post(
        "/api/v1/models/iris/versions",
        {"artifact": SimpleUploadedFile(f"{label}.npz", data), "label": label},
        format="multipart",
    )


def predict(client, label: str) -> list[float]:
    response = client.post(
        "/api/v1/predict",
        {"input_data": ROW, "model": "iris", "model_version": label},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()["prediction"]


def test_every_demo_version_has_its_file_named_by_its_checksum():
    versions = list(ModelVersion.objects.all())

    assert versions
    files = stored_files()
    for version in versions:
        assert version.artifact.name == f"artifacts/{version.checksum}"
        assert files[version.artifact.name] == version.checksum


def test_a_rest_upload_is_stored_under_its_checksum_and_serves(models_client):
    data = network()

    response = upload(models_client, data, "v3")

    assert response.status_code == 201, response.content
    version = iris("v3")
    sha256 = hashlib.sha256(data).hexdigest()
    assert version.checksum == sha256
    assert stored_files()[f"artifacts/{sha256}"] == sha256
    assert np.isclose(sum(predict(models_client, "v3")), 1.0)


def test_an_upload_larger_than_djangos_memory_limit_streams_from_its_temporary_file(
    settings, models_client
):
    """Past FILE_UPLOAD_MAX_MEMORY_SIZE Django writes the upload to a temporary file; the
    version is read from there and stored byte for byte."""
    data = network(hidden=40_000)  # about 1.1 MB of float32 weights
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = len(data) // 4

    response = upload(models_client, data, "wide")

    assert response.status_code == 201, response.content
    assert default_storage.open(iris("wide").artifact.name).read() == data
    assert np.isclose(sum(predict(models_client, "wide")), 1.0)


def test_an_artifact_over_the_limit_is_413_naming_it_and_nothing_is_stored(settings, models_client):
    data = network()
    settings.PLATFORM = {**settings.PLATFORM, "MAX_ARTIFACT_BYTES": len(data) - 1}
    files_before = stored_files()

    response = upload(models_client, data, "v3")

    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"artifact: the file is {len(data)} bytes; the limit is {len(data) - 1}."
    )
    assert not ModelVersion.objects.filter(label="v3").exists()
    assert stored_files() == files_before


def test_register_model_stores_the_file_under_its_checksum(tmp_path):
    data = network(seed=3)
    path = tmp_path / "iris-v3.npz"
    path.write_bytes(data)

    call_command("register_model", "iris", str(path), "--label", "v3", stdout=io.StringIO())

    sha256 = hashlib.sha256(data).hexdigest()
    assert iris("v3").checksum == sha256
    assert iris("v3").artifact_name == "iris-v3.npz"
    assert stored_files()[f"artifacts/{sha256}"] == sha256


def test_register_model_refuses_a_file_over_the_limit_and_stores_nothing(settings, tmp_path):
    path = tmp_path / "big.npz"
    path.write_bytes(network())
    settings.PLATFORM = {**settings.PLATFORM, "MAX_ARTIFACT_BYTES": 100}
    files_before = stored_files()

    with pytest.raises(CommandError, match=r"the limit is 100\."):
        call_command("register_model", "iris", str(path), "--label", "v3", stdout=io.StringIO())

    assert not ModelVersion.objects.filter(label="v3").exists()
    assert stored_files() == files_before


def test_a_file_goes_with_the_last_version_that_names_it(django_capture_on_commit_callbacks):
    data = network(seed=5)
    first = model_version_create(model=iris("v1").model, label="v3", artifact=data)
    second = model_version_create(model=first.model, label="v4", artifact=data)
    name = first.artifact.name
    assert second.artifact.name == name  # identical bytes: one file

    with django_capture_on_commit_callbacks(execute=True):
        first.delete()
    assert default_storage.exists(name)
    assert artifact_bytes(second) == data

    with django_capture_on_commit_callbacks(execute=True):
        second.delete()
    assert not default_storage.exists(name)


def test_a_replaced_artifact_leaves_its_old_file_behind_only_while_shared(
    django_capture_on_commit_callbacks,
):
    version = model_version_create(model=iris("v1").model, label="v3", artifact=network(seed=1))
    old = version.artifact.name

    with django_capture_on_commit_callbacks(execute=True):
        model_version_replace_artifact(version=version, artifact=network(seed=2))

    assert version.artifact.name != old
    assert not default_storage.exists(old)
    assert default_storage.exists(version.artifact.name)


def test_a_missing_file_makes_the_version_unavailable_not_a_500(key_client):
    default_storage.delete(iris("v2").artifact.name)

    response = key_client.post(
        "/api/v1/predict", {"input_data": ROW, "model_version": "v2"}, format="json"
    )

    assert response.status_code == 503
    assert "missing from the storage" in response.json()["detail"]


def test_a_storage_without_local_paths_serves_as_well(settings, models_client):
    """Storages such as S3 keep no file on this host: a process copies one to load it."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    data = network(seed=9)

    response = upload(models_client, data, "v3")

    assert response.status_code == 201, response.content
    version = iris("v3")
    assert default_storage.open(version.artifact.name).read() == data
    assert not Path(default_storage.path(version.artifact.name)).exists()  # no file on disk
    assert np.isclose(sum(predict(models_client, "v3")), 1.0)
