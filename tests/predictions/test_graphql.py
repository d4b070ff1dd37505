"""GraphQL at /graphql: the REST API's services, auth, scopes, messages; limits; GraphiQL."""

import base64
import hashlib
import re

import pytest
from django.test import Client
from graphql import GraphQLError
from rest_framework.test import APIClient

from predictions.batch.jobs import batch_job_process
from predictions.graphql.errors import platform_error
from predictions.graphql.views import same_origin
from predictions.management.commands.graphql_schema import SCHEMA_FILE, schema_text
from predictions.models import BatchJob, Prediction

SETOSA = [5.1, 3.5, 1.4, 0.2]
PREDICT = """
mutation Predict($row: JSON!, $version: String, $timeout: Float) {
  predict(inputData: $row, model: "iris", modelVersion: $version, timeout: $timeout) {
    predictionId model modelVersion prediction label confidence cached routing inputData
  }
}
"""
PREDICTION = "query One($id: ID!) { prediction(id: $id) { predictionId label prediction } }"


def gql(client, query: str, variables: dict | None = None, **extra):
    response = client.post(
        "/graphql",
        {"query": query, "variables": variables or {}},
        content_type="application/json",
        **extra,
    )
    assert response.status_code == 200, response.content
    return response.json()


def key_headers(key: str) -> dict:
    return {"HTTP_X_API_KEY": key}


def error_of(body: dict) -> dict:
    (error,) = body["errors"]
    return {"message": error["message"], **error.get("extensions", {})}


@pytest.fixture
def key(user, make_key) -> str:
    return make_key(user)


# --- the exported schema --------------------------------------------------------------------


def test_the_committed_schema_file_matches_the_code():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "schema.graphql is out of date: run 'python manage.py graphql_schema' and commit it"
    )


# --- predict, with each kind of credential ----------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_predict_with_an_api_key_stores_the_prediction_as_rest_shows_it(client, key):
    body = gql(client, PREDICT, {"row": SETOSA, "version": "v1"}, **key_headers(key))

    answer = body["data"]["predict"]
    assert "errors" not in body
    assert answer["label"] == "setosa" and answer["modelVersion"] == "v1"
    assert answer["routing"] == "explicit" and answer["inputData"] == SETOSA
    stored = Prediction.objects.get()
    assert str(stored.id) == answer["predictionId"] and stored.api_key.owner.username == "alice"
    rest = APIClient()
    rest.credentials(HTTP_X_API_KEY=key)
    read = rest.get(f"/api/v1/predict/{answer['predictionId']}").json()
    assert read["prediction"] == answer["prediction"] and read["confidence"] == answer["confidence"]


@pytest.mark.usefixtures("demo_models")
def test_predict_with_a_bearer_token(client, user):
    tokens = APIClient().post(
        "/api/v1/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json"
    )
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {tokens.json()['access']}"}

    body = gql(client, PREDICT, {"row": SETOSA}, **bearer)

    assert body["data"]["predict"]["label"] == "setosa"
    assert Prediction.objects.get().owner == user


