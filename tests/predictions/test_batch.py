"""Batch jobs: submission and validation, formats, processing by chunks, results, cancel."""

import hashlib
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_q.models import OrmQ

from predictions.batch.files import chunk_name, file_save, npy_bytes
from predictions.batch.jobs import batch_job_process
from predictions.catalogue.registry import registry
from predictions.catalogue.versions import model_version_create, registry_touch
from predictions.models import BatchChunk, BatchJob, MLModel, ModelVersion
from predictions.runtime.artifacts import dump_dense
from tests.streams import streamed

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@pytest.fixture(autouse=True)
def small_chunks(settings):
    settings.PLATFORM = {**settings.PLATFORM, "BATCH_CHUNK_ROWS": 10}


def rows(n: int) -> list[list[float]]:
    return [SETOSA if i % 2 == 0 else VIRGINICA for i in range(n)]


def submit(client, body=None, **headers):
    body = body if body is not None else {"inputs": rows(35), "model_version": "v1"}
    return client.post("/api/v1/predict/batch", body, format="json", **headers)


def upload(client, name: str, content: bytes, **fields):
    file = SimpleUploadedFile(name, content)
    return client.post(
        "/api/v1/predict/batch", {"file": file, "model_version": "v1", **fields}, format="multipart"
    )


def run(job_id) -> BatchJob:
    """What a django-q2 worker does with the queued task."""
    batch_job_process(job_id=str(job_id))
    return BatchJob.objects.get(pk=job_id)


def expected_outputs(matrix) -> np.ndarray:
    version = registry.model("iris").versions["v1"]
    return registry.predictor(version).predict(np.asarray(matrix, dtype=np.float32))


def test_submit_answers_202_with_the_job_and_its_links(key_client):
    response = submit(key_client)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["total_inputs"] == 35
    assert body["estimated_completion"]
    assert body["links"]["self"] == f"/api/v1/predict/batch/{body['job_id']}"
    assert body["links"]["results"].endswith("/results")
    job = BatchJob.objects.get(pk=body["job_id"])
    assert job.model_version.label == "v1" and job.chunk_size == 10


def test_a_job_is_processed_chunk_by_chunk_and_results_are_exact(key_client):
    job_id = submit(key_client).json()["job_id"]

    job = run(job_id)

    assert job.status == "completed" and job.completed_inputs == 35
    assert BatchChunk.objects.filter(job=job).count() == 4
    status = key_client.get(f"/api/v1/predict/batch/{job_id}").json()
    assert status["completed"] == 35 and status["progress"] == 1
    assert status["processing_seconds"] is not None
    page = key_client.get(f"/api/v1/predict/batch/{job_id}/results", {"page_size": 20}).json()
    assert page["count"] == 35 and len(page["results"]) == 20 and page["next"]
    first = page["results"][0]
    assert first["input_index"] == 0 and first["label"] == "setosa"
    np.testing.assert_allclose(first["prediction"], expected_outputs([SETOSA])[0], atol=1e-6)
    last_page = key_client.get(page["next"]).json()
    assert [r["input_index"] for r in last_page["results"]] == list(range(20, 35))
    assert last_page["results"][0]["label"] == "setosa"
    assert last_page["next"] is None


