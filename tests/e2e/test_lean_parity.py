"""The lean handlers answer exactly as the DRF views they stand in front of.

Two servers on one instance: one as it runs (lean handlers on), one with every request going
through Django and DRF (``MLPLATFORM_LEAN_HANDLERS=0``). Each request of a corpus (good and bad
bodies, every credential, every error, the cases the lean handler hands over) goes to both,
and the answers must agree: status, headers, body, and the stored prediction. The lean
server's ``mlplatform_lean_requests_total`` shows which requests it served itself.
"""

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server, start_server

pytestmark = pytest.mark.e2e

IRIS = [5.1, 3.5, 1.4, 0.2]
DIGITS = [float(i % 16) for i in range(64)]
NAMED = dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], IRIS, strict=True))
# Volatile by nature: when and how long, and the new row's id.
VOLATILE_FIELDS = ("prediction_id", "timestamp", "processing_time")
VOLATILE_HEADERS = ("date", "server", "content-length", "x-ratelimit-reset")


def tensor(rows, **extra) -> dict:
    return {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}],
        **extra,
    }


def binary_tensor() -> tuple[bytes, str]:
    """One iris row as a binary tensor after the JSON header, and that header's length."""
    import struct

    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    return header + struct.pack("<4f", *IRIS), str(len(header))


def gzipped(document: dict) -> bytes:
    import gzip

    return gzip.compress(json.dumps(document).encode())


V2 = "/v2/models/iris/infer"
V2_V1 = "/v2/models/iris/versions/v1/infer"
BINARY, BINARY_HEADER = binary_tensor()


@dataclass
class Case:
    name: str
    body: object = None  # JSON-encoded unless bytes
    path: str = "/api/v1/predict"
    key: str = "main"  # which credential, or None
    headers: dict = field(default_factory=dict)
    lean: bool = True  # served by the lean handler (else handed to the view)

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


