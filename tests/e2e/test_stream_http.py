"""End to end: prediction streams and batch job events over real HTTP from ``manage.py serve``.

The web servers run with ``serve --no-worker``: a submitted job waits until a test starts a
worker (as in test_batch_worker.py, no other worker may serve the instance meanwhile).
"""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import start_server

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
# Waiting servers send a keep-alive comment this often, so a test sees it (and a disconnect
# is noticed) within a fraction of a second.
FAST = {"MLPLATFORM_STREAM_HEARTBEAT_SECONDS": "0.3", "MLPLATFORM_BATCH_CHUNK_ROWS": "10"}


@pytest.fixture(scope="module")
def server(instance, _servers_stopped):
    """This module's web server (in place of the shared one): no background worker."""
    server = start_server(instance, "stream-web", args=["--no-worker"], env=FAST)
    _servers_stopped.append(server)
    yield server
    server.stop()


def events_of(lines):
    """(id, event, data) of each event, as they arrive; a comment comes out as (None, ':', text)."""
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if line.startswith(":"):
            yield None, ":", line
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield fields.get("id"), fields["event"], json.loads(fields["data"])
            fields = {}


def open_stream(server, key: str, body: dict) -> requests.Response:
    return requests.post(
        server.url("/api/v1/predict/stream"),
        json=body,
        headers={"X-API-Key": key, "Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )


def follow(server, key: str, job_id: str, last_event_id: str | None = None) -> requests.Response:
    headers = {"X-API-Key": key, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return requests.get(
        server.url(f"/api/v1/predict/batch/{job_id}/events"),
        headers=headers,
        stream=True,
        timeout=30,
    )


def count_predictions(server, key: str, model: str) -> int:
    response = requests.get(
        server.url(f"/api/v1/predictions?model={model}&page_size=1"),
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["count"]


def submit(server, key: str, rows: int) -> str:
    response = requests.post(
        server.url("/api/v1/predict/batch"),
        json={"inputs": [SETOSA] * rows, "model": "iris", "model_version": "v1"},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


# --- POST /predict/stream ---------------------------------------------------------------------


def test_a_stream_is_read_event_by_event_and_each_prediction_is_stored(server, instance):
    key = instance.demo_key
    body = {"inputs": [SETOSA, VIRGINICA, SETOSA], "model": "iris", "model_version": "v1"}

    with open_stream(server, key, body) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in response.headers
        received = []
        for _, name, data in events_of(response.iter_lines()):
            received.append((name, data))
            if name == "prediction":
                # Stored before its event was written: readable while the stream goes on.
                read = requests.get(
                    server.url(f"/api/v1/predict/{data['prediction_id']}"),
                    headers={"X-API-Key": key},
                    timeout=10,
                )
                assert read.status_code == 200
                assert read.json()["label"] == data["label"]
                assert read.json()["input_data"] == body["inputs"][data["index"]]

    names = [name for name, _ in received]
    assert names == ["started"] + ["prediction", "progress"] * 3 + ["completed"]
    labels = [data["label"] for name, data in received if name == "prediction"]
    assert labels == ["setosa", "virginica", "setosa"]
    assert received[-2][1] == {"completed": 3, "total": 3, "percent": 100.0}
    assert received[-1][1]["completed"] == 3 and received[-1][1]["failed"] == 0


def test_a_bad_row_is_refused_before_the_stream_starts(server, instance):
    response = open_stream(server, instance.demo_key, {"inputs": [SETOSA, [1, 2, "x", 4]]})

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/event-stream"
    ((_, name, data),) = list(events_of(response.iter_lines()))
    assert name == "error" and data["detail"] == "inputs[1][2] must be a number, got string"


def test_a_client_that_disconnects_stops_the_work(server, instance):
    key = instance.demo_key
    rows = [[float(i % 16)] * 64 for i in range(1000)]  # digits: 64 features, used only here
    before = count_predictions(server, key, "digits")
    body = json.dumps({"inputs": rows, "model": "digits"}).encode()
    address = urlsplit(server.base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall(
        b"POST /api/v1/predict/stream HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (address.netloc.encode(), key.encode(), len(body))
        + body
    )
    received = b""
    while b"event: prediction" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    sock.close()  # the client goes away after its first prediction

    stored, deadline = [], time.monotonic() + 15
    while time.monotonic() < deadline:
        stored.append(count_predictions(server, key, "digits") - before)
        if len(stored) >= 3 and stored[-1] == stored[-3]:
            break  # no more rows are being stored
        time.sleep(0.5)

    assert b" 200 OK" in received.split(b"\r\n", 1)[0]
    assert 1 <= stored[-1] < 500, stored
    assert stored[-1] == stored[-3], f"predictions still being stored: {stored}"


# --- batch job events -----------------------------------------------------------------------


def test_batch_events_wait_with_heartbeats_resume_and_follow_the_job_to_the_end(
    server, qcluster, instance
):
    key = instance.demo_key
    job_id = submit(server, key, 50)

    with follow(server, key, job_id) as waiting:
        seen = []
        for event in events_of(waiting.iter_lines()):
            seen.append(event)
            if len(seen) == 3:
                break
    assert waiting.headers["Content-Type"] == "text/event-stream"
    (first_id, first, data), heartbeat, _ = seen
    assert (first_id, first, data["status"], data["completed"]) == ("0", "progress", "queued", 0)
    assert heartbeat[1] == ":"  # nothing happens while no worker runs

    qcluster("events", env=FAST)
    with follow(server, key, job_id, last_event_id=first_id) as resumed:
        rest = [e for e in events_of(resumed.iter_lines()) if e[1] != ":"]
    again = [e for e in events_of(follow(server, key, job_id, last_event_id="50").iter_lines())]

    progress_ids = [int(i) for i, name, _ in rest if name == "progress"]
    assert progress_ids and progress_ids == sorted(set(progress_ids)) and progress_ids[0] > 0
    assert progress_ids[-1] == 50
    assert rest[-1][1] == "completed"
    assert rest[-1][2] | {"error": None} == {
        "job_id": job_id,
        "status": "completed",
        "completed": 50,
        "total": 50,
        "error": None,
    }
    assert [name for _, name, _ in again] == ["completed"]


def test_streams_beyond_the_limit_get_503_and_a_disconnect_frees_the_slot(serve, instance):
    # The limit is per web process: one process, so that every stream meets the same count.
    server = serve(
        "slots",
        args=["--no-worker", "--workers", "1"],
        env={**FAST, "MLPLATFORM_MAX_OPEN_STREAMS": "2"},
    )
    try:
        _slots_are_freed_by_a_disconnect(server, instance.demo_key)
    finally:
        server.stop()


def _slots_are_freed_by_a_disconnect(server, key: str) -> None:
    job_id = submit(server, key, 5)
    first, second = follow(server, key, job_id), follow(server, key, job_id)
    assert (first.status_code, second.status_code) == (200, 200)

    refused = follow(server, key, job_id)
    first.close()  # the server notices at its next heartbeat and frees the slot
    statuses, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        retry = follow(server, key, job_id)
        statuses.append(retry.status_code)
        retry.close()
        if retry.status_code == 200:
            break
        time.sleep(0.2)
    predicted = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": SETOSA},
        headers={"X-API-Key": key},
        timeout=10,
    )
    second.close()

    assert refused.status_code == 503
    ((_, name, data),) = list(events_of(refused.iter_lines()))
    assert name == "error" and data["code"] == "too_many_streams"
    assert statuses[-1] == 200, statuses
    assert predicted.status_code == 200  # ordinary requests never wait for stream slots
