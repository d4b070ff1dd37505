"""OWASP API4:2023 Unrestricted Resource Consumption.

Every request is bounded before it costs much: body and upload size (413), rows per JSON batch
and per job, features per row, page size, inference time, unfinished jobs per user, and the
number of requests per principal (429 with ``Retry-After`` and ``X-RateLimit-*``). Each limit is
a setting of ``settings.PLATFORM``; these tests lower them.
"""

import json
import struct

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from mlplatform.conf import DEFAULTS
from predictions.models import BatchJob, Prediction
from tests.security.conftest import IRIS, assert_error
from tests.streams import streamed

pytestmark = pytest.mark.usefixtures("demo_models")


@pytest.fixture
def limits(settings):
    def lower(**knobs) -> None:
        settings.PLATFORM = {**settings.PLATFORM, **knobs}

    return lower


def test_a_body_over_the_limit_is_413_before_it_is_parsed(alice, limits):
    limits(MAX_BODY_BYTES=2_000)

    response = alice.post(
        "/api/v1/predict", {"input_data": IRIS, "pad": "x" * 5_000}, format="json"
    )

    assert_error(response, 413, "request_too_large")
    assert "2000 bytes" in response.json()["detail"]
    assert Prediction.objects.count() == 0


def test_a_body_that_lies_about_its_length_is_still_bounded(alice, limits):
    """A short Content-Length with a long body: the parser reads no further than the limit."""
    limits(MAX_BODY_BYTES=2_000)
    body = json.dumps({"input_data": IRIS, "pad": "x" * 5_000}).encode()

    response = alice.generic(
        "POST", "/api/v1/predict", body, content_type="application/json", CONTENT_LENGTH="100"
    )

    assert 400 <= response.status_code < 500
    assert Prediction.objects.count() == 0


def test_a_deeply_nested_body_is_a_400_not_a_crash(alice):
    nested = "[" * 5_000 + "]" * 5_000

    response = alice.generic(
        "POST",
        "/api/v1/predict",
        f'{{"input_data": {nested}}}',
        content_type="application/json",
    )

    assert_error(response, 400)


def test_json_batch_rows_are_capped(alice, limits):
    limits(MAX_BATCH_JSON_ROWS=10)

    response = alice.post("/api/v1/predict/batch", {"inputs": [IRIS] * 11}, format="json")

    assert_error(response, 400)
    assert "at most 10" in response.json()["detail"]
    assert BatchJob.objects.count() == 0


def test_rows_per_job_are_capped_for_uploads_too(alice, limits):
    limits(MAX_BATCH_ROWS=50)
    upload = SimpleUploadedFile("rows.csv", b"5.1,3.5,1.4,0.2\n" * 51)

    response = alice.post("/api/v1/predict/batch", {"file": upload}, format="multipart")

    assert_error(response, 413, "too_many_rows")
    assert BatchJob.objects.count() == 0