CASES = [
    # The plain case, in its variations: served by the lean handler.
    Case("row", {"input_data": IRIS}),
    Case("named version", {"input_data": IRIS, "model": "iris", "model_version": "v1"}),
    Case("latest", {"input_data": IRIS, "model_version": "latest"}),
    Case("features by name", {"input_data": NAMED}),
    Case("timeout", {"input_data": IRIS, "timeout": 5}),
    Case("a/b test", {"input_data": IRIS, "model_version": "v1"}, path="/api/v1/predict/ab-test"),
    Case("trailing slash", {"input_data": IRIS}, path="/api/v1/predict/"),
    Case("another model", {"input_data": DIGITS, "model": "digits"}),
    Case(
        "charset", {"input_data": IRIS}, headers={"Content-Type": "application/json; charset=utf-8"}
    ),
    Case("accept json", {"input_data": IRIS}, headers={"Accept": "application/json"}),
    # Refusals after the rate limit counted: the lean handler answers them as the view does.
    Case("unknown model", {"input_data": IRIS, "model": "nope"}),
    Case("unknown version", {"input_data": IRIS, "model_version": "v9"}),
    Case("feature count", {"input_data": [1, 2, 3]}),
    Case("not a number", {"input_data": [1, 2, "x", 4]}),
    Case("nan as text", {"input_data": [1, 2, "nan", 4]}),
    Case("empty row", {"input_data": []}),
    Case("several rows", {"input_data": [IRIS, IRIS]}),
    Case("overflow", {"input_data": [3e38] * 4, "model_version": "v1"}),
    Case("timeout passed", {"input_data": DIGITS, "model": "digits", "timeout": 0.000001}),
    Case("rate limited 1", {"input_data": IRIS}, key="limited"),
    Case("rate limited 2", {"input_data": IRIS}, key="limited"),
    Case("rate limited 3", {"input_data": IRIS}, key="limited"),
    # Handed to the view: not the plain case.
    Case("no input", {"model": "iris"}, lean=False),
    Case("unknown field", {"input_data": IRIS, "extra": 1}, lean=False),
    Case("model as number", {"input_data": IRIS, "model": 5}, lean=False),
    Case("timeout as text", {"input_data": IRIS, "timeout": "5"}, lean=False),
    Case("timeout null", {"input_data": IRIS, "timeout": None}, lean=False),
    Case("timeout too long", {"input_data": IRIS, "timeout": 100000}, lean=False),
    Case("not json", b"{input_data: 1}", lean=False),
    Case("json list", [IRIS], lean=False),
    Case("nan literal", b'{"input_data": [NaN, 1, 2, 3]}', lean=False),
    Case("nested 1,000 deep", b'{"input_data": ' + b"[" * 1000 + b"]" * 1000 + b"}", lean=False),
    Case("empty body", b"", lean=False),
    Case("too large", {"input_data": IRIS, "pad": "x" * (1024 * 1024)}, lean=False),
    Case("form", b"input_data=1", headers={"Content-Type": "text/plain"}, lean=False),
    Case(
        "origin", {"input_data": IRIS}, headers={"Origin": "https://elsewhere.example"}, lean=False
    ),
    Case("cookie", {"input_data": IRIS}, headers={"Cookie": "sessionid=nothing"}, lean=False),
    Case("idempotency key", {"input_data": IRIS}, headers={"Idempotency-Key": "k"}, lean=False),
    Case("no credentials", {"input_data": IRIS}, key=None, lean=False),
    Case("malformed key", {"input_data": IRIS}, key="malformed", lean=False),
    Case("unknown key", {"input_data": IRIS}, key="unknown", lean=False),
    Case("revoked key", {"input_data": IRIS}, key="revoked", lean=False),
    Case("expired key", {"input_data": IRIS}, key="expired", lean=False),
    Case("key without scope", {"input_data": IRIS}, key="read_only", lean=False),
    Case("bearer token", {"input_data": IRIS}, key="jwt", lean=False),
    Case("bad bearer token", {"input_data": IRIS}, key="bad_jwt", lean=False),
    # V2 infer.
    Case("v2 row", tensor([IRIS]), path=V2),
    Case("v2 version", tensor([IRIS]), path=V2_V1),
    Case("v2 trailing slash", tensor([IRIS]), path=V2_V1 + "/"),
    Case("v2 rows", tensor([IRIS, [6.7, 3.0, 5.2, 2.3]]), path=V2_V1),
    Case("v2 outputs", tensor([IRIS], outputs=[{"name": "label"}]), path=V2_V1),
    Case("v2 request id", tensor([IRIS], id="mine"), path=V2_V1),
    Case(
        "v2 binary input",
        BINARY,
        path=V2_V1,
        headers={"Inference-Header-Content-Length": BINARY_HEADER},
    ),
    Case("v2 unknown model", tensor([IRIS]), path="/v2/models/nope/infer"),
    Case("v2 unknown version", tensor([IRIS]), path="/v2/models/iris/versions/v9/infer"),
    Case(
        "v2 wrong width",
        {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        path=V2,
    ),
    Case(
        "v2 strings",
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "BYTES",
                    "data": ["a", "b", "c", "d"],
                }
            ]
        },
        path=V2,
    ),
    Case("v2 not json", b"{inputs", path=V2),
    Case("v2 no inputs", {"inputs": []}, path=V2),
    Case("v2 overflow", tensor([[3e38] * 4]), path=V2_V1),
    Case("v2 rate limited", tensor([IRIS]), path=V2_V1, key="limited"),
    Case(
        "v2 gzip",
        gzipped(tensor([IRIS])),
        path=V2,
        headers={"Content-Encoding": "gzip"},
        lean=False,
    ),
    Case("v2 no credentials", tensor([IRIS]), path=V2, key=None, lean=False),
    Case("v2 bearer token", tensor([IRIS]), path=V2, key="jwt", lean=False),
]

KEYS_SNIPPET = """
import json
from datetime import timedelta
from django.utils import timezone
from accounts.models import ApiKey, User
from accounts.services import api_key_create
demo = User.objects.get(username="demo")
def key(scopes=("predict", "read"), **extra):
    return api_key_create(owner=demo, name="parity", scopes=scopes, **extra)
main, limited, read_only = key()[1], key(rate_limits="predict=3/h")[1], key(scopes=["read"])[1]
revoked, revoked_raw = key()
ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
expired, expired_raw = key()
ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
print(json.dumps({"main": main, "limited": limited, "read_only": read_only,
                  "revoked": revoked_raw, "expired": expired_raw}))
"""


@pytest.fixture(scope="module")
def servers(instance, _servers_stopped) -> Iterator[tuple[Server, Server]]:
    """The lean server and the views-only server, each with cache keys (rate limits) of its own
    and one web process, whose key cache the corpus fills before the requests that need it."""

    def start(name: str, **env: str) -> Server:
        env["CACHE_KEY_PREFIX"] = f"parity-{name}-{secrets.token_hex(4)}"
        args = ["--no-worker", "--workers", "1"]
        server = start_server(instance, f"parity-{name}", args=args, env=env)
        _servers_stopped.append(server)
        return server

    pair = start("lean"), start("views", MLPLATFORM_LEAN_HANDLERS="0")
    yield pair
    for server in pair:
        server.stop_soon()


