"""The OpenAPI document at ``/api/schema/`` is valid, and its bodies are ones a client can send.

An independent validator (openapi-spec-validator) checks the document against the OpenAPI 3.0
specification. A body is documented in the media types the operation takes as documented: a
form or multipart body only where the operation's contract is one (the login form, a batch file
upload, a model artifact upload), with properties a form can carry, and a schema of its own, so
that a generated client can tell which encoding to send. The login is documented as the
tutorial's form only (it takes JSON as well): openapi-python-client writes code that cannot be
imported for a required body of several media types on an operation without optional
parameters.
"""

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator
from rest_framework.test import APIClient

FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _bodies(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                yield f"{method.upper()} {path}", operation["requestBody"]["content"]


def _resolved(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_the_schema_is_valid_openapi_3_0(schema):
    assert schema["openapi"] == "3.0.3"
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in OpenAPIV30SpecValidator(schema).iter_errors()
    ]

    assert errors == []


def test_json_bodies_are_documented_as_json_only(schema):
    forms = {
        operation: sorted(media for media in content if media in FORMS)
        for operation, content in _bodies(schema)
    }

    assert {operation: media for operation, media in forms.items() if media} == {
        "POST /api/v1/auth/login": ["application/x-www-form-urlencoded"],
        "POST /api/v1/predict/batch": ["multipart/form-data"],
        "POST /api/v1/predict/batch/api-key": ["multipart/form-data"],
        "POST /api/v1/models/{name}/versions": ["multipart/form-data"],
    }
    for operation in (
        "POST /api/v1/models",
        "POST /api/v1/predict",
        "POST /api/v1/predict/ab-test",
        "POST /api/v1/predict/stream",
        "POST /api/v1/predictions/{id}/feedback",
    ):
        assert forms[operation] == [], operation


def test_each_media_type_of_a_body_has_a_schema_of_its_own(schema):
    for operation, content in _bodies(schema):
        refs = [media["schema"]["$ref"] for media in content.values() if "$ref" in media["schema"]]

        assert len(refs) == len(set(refs)), operation


def test_form_bodies_hold_only_what_a_form_carries(schema):
    """Strings, numbers, booleans and files: arrays and objects need JSON (or an encoding)."""
    for operation, content in _bodies(schema):
        for media in set(content) & set(FORMS):
            encoded = content[media].get("encoding", {})
            properties = _resolved(schema, content[media]["schema"])["properties"]
            for name, node in properties.items():
                node = _resolved(schema, node.get("allOf", [node])[0])
                if name not in encoded:
                    assert node.get("type") not in ("array", "object"), (operation, name)
                    assert "oneOf" not in node or all(
                        choice.get("type") not in ("array", "object") for choice in node["oneOf"]
                    ), (operation, name)


def test_a_batch_is_documented_as_json_rows_or_an_uploaded_file(schema):
    content = schema["paths"]["/api/v1/predict/batch"]["post"]["requestBody"]["content"]
    rows = _resolved(schema, content["application/json"]["schema"])
    upload = _resolved(schema, content["multipart/form-data"]["schema"])

    assert rows["required"] == ["inputs"]
    assert "file" not in rows["properties"]
    assert upload["required"] == ["file"]
    assert upload["properties"]["file"] == {
        "type": "string",
        "format": "binary",
        "description": "CSV (header optional), NPY float array, or JSONL rows.",
    }
    assert "inputs" not in upload["properties"]


def test_a_new_version_is_documented_as_a_file_upload_or_a_remote_server_in_json(schema):
    operation = schema["paths"]["/api/v1/models/{name}/versions"]["post"]
    content = operation["requestBody"]["content"]
    upload = _resolved(schema, content["multipart/form-data"]["schema"])
    remote_operation = schema["paths"]["/api/v1/models/{name}/remote-versions"]["post"]
    remote_content = remote_operation["requestBody"]["content"]
    remote = _resolved(schema, remote_content["application/json"]["schema"])

    assert list(content) == ["multipart/form-data"]
    assert upload["required"] == ["artifact"]
    assert upload["properties"]["artifact"]["format"] == "binary"
    assert {"label", "status", "traffic_weight", "labels"} <= set(upload["properties"])
    assert {"201", "400", "403", "404", "409", "413"} <= set(operation["responses"])
    assert list(remote_content) == ["application/json"]
    assert sorted(remote["required"]) == ["remote_model", "remote_url"]
    assert remote["properties"]["remote_credential"]["writeOnly"] is True
    assert {"201", "400", "403", "404", "409", "502"} <= set(remote_operation["responses"])


def test_a_new_model_is_documented_as_json(schema):
    operation = schema["paths"]["/api/v1/models"]["post"]
    body = _resolved(schema, operation["requestBody"]["content"]["application/json"]["schema"])

    assert list(operation["requestBody"]["content"]) == ["application/json"]
    assert sorted(body["required"]) == ["name", "task"]
    assert "201" in operation["responses"]
