"""Fuzzing from the contract: schemathesis drives every documented operation of a live server.

The schema at ``/api/schema/`` is the contract. schemathesis generates requests from it (schema
examples, boundary values, then valid and invalid random inputs) and checks every answer, of the
v1 API and of the Open Inference Protocol (/v2) alike: no 5xx, and a status code, content type,
body and headers that the schema documents.
Requests go out with a valid API key, or a JWT for the operations API keys may not use (API keys
and the webhook secret). Half of the generated cases name real objects (a model, a prediction,
a batch job, an API key) so that fuzzed inputs reach the code behind the lookups, not only the
404s. The figures of a run (requests, operations, statuses) are printed at the end.
"""

import collections
import json
import zlib

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.servers import start_server

pytestmark = pytest.mark.e2e

# Generated cases per operation and phase; about a minute for the whole API on two cores.
MAX_EXAMPLES = 30
# Rate limits out of the way: the fuzzer would otherwise mostly meet 429 (tested elsewhere).
FUZZ_ENV = {
    "MLPLATFORM_RATE_LIMITS": "predict=100000/m,api=100000/m,batch=100000/m,auth=100000/m,"
    "stream=100000/m",
    "MLPLATFORM_USER_RATE_LIMITS": "predict=100000/m,api=100000/m,batch=100000/m,stream=100000/m",
    "JWT_ACCESS_MINUTES": "60",
    "MLPLATFORM_STREAM_HEARTBEAT_SECONDS": "1",
}

# Operations of the protocol the server does not support: their documented answer is a 501.
UNSUPPORTED = ("/v2/repository/models/",)

TALLY: dict = {
    "requests": 0,
    "deadlines": 0,
    "unsupported": 0,
    "operations": set(),
    "statuses": collections.Counter(),
}


def _asked_for_a_deadline(case, response) -> bool:
    """A 504 for the timeout the request set: ``timeout`` (v1) or ``parameters.timeout`` (v2)."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path.startswith("/v2"):
        parameters = body.get("parameters")
        return (
            isinstance(parameters, dict)
            and "timeout" in parameters
            and "timeout" in response.json().get("error", "")
        )
    return "timeout" in body and response.json().get("code") == "inference_timeout"


def no_server_error(ctx, response, case):
    """schemathesis's not_a_server_error, but for the 504 a caller asks for with ``timeout`` and
    the 501 of an operation the server does not support.

    ``{"timeout": 1e-06}`` (or a V2 request's ``parameters.timeout`` of a microsecond) is a valid
    request whose documented answer is 504: the caller's own deadline, not a fault of the server.
    """
    if response.status_code == 504 and _asked_for_a_deadline(case, response):
        TALLY["deadlines"] += 1
        return True
    if response.status_code == 501 and case.operation.path.startswith(UNSUPPORTED):
        TALLY["unsupported"] += 1
        return True
    return not_a_server_error(ctx, response, case)


CONTRACT_CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
USER_LOGIN_ONLY = ("/api/v1/keys", "/api/v1/webhooks/")
MODELS = ("iris", "breast-cancer", "digits")
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def _contract() -> dict:
    """The OpenAPI document of this code base, as ``/api/schema/`` serves it."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


# Built at collection, so that each operation is a test of its own (schemathesis's lazy loader
# does not run on pytest 9.2); the live server's copy is compared with it below.
CONTRACT = _contract()
schema = schemathesis.openapi.from_dict(
    CONTRACT,
    config=schemathesis.Config.from_dict(
        {"generation": {"mode": "all", "max-examples": MAX_EXAMPLES}}
    ),
)


@pytest.fixture(scope="module")
def fuzz_target(instance, _servers_stopped) -> dict:
    """A server with generous rate limits, its credentials and some real objects to point at."""
    server = start_server(instance, "fuzz", env=FUZZ_ENV)
    _servers_stopped.append(server)
    key = {"X-API-Key": instance.demo_key}
    # The admin's JWT manages the admin's keys: a fuzzed DELETE /keys/{id} can then never revoke
    # the demo key the other operations use.
    token = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "admin", "password": instance.passwords["admin"]},
        timeout=10,
    ).json()
    bearer = {"Authorization": f"Bearer {token['access']}"}
    prediction = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": IRIS_ROW, "model": "iris"},
        headers=key,
        timeout=10,
    ).json()
    job = requests.post(
        server.url("/api/v1/predict/batch"),
        json={"inputs": [IRIS_ROW] * 3, "model": "iris"},
        headers=key,
        timeout=10,
    ).json()
    spare_key = requests.post(
        server.url("/api/v1/keys"),
        json={"name": "fuzzed", "scopes": ["read"]},
        headers=bearer,
        timeout=10,
    ).json()
    yield {
        "server": server,
        "key": key,
        "bearer": bearer,
        "ids": {
            "/api/v1/predict/{id}": prediction["prediction_id"],
            "/api/v1/predictions/{id}/feedback": prediction["prediction_id"],
            "/api/v1/predict/batch/{id}": job["job_id"],
            "/api/v1/keys/{id}": spare_key["id"],
        },
    }
    server.stop_soon()


def test_the_live_server_serves_the_contract_that_is_fuzzed(fuzz_target):
    served = requests.get(
        fuzz_target["server"].url("/api/schema/"),
        headers={"Accept": "application/vnd.oai.openapi+json"},
        timeout=30,
    )

    assert served.status_code == 200
    assert served.json() == CONTRACT


def _realistic(case, ids: dict) -> None:
    """Point half of the cases at real objects; the rest keep what was generated."""
    seed = zlib.crc32(repr((case.operation.label, case.body, case.path_parameters)).encode())
    if seed % 2:
        return
    model = MODELS[(seed >> 1) % len(MODELS)]
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = model
        case.body.pop("model_version", None)
    parameters = case.path_parameters or {}
    if "name" in parameters:
        parameters["name"] = model
    if "version" in parameters:
        parameters["version"] = "v1"
    if "id" in parameters:
        for path, value in ids.items():
            if case.operation.path.startswith(path):
                parameters["id"] = value


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_every_documented_operation_answers_within_its_contract(case, fuzz_target):
    _realistic(case, fuzz_target["ids"])
    path = case.operation.path
    headers = fuzz_target["bearer"] if path.startswith(USER_LOGIN_ONLY) else fuzz_target["key"]
    response = case.call(base_url=fuzz_target["server"].base_url, headers=headers, timeout=30)
    TALLY["requests"] += 1
    TALLY["operations"].add(case.operation.label)
    TALLY["statuses"][response.status_code] += 1
    case.validate_response(response, checks=CONTRACT_CHECKS, headers=headers)


def test_the_figures_of_the_run_are_reported(capsys):
    """Prints what the fuzzer did (SECURITY.md quotes it); fails if it did nothing."""
    if not TALLY["requests"]:
        pytest.skip("the fuzz test did not run in this session")
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(TALLY["statuses"].items()))
    with capsys.disabled():
        print(
            f"\nschemathesis: {TALLY['requests']} requests over {len(TALLY['operations'])} "
            f"operations; statuses {statuses} ({TALLY['deadlines']} of the 504s: a timeout the "
            f"request itself set; {TALLY['unsupported']} 501s: load and unload, not supported)"
        )
    assert TALLY["operations"] == {
        f"{method.upper()} {path}" for path, item in CONTRACT["paths"].items() for method in item
    }
    server_errors = sum(n for code, n in TALLY["statuses"].items() if code >= 500)
    assert server_errors == TALLY["deadlines"] + TALLY["unsupported"]