def test_the_job_carries_its_results_once_it_ends_and_pages_beyond_the_bound(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_PAGE_SIZE": 20}
    job_id = submit(key_client).json()["job_id"]
    assert key_client.get(f"/api/v1/predict/batch/{job_id}").json()["results"] is None

    run(job_id)

    status = key_client.get(f"/api/v1/predict/batch/{job_id}").json()
    assert [r["input_index"] for r in status["results"]] == list(range(20))
    assert status["results"][1]["label"] == "virginica"
    rest = key_client.get(status["results_next"]).json()
    assert [r["input_index"] for r in rest["results"]] == list(range(20, 35))


def test_a_small_job_carries_every_result(key_client):
    job_id = submit(key_client, {"inputs": rows(3)}).json()["job_id"]

    run(job_id)

    status = key_client.get(f"/api/v1/predict/batch/{job_id}").json()
    assert [r["label"] for r in status["results"]] == ["setosa", "virginica", "setosa"]
    assert status["results_next"] is None


def test_a_task_works_for_its_time_budget_and_queues_the_rest_as_a_new_task(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "BATCH_TASK_SECONDS": 0}
    job_id = submit(key_client).json()["job_id"]
    queued = OrmQ.objects.count()

    job = run(job_id)

    # One chunk per task: the first stored one, then a task for the rest is queued.
    assert (job.status, job.completed_inputs) == ("processing", 10)
    assert OrmQ.objects.count() == queued + 1
    tasks = 1
    while job.status == "processing":
        job, tasks = run(job_id), tasks + 1
    assert (job.status, job.completed_inputs, tasks) == ("completed", 35, 4)
    assert BatchChunk.objects.filter(job=job).count() == 4


def test_a_job_is_queued_as_parts_and_the_last_part_to_finish_completes_it(
    key_client, django_capture_on_commit_callbacks
):
    queued = OrmQ.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(key_client).json()["job_id"]
    assert OrmQ.objects.count() == queued + 2  # BATCH_PARALLEL_TASKS parts of 4 chunks

    batch_job_process(job_id=job_id, part=1, parts=2)

    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.completed_inputs) == ("processing", 15)  # chunks 1 and 3 (5 rows)
    assert sorted(job.chunks.values_list("index", flat=True)) == [1, 3]
    batch_job_process(job_id=job_id, part=0, parts=2)
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.completed_inputs) == ("completed", 35)
    page = key_client.get(f"/api/v1/predict/batch/{job_id}/results", {"page_size": 35}).json()
    np.testing.assert_allclose(
        [r["prediction"] for r in page["results"]], expected_outputs(rows(35)), atol=1e-6
    )


def test_a_part_stops_when_another_part_has_failed_the_job(key_client):
    job_id = submit(key_client).json()["job_id"]
    batch_job_process(job_id=job_id, part=0, parts=2)  # chunks 0 and 2
    BatchJob.objects.filter(pk=job_id).update(status="failed", error="row 12: overflow")

    batch_job_process(job_id=job_id, part=1, parts=2)

    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.completed_inputs) == ("failed", 20)


def test_downloads_stream_every_row_as_csv_jsonl_and_npy(key_client):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)
    url = f"/api/v1/predict/batch/{job_id}/results"
    expected = expected_outputs(rows(35))

    npy = key_client.get(url, {"format": "npy"})
    csv = key_client.get(url, {"format": "csv"})
    jsonl = key_client.get(url, {"format": "jsonl"})

    assert npy.streaming and csv.streaming and jsonl.streaming
    array = np.load(io.BytesIO(b"".join(npy.streaming_content)))
    np.testing.assert_allclose(array, expected, atol=1e-6)
    lines = b"".join(csv.streaming_content).decode().splitlines()
    assert lines[0] == "input_index,label,confidence,p_setosa,p_versicolor,p_virginica"
    cells = [line.split(",") for line in lines[1:]]
    assert [int(c[0]) for c in cells] == list(range(35))
    assert [c[1] for c in cells] == ["setosa", "virginica"] * 17 + ["setosa"]
    np.testing.assert_allclose([[float(v) for v in c[3:]] for c in cells], expected, atol=1e-7)
    np.testing.assert_allclose([float(c[2]) for c in cells], expected.max(axis=1), atol=1e-7)
    records = [json.loads(x) for x in b"".join(jsonl.streaming_content).splitlines()]
    page = key_client.get(url, {"page_size": 35}).json()["results"]
    assert [r["input_index"] for r in records] == list(range(35))
    assert [r["label"] for r in records] == [r["label"] for r in page]
    np.testing.assert_allclose([r["prediction"] for r in records], expected, atol=1e-7)
    np.testing.assert_allclose(
        [r["confidence"] for r in records], [r["confidence"] for r in page], atol=1e-7
    )