@pytest.fixture(scope="module")
def credentials(instance, servers) -> dict[str, dict[str, str]]:
    """Headers of each credential the corpus uses."""
    keys = json.loads(instance.manage("shell", "-c", KEYS_SNIPPET).stdout.strip().splitlines()[-1])
    token = requests.post(
        servers[1].url("/api/v1/auth/token"),
        json={"username": "demo", "password": instance.passwords["demo"]},
        timeout=10,
    ).json()["access"]
    body = "A" * 40
    headers = {name: {"X-API-Key": raw} for name, raw in keys.items()}
    headers["malformed"] = {"X-API-Key": "mlp_nope"}
    headers["unknown"] = {
        "X-API-Key": f"mlp_{'a' * 12}_{body}" + _checksum(f"mlp_{'a' * 12}_{body}")
    }
    headers["jwt"] = {"Authorization": f"Bearer {token}"}
    headers["bad_jwt"] = {"Authorization": "Bearer not.a.token"}
    return headers


def _checksum(body: str) -> str:
    from accounts.crypto import checksum

    return checksum(body)


def lean_requests(server: Server) -> dict[str, float]:
    """The lean server's count of requests its lean handlers served and handed over."""
    text = requests.get(server.url("/metrics"), timeout=10).text
    counts = {"served": 0.0, "handed_over": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlplatform_lean_requests_total":
                counts[sample.labels["result"]] += sample.value
    return counts


def send(server: Server, case: Case, headers: dict, request_id: str) -> requests.Response:
    if case.path.startswith("/v2/"):
        headers = {"Content-Type": "application/octet-stream", **headers}
    return requests.post(
        server.url(case.path),
        data=case.content(),
        headers={
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
            **headers,
            **case.headers,
        },
        timeout=30,
    )


def comparable(response: requests.Response) -> tuple:
    """Status, headers and body, with what differs by nature left out."""
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert headers.get("content-length", str(len(response.content))) == str(len(response.content))
    reset = int(headers.get("x-ratelimit-reset", 0))
    kept = {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}
    if headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict):
            body = {k: ("..." if k in VOLATILE_FIELDS else v) for k, v in body.items()}
            for message in ("detail", "error"):  # "retry in N s" counts down
                if isinstance(body.get(message), str):
                    body[message] = re.sub(r"retry in \d+ s", "retry in N s", body[message])
            if "outputs" in body:  # a V2 answer: its ids and time
                body["parameters"]["processing_time"] = "..."
                for output in body["outputs"]:
                    if output["name"] == "prediction_id":
                        output["data"] = "..."
    else:
        body = response.headers.get("content-type")  # the browsable API's page, or none
    return response.status_code, kept, body, reset


def stored(server: Server, headers: dict, response: requests.Response) -> list[dict] | None:
    """The stored predictions a 200 answer names, as the API reads them back."""
    if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
        return None
    body = response.json()
    if "prediction_id" in body:
        ids = [body["prediction_id"]]
    else:
        ids = next((o["data"] for o in body["outputs"] if o["name"] == "prediction_id"), [])
    rows = []
    for prediction_id in ids:
        row = requests.get(
            server.url(f"/api/v1/predict/{prediction_id}"), headers=headers, timeout=10
        )
        assert row.status_code == 200, row.text
        rows.append({k: v for k, v in row.json().items() if k not in VOLATILE_FIELDS})
    return rows


def test_the_lean_handler_answers_every_request_as_the_view_does(servers, credentials):
    lean, views = servers
    before = lean_requests(lean)
    differences = []
    for n, case in enumerate(CASES):
        headers = credentials[case.key] if case.key else {}
        if case.key in ("main", "limited"):
            for server in servers:  # the key fresh in each server's cache, as under load
                requests.get(server.url("/api/v1/models"), headers=headers, timeout=10)
        if "Idempotency-Key" in case.headers:  # one first use on each server
            case.headers["Idempotency-Key"] = f"parity-{secrets.token_hex(4)}"
        answers = []
        for server in servers:
            if "Idempotency-Key" in case.headers:
                case.headers["Idempotency-Key"] += "-again"
            response = send(server, case, headers, f"parity-{n}")
            answers.append((comparable(response), stored(views, credentials["main"], response)))
        (lean_seen, lean_row), (view_seen, view_row) = answers
        if lean_seen[:3] != view_seen[:3] or lean_row != view_row:
            differences.append((case.name, lean_seen[:3], view_seen[:3], lean_row, view_row))
        # The same rate-limit window's end, or the next one's when the minute turned between.
        gap = lean_seen[3] - view_seen[3]
        assert min(gap % 60, -gap % 60) <= 2, case.name
    after = lean_requests(lean)

    assert differences == []
    statuses = {case.name: None for case in CASES}
    assert len(statuses) == len(CASES)  # names are unique, so a difference names one case
    assert after["served"] - before["served"] == sum(case.lean for case in CASES)
    assert after["handed_over"] - before["handed_over"] == sum(not case.lean for case in CASES)
