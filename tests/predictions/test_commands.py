"""The management commands ``seed_demo`` and ``createapikey``, run as an operator would."""

import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts import crypto
from accounts.models import ApiKey, User
from predictions.models import MLModel, ModelVersion

RAW_KEY = re.compile(r"mlp_[0-9A-Za-z]{12}_[0-9A-Za-z]{46}")
IRIS = {"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris"}


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# --- seed_demo --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_seed_demo_is_idempotent_and_keeps_the_key_it_printed_first(db, client_for):
    first = run("seed_demo")
    second = run("seed_demo")

    assert MLModel.objects.count() == 3
    assert ModelVersion.objects.count() == 5  # iris v1, v2; breast-cancer v1; digits v1, v1-onnx
    assert sorted(MLModel.objects.values_list("name", flat=True)) == [
        "breast-cancer",
        "digits",
        "iris",
    ]
    assert User.objects.filter(username="admin").count() == 1
    assert User.objects.filter(username="demo").count() == 1
    active = ApiKey.objects.filter(owner__username="demo", name="demo", revoked_at=None)
    first_key = first.strip().splitlines()[-1]
    assert active.get().hashed_key == crypto.hash_key(first_key)
    assert not RAW_KEY.search(second)  # no new key: the one exported from the first run works
    assert f"(mlp_{active.get().lookup}_...) stays valid" in second
    assert client_for(first_key).get("/api/v1/models").status_code == 200


def test_seed_demo_new_key_replaces_the_demo_key(db, client_for, var_dir):
    first_key = run("seed_demo").strip().splitlines()[-1]

    second_key = run("seed_demo", "--new-key").strip().splitlines()[-1]

    assert RAW_KEY.fullmatch(second_key) and second_key != first_key
    assert client_for(second_key).get("/api/v1/models").status_code == 200
    assert client_for(first_key).get("/api/v1/models").status_code == 401
    assert f"demo API key: {second_key}" in (var_dir / "demo-credentials").read_text()


def test_seed_demo_keeps_the_passwords_and_key_in_a_file_only_its_owner_reads(db, var_dir):
    first = run("seed_demo")
    second = run("seed_demo")

    path = var_dir / "demo-credentials"
    assert path.stat().st_mode & 0o777 == 0o600
    passwords = dict(re.findall(r"created user '(\w+)' with password (\S+)", first))
    kept = path.read_text()
    assert f"admin password: {passwords['admin']}" in kept
    assert f"demo password: {passwords['demo']}" in kept
    assert f"demo API key: {first.strip().splitlines()[-1]}" in kept
    assert str(path) in second and "changepassword" in second


def test_seed_demo_prints_the_first_key_and_it_authenticates(db, client_for):
    key = run("seed_demo").strip().splitlines()[-1]

    response = client_for(key).get("/api/v1/models")

    assert response.status_code == 200
    assert {m["name"] for m in response.json()} == {"iris", "breast-cancer", "digits"}


def test_seed_demo_prints_the_passwords_of_new_users_only_the_first_time(db, client):
    first = run("seed_demo")
    second = run("seed_demo")

    passwords = dict(re.findall(r"created user '(\w+)' with password (\S+)", first))
    assert set(passwords) == {"admin", "demo"}
    assert "created user" not in second
    assert client.login(username="admin", password=passwords["admin"])
    assert User.objects.get(username="admin").is_superuser
    assert User.objects.get(username="demo").check_password(passwords["demo"])


def test_seed_demo_stores_each_versions_holdout_accuracy(db):
    run("seed_demo")

    for version in ModelVersion.objects.all():
        assert version.metrics["holdout_accuracy"] > 0.9, version


def test_seed_demo_no_key_issues_no_key(db):
    out = run("seed_demo", "--no-key")

    assert not RAW_KEY.search(out)
    assert not ApiKey.objects.exists()


# --- createapikey -----------------------------------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_createapikey_prints_only_a_key_that_carries_exactly_the_given_scopes(client_for):
    out = run("createapikey", "demo", "--scopes", "predict,read", "--name", "ci")

    raw = out.strip()
    assert RAW_KEY.fullmatch(raw), out
    key = ApiKey.objects.get(hashed_key=crypto.hash_key(raw))
    assert key.owner.username == "demo"
    assert key.name == "ci"
    assert key.scopes == ["predict", "read"]
    client = client_for(raw)
    predicted = client.post("/api/v1/predict", json.dumps(IRIS), content_type="application/json")
    assert predicted.status_code == 200
    assert predicted.json()["label"] == "setosa"
    assert client.get("/api/v1/predictions").status_code == 200
    managing = client.post("/api/v1/keys", {"name": "more", "scopes": ["predict"]}, format="json")
    assert managing.status_code == 403


@pytest.mark.usefixtures("demo_models")
def test_a_key_from_createapikey_lacks_the_scopes_it_was_not_given(client_for):
    raw = run("createapikey", "demo", "--scopes", "predict").strip()

    response = client_for(raw).get("/api/v1/predictions")

    assert response.status_code == 403
    assert "'read'" in response.json()["detail"]


@pytest.mark.usefixtures("demo_models")
@pytest.mark.parametrize(
    ("username", "scopes", "message"),
    [
        ("nobody", "predict", "'nobody'"),
        ("demo", "predict,admin", "'admin'"),
        ("eve", "batch", "'batch'"),
    ],
    ids=["unknown-user", "unknown-scope", "scope-the-user-lacks"],
)
def test_createapikey_refuses_with_a_message_naming_the_problem(username, scopes, message):
    User.objects.create_user("eve", password="eve-pass-123")  # holds no scope at all

    with pytest.raises(CommandError, match=message):
        run("createapikey", username, "--scopes", scopes)

    assert not ApiKey.objects.exists()