def test_a_regressors_downloads_carry_its_values(key_client, user):
    model = MLModel.objects.create(
        name="sizes", task="regression", feature_names=["a", "b"], labels=[]
    )
    weights = [np.array([[1.0, 0.5], [2.0, -1.0]], dtype=np.float32)]
    model_version_create(
        model=model,
        label="v1",
        artifact=dump_dense(weights, [np.zeros(2, dtype=np.float32)], ["identity"]),
        status=ModelVersion.Status.ACTIVE,
        traffic_weight=1.0,
    )
    matrix = [[1.0, 2.0], [0.5, 0.25], [3.0, -1.0]]
    job_id = submit(key_client, {"inputs": matrix, "model": "sizes"}).json()["job_id"]
    run(job_id)
    url = f"/api/v1/predict/batch/{job_id}/results"
    expected = np.asarray(matrix) @ weights[0]

    csv = b"".join(key_client.get(url, {"format": "csv"}).streaming_content).decode()
    jsonl = b"".join(key_client.get(url, {"format": "jsonl"}).streaming_content)

    lines = csv.splitlines()
    assert lines[0] == "input_index,value_0,value_1"
    np.testing.assert_allclose([[float(v) for v in x.split(",")[1:]] for x in lines[1:]], expected)
    records = [json.loads(x) for x in jsonl.splitlines()]
    assert [(r["label"], r["confidence"]) for r in records] == [(None, None)] * 3
    np.testing.assert_allclose([r["prediction"] for r in records], expected)


def test_result_pages_are_gzipped_and_downloads_stream_uncompressed(key_client):
    job_id = submit(key_client, {"inputs": rows(300)}).json()["job_id"]
    run(job_id)
    url = f"/api/v1/predict/batch/{job_id}/results"

    page = key_client.get(url, {"page_size": 300}, HTTP_ACCEPT_ENCODING="gzip")
    download = key_client.get(url, {"format": "csv"}, HTTP_ACCEPT_ENCODING="gzip")

    assert page["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in download
    assert b"".join(download.streaming_content).startswith(b"input_index,label")


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("text/csv", "csv"),
        ("application/x-ndjson", "jsonl"),
        ("application/octet-stream", "npy"),
    ],
)
def test_the_accept_header_chooses_a_download_as_format_does(key_client, accept, fmt):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)
    url = f"/api/v1/predict/batch/{job_id}/results"

    by_accept = key_client.get(url, HTTP_ACCEPT=accept)
    by_format = key_client.get(url, {"format": fmt})

    assert by_accept.status_code == 200
    assert by_accept["Content-Type"] == by_format["Content-Type"]
    assert by_accept["Content-Disposition"] == f'attachment; filename="{job_id}.{fmt}"'
    assert b"".join(by_accept.streaming_content) == b"".join(by_format.streaming_content)
    assert "Accept" in by_accept["Vary"]


def test_format_wins_over_accept_and_json_stays_the_default(key_client):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)
    url = f"/api/v1/predict/batch/{job_id}/results"

    page = key_client.get(url, {"format": "json"}, HTTP_ACCEPT="text/csv")
    csv = key_client.get(url, {"format": "csv"}, HTTP_ACCEPT="application/json")
    default = key_client.get(url, HTTP_ACCEPT="*/*")
    browser = key_client.get(url, HTTP_ACCEPT="text/html,*/*;q=0.8")

    assert page["Content-Type"] == "application/json" and page.json()["count"] == 35
    assert csv["Content-Type"].startswith("text/csv")
    assert default["Content-Type"] == "application/json" and default.json()["count"] == 35
    assert browser["Content-Type"].startswith("text/html")  # the browsable API's page


