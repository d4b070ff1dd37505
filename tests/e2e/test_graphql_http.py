"""End to end: /graphql over real HTTP, with each kind of credential, limits and errors."""

import re
import time

import pytest
import requests

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
PREDICT = """mutation Predict($row: JSON!) {
  predict(inputData: $row, model: "iris") { predictionId label modelVersion inputData }
}"""
PREDICTION = "query One($id: ID!) { prediction(id: $id) { predictionId label } }"


def post(server, query: str, variables: dict | None = None, headers: dict | None = None):
    return requests.post(
        server.url("/graphql"),
        json={"query": query, "variables": variables or {}},
        headers=headers or {},
        timeout=30,
    )


def gql(server, query: str, variables: dict | None = None, headers: dict | None = None) -> dict:
    response = post(server, query, variables, headers)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(body: dict) -> dict:
    (error,) = body["errors"]
    return {"message": error["message"], **error.get("extensions", {})}


@pytest.fixture(scope="module")
def other_key(instance) -> str:
    """An API key of another user of the 'API users' group."""
    code = (
        "from accounts.models import User\n"
        "from accounts.services import api_key_create\n"
        "from predictions.demo.seed import api_users_group\n"
        "user, _ = User.objects.get_or_create(username='eve-graphql')\n"
        "user.groups.add(api_users_group())\n"
        "print(api_key_create(owner=user, name='e2e', scopes=['predict', 'read', 'batch'])[1])"
    )
    return instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1]


def test_predict_with_an_api_key_is_stored_and_readable_over_rest(server, instance):
    key = {"X-API-Key": instance.demo_key}

    body = gql(server, PREDICT, {"row": SETOSA}, key)

    answer = body["data"]["predict"]
    assert answer["label"] == "setosa" and answer["inputData"] == SETOSA
    read = requests.get(
        server.url(f"/api/v1/predict/{answer['predictionId']}"), headers=key, timeout=10
    )
    assert read.status_code == 200 and read.json()["model_version"] == answer["modelVersion"]


def test_predict_with_a_bearer_token(server, instance):
    token = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "demo", "password": instance.passwords["demo"]},
        timeout=10,
    ).json()["access"]

    body = gql(server, PREDICT, {"row": SETOSA}, {"Authorization": f"Bearer {token}"})
    bad = gql(server, PREDICT, {"row": SETOSA}, {"Authorization": "Bearer not.a.token"})

    assert body["data"]["predict"]["label"] == "setosa"
    assert bad["data"] is None and error_of(bad)["status"] == 401


def _cookies(response: requests.Response) -> dict[str, str]:
    # Read Set-Cookie by hand: on the production profile cookies are Secure, which a cookie
    # jar would not send back over this plain-HTTP test connection.
    return dict(
        re.findall(r"(csrftoken|sessionid)=([^;]+)", response.headers.get("Set-Cookie", ""))
    )