@pytest.mark.usefixtures("demo_models")
def test_a_session_needs_its_csrf_token_for_a_mutation(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/graphql", HTTP_ACCEPT="text/html")  # GraphiQL sets the CSRF cookie
    token = browser.cookies["csrftoken"].value

    refused = gql(browser, PREDICT, {"row": SETOSA})
    accepted = gql(browser, PREDICT, {"row": SETOSA}, HTTP_X_CSRFTOKEN=token)

    assert refused["data"] is None
    assert error_of(refused)["code"] == "permission_denied"
    assert "CSRF" in error_of(refused)["message"]
    assert accepted["data"]["predict"]["label"] == "setosa"
    assert Prediction.objects.count() == 1


# --- auth and scopes ------------------------------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_without_credentials_fields_are_refused_but_introspection_answers(client):
    refused = gql(client, PREDICT, {"row": SETOSA})
    typename = gql(client, "{ __schema { queryType { name } } }")

    assert refused["data"] is None
    assert error_of(refused) == {
        "message": "Authentication credentials were not provided.",
        "code": "not_authenticated",
        "status": 401,
    }
    assert typename["data"]["__schema"]["queryType"]["name"] == "Query"


@pytest.mark.usefixtures("demo_models")
def test_a_revoked_or_malformed_key_is_refused_with_the_rest_message(client, user, make_key):
    from accounts.models import ApiKey
    from accounts.services import api_key_revoke

    key = make_key(user)
    api_key_revoke(key=ApiKey.objects.get())

    revoked = gql(client, PREDICT, {"row": SETOSA}, **key_headers(key))
    malformed = gql(client, PREDICT, {"row": SETOSA}, **key_headers("nonsense"))

    assert error_of(revoked)["code"] == "revoked_api_key"
    assert error_of(malformed) == {
        "message": "Malformed API key.",
        "code": "malformed_api_key",
        "status": 401,
    }
    assert Prediction.objects.count() == 0


@pytest.mark.usefixtures("demo_models")
def test_each_operation_needs_the_scope_its_rest_endpoint_needs(client, user, make_key):
    read_only = key_headers(make_key(user, scopes=["read"]))
    predict_only = key_headers(make_key(user, scopes=["predict"]))

    predict = gql(client, PREDICT, {"row": SETOSA}, **read_only)
    batch = gql(client, "mutation { predictBatch(inputs: [[1,2,3,4]]) { jobId } }", **read_only)
    listing = gql(client, "{ predictions { predictionId } }", **predict_only)
    jobs = gql(client, "{ batchJobs { jobId } }", **predict_only)
    models = gql(client, "{ models { name } }", **predict_only)

    assert error_of(predict) == {
        "message": "This API key lacks the 'predict' scope.",
        "code": "missing_scope",
        "status": 403,
    }
    assert error_of(batch)["message"] == "This API key lacks the 'batch' scope."
    assert error_of(listing)["message"] == "This API key lacks the 'read' scope."
    assert error_of(jobs)["message"] == "This credential lacks the 'read' or 'batch' scope."
    assert [m["name"] for m in models["data"]["models"]] == ["breast-cancer", "digits", "iris"]
    assert Prediction.objects.count() == 0 and BatchJob.objects.count() == 0


@pytest.mark.usefixtures("demo_models")
def test_another_users_prediction_resolves_to_null_with_a_not_found_error(
    client, user, other_user, make_key
):
    mine = gql(client, PREDICT, {"row": SETOSA}, **key_headers(make_key(user)))
    prediction_id = mine["data"]["predict"]["predictionId"]

    theirs = gql(client, PREDICTION, {"id": prediction_id}, **key_headers(make_key(other_user)))
    bogus = gql(client, PREDICTION, {"id": "not-a-uuid"}, **key_headers(make_key(other_user)))

    assert theirs["data"] == {"prediction": None}
    assert error_of(theirs) == {
        "message": f"No prediction {prediction_id}.",
        "code": "prediction_not_found",
        "status": 404,
    }
    assert bogus["data"] == {"prediction": None}
    assert error_of(bogus)["code"] == "prediction_not_found"


# --- queries --------------------------------------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_predictions_are_listed_newest_first_filtered_and_limited(client, key):
    for version in ("v1", "v2", "v1"):
        gql(client, PREDICT, {"row": SETOSA, "version": version}, **key_headers(key))
    ids = list(Prediction.objects.values_list("id", flat=True))  # newest first
    query = """query List($after: DateTime) {
      all: predictions { predictionId }
      v1: predictions(version: "v1", limit: 1) { predictionId modelVersion }
      later: predictions(after: $after) { predictionId }
      none: predictions(model: "digits") { predictionId }
    }"""
    second = Prediction.objects.get(pk=ids[1])

    data = gql(client, query, {"after": second.created_at.isoformat()}, **key_headers(key))["data"]

    assert [p["predictionId"] for p in data["all"]] == [str(i) for i in ids]
    assert data["v1"] == [{"predictionId": str(ids[0]), "modelVersion": "v1"}]
    assert [p["predictionId"] for p in data["later"]] == [str(ids[0]), str(ids[1])]
    assert data["none"] == []


@pytest.mark.usefixtures("demo_models")
def test_models_show_what_the_rest_api_shows(client, key):
    rest = APIClient()
    rest.credentials(HTTP_X_API_KEY=key)
    expected = rest.get("/api/v1/models/iris").json()

    query = """{ model(name: "iris") { name task featureNames labels defaultVersion
      latestVersion cacheTtl versions { label status trafficWeight isDefault
      liveMetrics { feedbackCount } } } }"""
    data = gql(client, query, **key_headers(key))["data"]["model"]
    unknown = gql(client, '{ model(name: "nope") { name } }', **key_headers(key))

    assert data["featureNames"] == expected["feature_names"]
    assert data["defaultVersion"] == expected["default_version"]
    assert data["latestVersion"] == expected["latest_version"]
    assert [(v["label"], v["trafficWeight"], v["isDefault"]) for v in data["versions"]] == [
        (v["label"], v["traffic_weight"], v["is_default"]) for v in expected["versions"]
    ]
    assert error_of(unknown)["code"] == "model_not_found"


# --- validation: the REST API's messages ----------------------------------------------------


@pytest.mark.usefixtures("demo_models")
@pytest.mark.parametrize(
    ("variables", "rest_body"),
    [
        ({"row": [1, 2, 3]}, {"input_data": [1, 2, 3]}),
        ({"row": [1, 2, "x", 4]}, {"input_data": [1, 2, "x", 4]}),
        ({"row": []}, {"input_data": []}),
        ({"row": SETOSA, "timeout": 9999}, {"input_data": SETOSA, "timeout": 9999}),
        ({"row": SETOSA, "version": "v9"}, {"input_data": SETOSA, "model_version": "v9"}),
    ],
)
def test_bad_input_gets_the_rest_apis_message_and_code(client, key, variables, rest_body):
    rest = APIClient()
    rest.credentials(HTTP_X_API_KEY=key)
    expected = rest.post("/api/v1/predict", {"model": "iris", **rest_body}, format="json")

    body = gql(client, PREDICT, variables, **key_headers(key))

    assert body["data"] is None
    assert error_of(body) == {
        "message": expected.json()["detail"],
        "code": expected.json()["code"],
        "status": expected.status_code,
    }
    assert Prediction.objects.count() == 0


# --- batch jobs -----------------------------------------------------------------------------

SUBMIT = """mutation Submit($rows: JSON!) {
  predictBatch(inputs: $rows, model: "iris", modelVersion: "v1") {
    jobId status totalInputs modelVersion links
  }
}"""
JOB = "query Job($id: ID!) { batchJob(id: $id) { jobId status completed progress error } }"


@pytest.mark.usefixtures("demo_models")
def test_a_batch_job_is_submitted_followed_to_the_end_and_listed(client, key):
    submitted = gql(client, SUBMIT, {"rows": [SETOSA] * 7}, **key_headers(key))["data"]
    job_id = submitted["predictBatch"]["jobId"]
    queued = gql(client, JOB, {"id": job_id}, **key_headers(key))["data"]["batchJob"]

    batch_job_process(job_id=job_id)
    done = gql(client, JOB, {"id": job_id}, **key_headers(key))["data"]["batchJob"]
    listed = gql(client, '{ batchJobs(status: "completed") { jobId } }', **key_headers(key))

    assert submitted["predictBatch"]["status"] == "queued"
    assert submitted["predictBatch"]["totalInputs"] == 7
    assert submitted["predictBatch"]["links"]["events"].endswith(f"/{job_id}/events")
    assert queued["status"] == "queued" and queued["completed"] == 0
    assert done == {
        "jobId": job_id,
        "status": "completed",
        "completed": 7,
        "progress": 1.0,
        "error": None,
    }
    assert listed["data"]["batchJobs"] == [{"jobId": job_id}]


@pytest.mark.usefixtures("demo_models")
def test_a_bad_batch_row_is_named_as_rest_names_it(client, key):
    body = gql(client, SUBMIT, {"rows": [SETOSA, [1, 2, "oops", 4]]}, **key_headers(key))

    assert error_of(body) == {
        "message": "inputs[1][2] must be a number, got string",
        "code": "invalid_input",
        "status": 400,
    }
    assert BatchJob.objects.count() == 0


@pytest.mark.usefixtures("demo_models")
def test_a_job_is_cancelled_by_its_owner_only(client, user, other_user, make_key):
    mine = key_headers(make_key(user))
    job_id = gql(client, SUBMIT, {"rows": [SETOSA]}, **mine)["data"]["predictBatch"]["jobId"]
    cancel = "mutation Cancel($id: ID!) { cancelBatchJob(id: $id) { status cancelRequested } }"

    theirs = gql(client, cancel, {"id": job_id}, **key_headers(make_key(other_user)))
    peek = gql(client, JOB, {"id": job_id}, **key_headers(make_key(other_user)))
    cancelled = gql(client, cancel, {"id": job_id}, **mine)

    assert theirs["data"] is None and error_of(theirs)["code"] == "job_not_found"
    assert peek["data"] == {"batchJob": None} and error_of(peek)["status"] == 404
    assert cancelled["data"]["cancelBatchJob"] == {"status": "cancelled", "cancelRequested": True}


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_a_document_deeper_than_the_limit_is_refused_before_it_runs(client, key, settings):
    settings.PLATFORM = {**settings.PLATFORM, "GRAPHQL_MAX_DEPTH": 2}

    deep = gql(client, "{ models { versions { liveMetrics { accuracy } } } }", **key_headers(key))
    shallow = gql(client, "{ models { versions { label } } }", **key_headers(key))

    assert deep["data"] is None
    assert "exceeds maximum operation depth of 2" in deep["errors"][0]["message"]
    assert "errors" not in shallow


@pytest.mark.usefixtures("demo_models")
def test_more_aliases_than_the_limit_are_refused_and_nothing_is_predicted(client, key, settings):
    settings.PLATFORM = {**settings.PLATFORM, "GRAPHQL_MAX_ALIASES": 3}
    fields = " ".join(
        f"p{i}: predict(inputData: [5.1, 3.5, 1.4, 0.2]) {{ label }}" for i in range(4)
    )

    body = gql(client, f"mutation {{ {fields} }}", **key_headers(key))

    assert body["data"] is None
    assert "aliases" in body["errors"][0]["message"]
    assert Prediction.objects.count() == 0


def test_a_document_of_more_tokens_than_the_limit_is_refused(client, key, settings):
    settings.PLATFORM = {**settings.PLATFORM, "GRAPHQL_MAX_TOKENS": 20}

    body = gql(
        client,
        "{ models { name task labels featureNames nFeatures cacheTtl " + "name " * 20 + "} }",
        **key_headers(key),
    )

    assert body["data"] is None
    assert "more than 20 tokens" in body["errors"][0]["message"]


# --- errors are GraphQL errors --------------------------------------------------------------


def test_a_request_strawberry_cannot_run_gets_a_graphql_error_body(client):
    malformed = client.post("/graphql", "{not json", content_type="application/json")
    mutation_by_get = client.get(
        "/graphql", {"query": "mutation { cancelBatchJob(id: 1) { status } }"}
    )

    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["message"].startswith("Malformed JSON: ")
    assert mutation_by_get.status_code == 400
    assert mutation_by_get.json()["errors"][0]["extensions"]["code"] == "bad_request"


def test_an_unexpected_failure_is_masked_with_a_server_error_code():
    try:
        raise RuntimeError("secret internals")
    except RuntimeError as exc:
        error = GraphQLError("secret internals", original_error=exc, path=["predict"])

    shown = platform_error(error)

    assert shown.message == "Internal server error."
    assert shown.extensions == {"code": "server_error", "status": 500}
    assert shown.path == ["predict"]


# --- GraphiQL -------------------------------------------------------------------------------


def test_graphiql_is_for_signed_in_users(client, user):
    anonymous = client.get("/graphql", HTTP_ACCEPT="text/html")
    client.force_login(user)
    signed_in = client.get("/graphql", HTTP_ACCEPT="text/html")

    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/api-auth/login/?next=/graphql")
    assert signed_in.status_code == 200
    assert b"graphiql" in signed_in.content.lower()


def test_graphiql_is_open_to_anyone_in_debug(client, settings):
    settings.DEBUG = True

    assert client.get("/graphql", HTTP_ACCEPT="text/html").status_code == 200


def _assets(page: str) -> list[str]:
    """The scripts and stylesheets a page loads."""
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    stylesheets = re.findall(r'<link[^>]*\srel="stylesheet"[^>]*\shref="([^"]+)"', page)
    stylesheets += re.findall(r'<link[^>]*\shref="([^"]+)"[^>]*\srel="stylesheet"', page)
    return scripts + stylesheets


def _served(client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, url
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_graphiql_loads_every_script_and_stylesheet_from_this_server(client, user):
    client.force_login(user)
    page = client.get("/graphql", HTTP_ACCEPT="text/html").content.decode()

    assets = _assets(page)
    assert len(assets) == 7, assets  # React, ReactDOM, js-cookie, GraphiQL and its explorer
    assert all(url.startswith("/static/graphiql/") for url in assets), assets
    assert "unpkg" not in page and "integrity=" not in page
    for url in assets:
        assert len(_served(client, url)) > 500, url


def test_the_served_files_are_the_versions_strawberrys_page_names(client, user):
    """Each file is the CDN's, byte for byte, but for the source-map comment left out."""
    from strawberry.http.ides import get_graphql_ide_html

    original = get_graphql_ide_html(graphql_ide="graphiql")
    expected = dict(
        re.findall(r'(?:src|href)="(https://unpkg\.com/[^"]+)"\s+integrity="([^"]+)"', original)
    )
    client.force_login(user)
    page = client.get("/graphql", HTTP_ACCEPT="text/html").content.decode()
    assert len(expected) == len(_assets(page)) == 7

    for cdn_url, integrity in expected.items():
        local = same_origin(f'"{cdn_url}"').strip('"')
        content = _served(client, local)
        name = cdn_url.rsplit("/", 1)[-1]
        comment = {"js": b"//# sourceMappingURL=%s.map", "css": b"/*# sourceMappingURL=%s.map*/"}
        candidates = [content, content + comment[name.rsplit(".", 1)[-1]] % name.encode()]
        digests = [
            "sha384-" + base64.b64encode(hashlib.sha384(c).digest()).decode() for c in candidates
        ]
        assert integrity in digests, cdn_url


@pytest.mark.usefixtures("demo_models")
def test_each_predict_field_counts_against_the_rest_predict_rate_limit(client, key, settings):
    from mlplatform.conf import DEFAULTS

    settings.PLATFORM = {
        **settings.PLATFORM,
        "RATE_LIMITS": {**DEFAULTS["RATE_LIMITS"], "predict": "3/h"},
    }
    two = "mutation { a: predict(inputData: [5.1, 3.5, 1.4, 0.2]) { label } "
    two += "b: predict(inputData: [5.1, 3.5, 1.4, 0.2]) { label } }"

    first = gql(client, two, **key_headers(key))
    second = gql(client, two, **key_headers(key))

    assert "errors" not in first
    assert second["data"] is None  # the second field is refused; both are non-null fields
    error = error_of(second)
    assert error["code"] == "rate_limited" and error["status"] == 429
    assert "'predict'" in error["message"]
    assert Prediction.objects.count() == 3