def test_an_unknown_accept_is_406_and_errors_under_a_download_accept_are_json(key_client):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)

    refused = key_client.get(f"/api/v1/predict/batch/{job_id}/results", HTTP_ACCEPT="image/png")
    missing = key_client.get(
        f"/api/v1/predict/batch/{uuid.uuid4()}/results", HTTP_ACCEPT="text/csv"
    )
    bad_format = key_client.get(
        f"/api/v1/predict/batch/{job_id}/results", {"format": "xml"}, HTTP_ACCEPT="text/csv"
    )

    for response, status, code in (
        (refused, 406, "not_acceptable"),
        (missing, 404, "job_not_found"),
        (bad_format, 400, "invalid_input"),
    ):
        assert response.status_code == status
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == code, response.json()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "rows.csv",
            b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
            b"6.7,3.0,5.2,2.3\n",
        ),
        ("rows.csv", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"),
        ("rows.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n[6.7, 3.0, 5.2, 2.3]\n"),
        ("rows.npy", None),
    ],
)
def test_each_file_format_is_read(key_client, name, content):
    if content is None:
        buffer = io.BytesIO()
        np.save(buffer, np.array([SETOSA, VIRGINICA]))
        content = buffer.getvalue()

    response = upload(key_client, name, content)

    assert response.status_code == 202, response.json()
    job = run(response.json()["job_id"])
    labels = [
        r["label"]
        for r in key_client.get(f"/api/v1/predict/batch/{job.pk}/results").json()["results"]
    ]
    assert labels == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.csv", b"5.1,3.5,1.4,0.2\n5.1,3.5,oops,0.2\n", "line 2, column 3: 'oops' is not"),
        ("rows.csv", b"5.1,3.5,1.4,0.2\n5.1,3.5,1.4\n", "line 2: expected 4 values, got 3"),
        ("rows.csv", b"5.1,3.5,1.4,0.2\n5.1,nan,1.4,0.2\n", "line 2, column 2"),
        ("rows.csv", b"a,b,c,d\n5.1,3.5,1.4,0.2\n5.1,3.5,1.4\n", "line 3: expected 4 values"),
        # A first line with one number is data, not a header.
        ("rows.csv", b"a,b,c,1\n5.1,3.5,1.4,0.2\n", "line 1, column 1: 'a' is not a number"),
        # '#' starts no comment: the line is data, and not numbers.
        ("rows.csv", b"5.1,3.5,1.4,0.2\n# 6.7,3.0,5.2,2.3\n", "line 2, column 1: '# 6.7'"),
        ("rows.csv", b"5.1,3.5,1.4,0.2 # cm\n", "line 1, column 4: '0.2 # cm' is not"),
        ("rows.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n[1, 2]\n", "line 2: expected 4 values, got 2"),
        ("rows.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n\n[1, 2, 3, true]\n", "line 3, column 4: true"),
        ("rows.jsonl", b'[1, 2, 3, "4"]\n', 'line 1, column 4: "4" is not a number'),
        ("rows.jsonl", b"[1, 2, 3, 4] [5, 6, 7, 8]\n", "line 1: not one JSON array"),
        ("rows.jsonl", b"[1, 2, 3, 4], [5, 6, 7, 8]\n", "line 1: not one JSON array"),
        ("rows.npy", b"not an npy file", "npy"),
        ("rows.txt", b"5.1,3.5,1.4,0.2\n", "cannot tell the format"),
        ("rows.csv", b"", "empty"),
        ("rows.csv", b"\n\n", "no rows"),
    ],
)
def test_a_bad_file_is_refused_naming_the_row_and_no_job_is_created(
    key_client, name, content, message
):
    response = upload(key_client, name, content)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert BatchJob.objects.count() == 0


def test_optional_fields_sent_as_null_mean_absent(key_client):
    body = {"inputs": rows(3), "model": None, "model_version": None, "callback_url": None}

    response = submit(key_client, body)

    assert response.status_code == 202, response.json()
    job = BatchJob.objects.get(pk=response.json()["job_id"])
    assert job.callback_url == "" and job.total_inputs == 3


@pytest.mark.parametrize(
    ("header", "content", "total"),
    [
        ("true", b"1,2,3,4\n5.1,3.5,1.4,0.2\n", 1),  # the client says the first line names
        ("false", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", 2),
    ],
)
def test_the_client_may_say_whether_a_csv_has_a_header(key_client, header, content, total):
    response = upload(key_client, "rows.csv", content, header=header)

    assert response.status_code == 202, response.json()
    assert response.json()["total_inputs"] == total


def test_a_csv_header_said_absent_is_read_as_data(key_client):
    response = upload(key_client, "rows.csv", b"a,b,c,d\n5.1,3.5,1.4,0.2\n", header="false")

    assert response.status_code == 400
    assert "line 1, column 1: 'a' is not a number" in response.json()["detail"]


def test_only_a_csv_has_a_header(key_client):
    response = upload(key_client, "rows.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n", header="true")

    assert response.status_code == 400
    assert "header: only a CSV file" in response.json()["detail"]


def test_the_stored_rows_are_the_uploaded_ones_in_every_format(key_client):
    matrix = np.random.default_rng(7).uniform(0, 8, size=(2_500, 4)).astype(np.float32)
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in matrix).encode()
    jsonl = b"\n".join(json.dumps([float(v) for v in row]).encode() for row in matrix)
    npy = io.BytesIO()
    np.save(npy, matrix.astype(">f8"))

    for name, content in (("a.csv", csv), ("a.jsonl", jsonl), ("a.npy", npy.getvalue())):
        response = upload(key_client, name, content)
        assert response.status_code == 202, response.json()
        job = BatchJob.objects.get(pk=response.json()["job_id"])
        with job.input_file.open("rb") as file:
            data = file.read()
        assert hashlib.sha256(data).hexdigest() == job.input_sha256
        stored = np.load(io.BytesIO(data))
        assert stored.dtype == np.float32 and np.array_equal(stored, matrix), name