def test_a_session_signed_in_through_the_login_page_predicts_with_its_csrf_token(server, instance):
    login_url = server.url("/api-auth/login/")
    page = requests.get(login_url, timeout=10)
    cookies = _cookies(page)
    form = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed_in = requests.post(
        login_url,
        data={
            "username": "demo",
            "password": instance.passwords["demo"],
            "csrfmiddlewaretoken": form,
            "next": "/graphql",
        },
        headers={
            "Cookie": f"csrftoken={cookies['csrftoken']}",
            "Referer": login_url,
            "Origin": server.base_url,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 302, signed_in.text
    cookies |= _cookies(signed_in)
    session = {
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "Origin": server.base_url,
        "Referer": server.url("/graphql"),
    }

    ide = requests.get(
        server.url("/graphql"), headers={**session, "Accept": "text/html"}, timeout=10
    )
    without = gql(server, PREDICT, {"row": SETOSA}, session)
    with_token = gql(
        server, PREDICT, {"row": SETOSA}, {**session, "X-CSRFToken": cookies["csrftoken"]}
    )

    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
    assert "CSRF" in error_of(without)["message"]
    assert with_token["data"]["predict"]["label"] == "setosa"


def test_graphiql_sends_anonymous_browsers_to_the_login_page(server):
    response = requests.get(
        server.url("/graphql"), headers={"Accept": "text/html"}, allow_redirects=False, timeout=10
    )

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/api-auth/login/?next=/graphql")


def test_another_principals_prediction_and_job_are_not_found(server, instance, other_key):
    mine = {"X-API-Key": instance.demo_key}
    prediction_id = gql(server, PREDICT, {"row": SETOSA}, mine)["data"]["predict"]["predictionId"]
    submitted = gql(
        server, "mutation { predictBatch(inputs: [[5.1, 3.5, 1.4, 0.2]]) { jobId } }", None, mine
    )
    job_id = submitted["data"]["predictBatch"]["jobId"]
    theirs = {"X-API-Key": other_key}

    prediction = gql(server, PREDICTION, {"id": prediction_id}, theirs)
    job = gql(server, "query J($id: ID!) { batchJob(id: $id) { status } }", {"id": job_id}, theirs)
    cancel = gql(
        server,
        "mutation C($id: ID!) { cancelBatchJob(id: $id) { status } }",
        {"id": job_id},
        theirs,
    )
    listed = gql(server, "{ predictions { predictionId } batchJobs { jobId } }", None, theirs)

    assert prediction["data"] == {"prediction": None}
    assert error_of(prediction)["code"] == "prediction_not_found"
    assert job["data"] == {"batchJob": None} and error_of(job)["code"] == "job_not_found"
    assert cancel["data"] is None and error_of(cancel)["status"] == 404
    assert prediction_id not in [p["predictionId"] for p in listed["data"]["predictions"]]
    assert job_id not in [j["jobId"] for j in listed["data"]["batchJobs"]]


def test_a_batch_job_submitted_by_mutation_runs_on_the_worker(server, instance):
    key = {"X-API-Key": instance.demo_key}
    rows = [SETOSA, [6.7, 3.0, 5.2, 2.3]] * 10
    submitted = gql(
        server,
        'mutation S($rows: JSON!) { predictBatch(inputs: $rows, modelVersion: "v1") { jobId } }',
        {"rows": rows},
        key,
    )
    job_id = submitted["data"]["predictBatch"]["jobId"]

    deadline, status = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        job = gql(
            server,
            "query J($id: ID!) { batchJob(id: $id) { status completed totalInputs } }",
            {"id": job_id},
            key,
        )["data"]["batchJob"]
        status = job["status"]
        if status in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.3)

    assert status == "completed"
    assert job["completed"] == job["totalInputs"] == 20
    results = requests.get(
        server.url(f"/api/v1/predict/batch/{job_id}/results"), headers=key, timeout=10
    ).json()
    assert [r["label"] for r in results["results"][:2]] == ["setosa", "virginica"]


def test_the_document_limits_are_enforced(server, instance):
    key = {"X-API-Key": instance.demo_key}
    aliases = " ".join(
        f"p{i}: predict(inputData: [5.1, 3.5, 1.4, 0.2]) {{ label }}" for i in range(16)
    )
    deep = "{ models { versions { liveMetrics { a { b { c { d { e { f { g } } } } } } } } } }"
    many_tokens = "{ models { " + "name " * 1200 + "} }"
    before = requests.get(server.url("/api/v1/predictions"), headers=key, timeout=10).json()

    too_many_aliases = gql(server, f"mutation {{ {aliases} }}", None, key)
    too_deep = gql(server, deep, None, key)
    too_long = gql(server, many_tokens, None, key)
    after = requests.get(server.url("/api/v1/predictions"), headers=key, timeout=10).json()

    assert too_many_aliases["data"] is None
    assert "15" in too_many_aliases["errors"][0]["message"]
    assert "aliases" in too_many_aliases["errors"][0]["message"]
    assert any("exceeds maximum operation depth of 8" in e["message"] for e in too_deep["errors"])
    assert "more than 1000 tokens" in too_long["errors"][0]["message"]
    assert after["count"] == before["count"]  # nothing ran


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ("", "application/json"),
        ('{"query": 42}', "application/json"),
        ('{"query": "{ nope }"}', "application/json"),
        (
            '{"query": "query($n: Int!) { predictions(limit: $n) { label } }", '
            '"variables": {"n": "x"}}',
            "application/json",
        ),
        ('{"query": "{ predictions(limit: -1) { label } }"}', "application/json"),
        ('{"query": "{ prediction(id: \\"x\\") { label } }"}', "application/json"),
        ('{"query": "' + "{" * 3000 + '"}', "application/json"),
        ("query=%7B+models+%7B+name+%7D+%7D", "application/x-www-form-urlencoded"),
        ('[{"query": "{ models { name } }"}]', "application/json"),
    ],
)
def test_bad_requests_get_graphql_errors_never_a_500(server, instance, body, content_type):
    response = requests.post(
        server.url("/graphql"),
        data=body.encode(),
        headers={"X-API-Key": instance.demo_key, "Content-Type": content_type},
        timeout=30,
    )

    assert response.status_code < 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["errors"][0]["message"]


def test_a_mutation_over_get_is_refused(server, instance):
    response = requests.get(
        server.url("/graphql"),
        params={"query": "mutation { predict(inputData: [5.1, 3.5, 1.4, 0.2]) { label } }"},
        headers={"X-API-Key": instance.demo_key},
        timeout=10,
    )

    assert response.status_code in (400, 405)
    assert response.json()["errors"][0]["message"]