def npy_claiming(rows: int, *, follow: int) -> bytes:
    """A .npy file whose header claims ``rows`` rows of 4 float64, with ``follow`` bytes after."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, 4), }}"
    header += " " * (117 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * follow


def test_an_npy_header_claiming_a_billion_rows_is_refused_before_anything_is_read(alice):
    upload = SimpleUploadedFile("rows.npy", npy_claiming(10**9, follow=64))

    response = alice.post("/api/v1/predict/batch", {"file": upload}, format="multipart")

    body = assert_error(response, 413, "too_many_rows")
    assert "1000000000" in body["detail"]
    assert BatchJob.objects.count() == 0


def test_an_npy_header_that_lies_about_its_size_is_a_400(alice):
    upload = SimpleUploadedFile("rows.npy", npy_claiming(1_000, follow=64))

    response = alice.post("/api/v1/predict/batch", {"file": upload}, format="multipart")

    body = assert_error(response, 400)
    assert "32000 bytes, but 64 follow it" in body["detail"]
    assert BatchJob.objects.count() == 0


def test_an_upload_over_the_limit_is_413(alice, limits):
    limits(MAX_UPLOAD_BYTES=4_000)
    upload = SimpleUploadedFile("rows.csv", b"5.1,3.5,1.4,0.2\n" * 500)

    response = alice.post("/api/v1/predict/batch", {"file": upload}, format="multipart")

    assert_error(response, 413, "request_too_large")
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize(
    "row",
    [
        [1.0] * 100_000,
        {f"f{i}": 1.0 for i in range(20_000)},
    ],
    ids=["list", "object"],
)
def test_features_per_row_are_bounded_by_the_model(alice, row):
    response = alice.post("/api/v1/predict", {"input_data": row}, format="json")

    assert_error(response, 400)
    assert "feature" in response.json()["detail"]
    assert Prediction.objects.count() == 0


def test_no_model_may_take_more_than_max_features(admin_client, limits):
    # The width of the widest row anyone may send is the widest model's, capped here.
    limits(MAX_FEATURES=8)
    response = admin_client.post(
        "/admin/predictions/mlmodel/add/",
        {
            "name": "too-wide",
            "task": "classification",
            "feature_names": json.dumps([f"f{i}" for i in range(9)]),
            "labels": json.dumps(["a", "b"]),
            "cache_ttl": 0,
            "versions-TOTAL_FORMS": 0,
            "versions-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 200
    assert "9 features; at most 8 are allowed" in response.content.decode()


def test_a_batch_row_with_too_many_features_is_refused(alice):
    response = alice.post("/api/v1/predict/batch", {"inputs": [[1.0] * 50_000]}, format="json")

    assert_error(response, 400)
    assert BatchJob.objects.count() == 0


def test_page_size_is_capped(alice, limits):
    limits(MAX_PAGE_SIZE=3)
    for _ in range(5):
        alice.post("/api/v1/predict", {"input_data": IRIS}, format="json")

    page = alice.get("/api/v1/predictions?page_size=1000000").json()

    assert page["count"] == 5
    assert len(page["results"]) == 3


def test_batch_result_pages_are_capped(alice, limits):
    from predictions.batch.jobs import batch_job_process

    limits(MAX_PAGE_SIZE=4)
    job = alice.post("/api/v1/predict/batch", {"inputs": [IRIS] * 9}, format="json").json()
    batch_job_process(job_id=job["job_id"])

    page = alice.get(f"/api/v1/predict/batch/{job['job_id']}/results?page_size=99999").json()

    assert page["count"] == 9
    assert len(page["results"]) == 4


def test_inference_time_is_capped(alice, limits):
    limits(MAX_TIMEOUT=5.0)

    response = alice.post("/api/v1/predict", {"input_data": IRIS, "timeout": 3600}, format="json")

    assert_error(response, 400)
    assert "timeout" in response.json()["detail"]


def test_unfinished_jobs_per_user_are_capped(alice, limits):
    limits(MAX_ACTIVE_BATCH_JOBS=2)
    body = {"inputs": [IRIS]}
    accepted = [alice.post("/api/v1/predict/batch", body, format="json") for _ in range(2)]

    refused = alice.post("/api/v1/predict/batch", body, format="json")

    assert [a.status_code for a in accepted] == [202, 202]
    assert_error(refused, 429, "too_many_active_jobs")
    assert BatchJob.objects.count() == 2


@pytest.fixture
def tiers(limits):
    def set_tiers(**rates: str) -> None:
        limits(RATE_LIMITS={**DEFAULTS["RATE_LIMITS"], **rates})

    return set_tiers


def rate_limited_message(response) -> str:
    """A 429's message, in its route's error shape (V2 answers ``{"error": ...}``)."""
    if response.wsgi_request.path.startswith("/v2/"):
        assert response.status_code == 429, response.content[:300]
        assert response["Content-Type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"error"}, body
        return body["error"]
    return assert_error(response, 429, "rate_limited")["detail"]


V2_INFER = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]}


@pytest.mark.parametrize(
    ("group", "method", "url", "body"),
    [
        ("predict", "post", "/api/v1/predict", {"input_data": IRIS}),
        ("predict", "post", "/api/v1/predict/ab-test", {"input_data": IRIS}),
        ("predict", "post", "/v2/models/iris/infer", V2_INFER),
        ("batch", "post", "/api/v1/predict/batch", {"inputs": [IRIS]}),
        pytest.param(
            "stream",
            "post",
            "/api/v1/predict/stream",
            {"input_data": IRIS},
            # A stream's rows are stored by the group commit's thread, with a connection of its
            # own: it sees only what the test committed.
            marks=pytest.mark.django_db(transaction=True),
        ),
        ("api", "get", "/api/v1/predictions", None),
        ("api", "get", "/api/v1/models", None),
    ],
)
def test_each_group_is_rate_limited_with_429_and_retry_after(
    alice, tiers, group, method, url, body
):
    # Per hour: django-ratelimit starts each key's window at its own offset, so a window of a
    # minute could end between two of these requests.
    tiers(**{group: "2/h"})

    answers = [getattr(alice, method)(url, body, format="json") for _ in range(3)]
    streams = [streamed(a) for a in answers if a.streaming]

    assert [a.status_code for a in answers[:2]] == [202 if group == "batch" else 200] * 2
    assert all(b"event: completed" in s for s in streams)
    refused = answers[-1]
    assert rate_limited_message(refused).startswith(
        f"Rate limit of 2 requests per hour for {group!r} exceeded; retry in"
    )
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert refused["X-RateLimit-Limit"] == "2"
    assert refused["X-RateLimit-Remaining"] == "0"
    assert int(refused["X-RateLimit-Reset"]) > 0


def test_a_limited_prediction_is_neither_computed_nor_stored(alice, tiers):
    tiers(predict="1/h")
    assert alice.post("/api/v1/predict", {"input_data": IRIS}, format="json").status_code == 200

    refused = alice.post("/api/v1/predict", {"input_data": IRIS}, format="json")

    assert_error(refused, 429, "rate_limited")
    assert Prediction.objects.count() == 1


def test_anonymous_token_requests_are_limited_per_client_address(tiers, user):
    tiers(auth="2/h")
    client = APIClient(REMOTE_ADDR="198.51.100.77")
    body = {"username": "alice", "password": "alice-pass-123"}

    answers = [client.post("/api/v1/auth/token", body, format="json") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1]["Retry-After"]