def test_a_job_keeps_its_rows_and_results_in_files_deleted_with_it(
    key_client, settings, django_capture_on_commit_callbacks
):
    job_id = submit(key_client).json()["job_id"]
    job = run(job_id)
    media = Path(settings.MEDIA_ROOT)
    files = sorted(p.relative_to(media).as_posix() for p in media.rglob("*.npy"))
    assert files == [f"batch/{job_id}/chunk-{i:06d}.npy" for i in range(4)] + [
        f"batch/{job_id}/input.npy"
    ]

    with django_capture_on_commit_callbacks(execute=True):
        job.delete()

    assert list(media.rglob("*.npy")) == []


def test_a_result_file_that_changed_is_refused_not_served(key_client, settings):
    job_id = submit(key_client).json()["job_id"]
    chunk = run(job_id).chunks.get(index=1)
    path = Path(settings.MEDIA_ROOT) / chunk.outputs_file.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))

    response = key_client.get(f"/api/v1/predict/batch/{job_id}/results", {"page_size": 20})

    assert response.status_code == 500
    assert response.json()["code"] == "corrupt_file"


def test_jobs_that_ended_before_the_retention_are_deleted_as_a_job_completes(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "BATCH_RETENTION_DAYS": 7}
    old = run(submit(key_client).json()["job_id"])
    BatchJob.objects.filter(pk=old.pk).update(finished_at=old.finished_at - timedelta(days=8))
    recent = run(submit(key_client).json()["job_id"])

    assert list(BatchJob.objects.values_list("pk", flat=True)) == [recent.pk]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [[1, 2, 3]]}, "expected 4 features"),
        ({"inputs": [SETOSA, [1, 2, "x", 4]]}, "inputs[1][2] must be a number"),
        ({"inputs": [SETOSA, [1, 2, 1e39, 4]]}, "not a finite number"),
        ({"inputs": []}, "must not be empty"),
        ({"model_version": "v1"}, "either JSON 'inputs' or a 'file'"),
        ({"inputs": [SETOSA], "model": "nope"}, "Unknown model"),
        ({"inputs": [SETOSA], "callback_url": "ftp://example.com/x"}, "callback_url"),
    ],
)
def test_bad_json_input_is_a_4xx_and_no_job_is_created(key_client, body, message):
    response = submit(key_client, body)

    assert 400 <= response.status_code < 500
    assert message in response.json()["detail"]
    assert BatchJob.objects.count() == 0


def test_json_rows_beyond_the_limit_are_refused(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BATCH_JSON_ROWS": 5}

    response = submit(key_client, {"inputs": rows(6)})

    assert response.status_code == 400
    assert "at most 5 are allowed" in response.json()["detail"]


def test_an_upload_over_the_limit_is_413(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_UPLOAD_BYTES": 2000}

    response = upload(key_client, "rows.csv", b"5.1,3.5,1.4,0.2\n" * 200)

    assert response.status_code == 413
    assert BatchJob.objects.count() == 0


def test_too_many_unfinished_jobs_are_refused_with_429(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_ACTIVE_BATCH_JOBS": 2}
    submit(key_client)
    submit(key_client)

    response = submit(key_client)

    assert response.status_code == 429
    assert response.json()["code"] == "too_many_active_jobs"
    # The refused job's rows were written and are gone again: only the two jobs' files remain.
    kept = {p.parent.name for p in Path(settings.MEDIA_ROOT).rglob("input.npy")}
    assert kept == {str(pk) for pk in BatchJob.objects.values_list("pk", flat=True)}


def test_the_version_is_fixed_at_submit(key_client):
    job_id = submit(key_client, {"inputs": rows(20)}).json()["job_id"]
    chosen = BatchJob.objects.get(pk=job_id).model_version.label
    other = "v1" if chosen == "v2" else "v2"
    ModelVersion.objects.filter(model__name="iris", label=chosen).update(traffic_weight=0)
    ModelVersion.objects.filter(model__name="iris", label=other).update(traffic_weight=100)
    registry_touch()

    job = run(job_id)

    assert job.model_version.label == chosen
    assert key_client.get(f"/api/v1/predict/batch/{job_id}").json()["model_version"] == chosen


def test_a_task_run_twice_or_resumed_writes_each_row_once(key_client):
    job_id = submit(key_client).json()["job_id"]
    # A worker stored the first chunk and died before the rest.
    job = BatchJob.objects.get(pk=job_id)
    first = expected_outputs(rows(10)).astype(np.float32)
    name, sha256 = file_save(chunk_name(job.pk, 0), npy_bytes(first))
    BatchChunk.objects.create(
        job=job, index=0, start=0, stop=10, outputs_file=name, outputs_sha256=sha256
    )
    BatchJob.objects.filter(pk=job_id).update(status="processing", completed_inputs=10)

    run(job_id)
    job = run(job_id)  # delivered again

    assert job.status == "completed" and job.completed_inputs == 35
    assert sorted(BatchChunk.objects.filter(job=job).values_list("index", flat=True)) == [
        0,
        1,
        2,
        3,
    ]
    assert (
        len(
            key_client.get(f"/api/v1/predict/batch/{job_id}/results", {"page_size": 100}).json()[
                "results"
            ]
        )
        == 35
    )


def test_cancel_stops_a_queued_job_at_once_and_a_running_one_at_a_chunk_boundary(key_client):
    queued = submit(key_client).json()["job_id"]
    running = submit(key_client).json()["job_id"]
    BatchJob.objects.filter(pk=running).update(status="processing")

    at_once = key_client.post(f"/api/v1/predict/batch/{queued}/cancel")
    later = key_client.post(f"/api/v1/predict/batch/{running}/cancel")
    stopped = run(running)

    assert at_once.status_code == 202 and at_once.json()["status"] == "cancelled"
    assert later.json()["cancel_requested"] is True
    assert stopped.status == "cancelled" and stopped.completed_inputs == 0
    assert run(queued).status == "cancelled"


def test_a_row_that_overflows_the_model_fails_the_job_naming_it(key_client):
    body = {"inputs": [SETOSA] * 12 + [[3e38, 3e38, 3e38, 3e38]], "model_version": "v1"}
    job = run(submit(key_client, body).json()["job_id"])

    assert job.status == "failed"
    assert "row 13" in job.error
    assert key_client.get(f"/api/v1/predict/batch/{job.pk}").json()["error"] == job.error


def test_another_principals_job_is_404_everywhere(key_client, other_user, make_key, client_for):
    job_id = submit(key_client).json()["job_id"]
    other = client_for(make_key(other_user))

    for response in (
        other.get(f"/api/v1/predict/batch/{job_id}"),
        other.get(f"/api/v1/predict/batch/{job_id}/results"),
        other.get(f"/api/v1/predict/batch/{job_id}/results", {"format": "csv"}),
        other.post(f"/api/v1/predict/batch/{job_id}/cancel"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "job_not_found"
    assert other.get("/api/v1/jobs").json()["count"] == 0
    assert BatchJob.objects.get(pk=job_id).cancel_requested is False


def test_jobs_list_is_own_and_filterable(key_client):
    done = submit(key_client).json()["job_id"]
    run(done)
    submit(key_client)

    everything = key_client.get("/api/v1/jobs").json()
    completed = key_client.get("/api/v1/jobs", {"status": "completed"}).json()
    bad = key_client.get("/api/v1/jobs", {"status": "nope"})

    assert everything["count"] == 2
    assert [j["job_id"] for j in completed["results"]] == [done]
    assert bad.status_code == 400


def test_a_predict_only_key_cannot_submit(user, make_key, client_for):
    response = submit(client_for(make_key(user, scopes=["predict"])))

    assert response.status_code == 403
    assert "'batch'" in response.json()["detail"]


def test_an_idempotency_key_replays_the_submission(key_client):
    first = submit(key_client, HTTP_IDEMPOTENCY_KEY="nightly-1")
    again = submit(key_client, HTTP_IDEMPOTENCY_KEY="nightly-1")
    other = submit(key_client, {"inputs": rows(3)}, HTTP_IDEMPOTENCY_KEY="nightly-1")

    assert again.json()["job_id"] == first.json()["job_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert BatchJob.objects.count() == 1


def _events(response) -> list[tuple[str | None, str, dict]]:
    events = []
    for block in streamed(response).decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return events


def test_events_stream_progress_until_the_job_ends(key_client):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)

    response = key_client.get(f"/api/v1/predict/batch/{job_id}/events")

    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    events = _events(response)
    assert events[0][:2] == ("35", "progress") and events[0][2]["percent"] == 100.0
    assert events[-1][1] == "completed" and events[-1][2]["completed"] == 35


def test_events_resume_after_the_last_event_id(key_client):
    job_id = submit(key_client).json()["job_id"]
    run(job_id)

    events = _events(
        key_client.get(f"/api/v1/predict/batch/{job_id}/events", HTTP_LAST_EVENT_ID="35")
    )

    assert [name for _, name, _ in events] == ["completed"]


def test_reading_a_job_needs_the_read_or_the_batch_scope(key_client, user, make_key, client_for):
    job_id = submit(key_client).json()["job_id"]
    batch_only = client_for(make_key(user, scopes=["batch"]))
    predict_only = client_for(make_key(user, scopes=["predict"]))

    assert batch_only.get(f"/api/v1/predict/batch/{job_id}").status_code == 200
    refused = predict_only.get(f"/api/v1/predict/batch/{job_id}")
    assert refused.status_code == 403
    assert "'read' or 'batch'" in refused.json()["detail"]


def test_a_finished_job_with_a_callback_has_a_webhook_to_deliver(key_client, monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    body = {"inputs": rows(3), "callback_url": "http://127.0.0.1:9/hook"}
    job_id = submit(key_client, body).json()["job_id"]
    queued = key_client.get(f"/api/v1/predict/batch/{job_id}").json()["webhook"]

    run(job_id)
    done = key_client.get(f"/api/v1/predict/batch/{job_id}").json()["webhook"]

    assert queued == {"status": "not_sent", "attempts": 0}
    assert done["status"] == "pending" and done["event"] == "batch_job.completed"


def test_a_private_callback_url_is_refused_at_submit(key_client):
    response = submit(key_client, {"inputs": rows(3), "callback_url": "http://127.0.0.1/hook"})

    assert response.status_code == 400
    assert response.json()["code"] == "unsafe_callback_url"
    assert BatchJob.objects.count() == 0


def test_the_admin_page_of_a_job_shows_its_progress_and_serves_it_while_it_runs(
    key_client, admin_client, settings
):
    settings.PLATFORM = {**settings.PLATFORM, "BATCH_TASK_SECONDS": 0}
    job_id = submit(key_client).json()["job_id"]
    run(job_id)  # one chunk of four
    page = admin_client.get(f"/admin/predictions/batchjob/{job_id}/change/")
    progress_url = f"/admin/predictions/batchjob/{job_id}/progress/"

    body = page.content.decode()
    assert '<progress max="35" value="10"' in body
    assert f'data-url="{progress_url}" data-terminal="false"' in body
    assert "predictions/job_progress.js" in body
    running = admin_client.get(progress_url).json()
    assert (running["status"], running["completed"], running["total"]) == ("processing", 10, 35)
    assert running["rows_per_second"] > 0 and running["terminal"] is False
    assert datetime.fromisoformat(running["estimated_completion"]) > datetime.now(UTC)

    while BatchJob.objects.get(pk=job_id).status == "processing":
        run(job_id)

    ended = admin_client.get(progress_url).json()
    assert (ended["completed"], ended["terminal"]) == (35, True)
    assert key_client.get(progress_url).status_code == 302  # the admin's, for staff only
