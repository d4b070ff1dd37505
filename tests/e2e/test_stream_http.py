"""End to end: prediction streams and batch job events over real HTTP from ``manage.py serve``.

The web servers run with ``serve --no-worker``: a submitted job waits until a test starts a
worker (as in test_batch_worker.py, no other worker may serve the instance meanwhile).
"""

import contextlib
import itertools
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.servers import start_server

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
# Waiting servers send a keep-alive comment this often, so a test sees it (and a disconnect
# is noticed) within a fraction of a second.
HEARTBEAT_SECONDS = 0.3
FAST = {
    "MLPLATFORM_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    "MLPLATFORM_BATCH_CHUNK_ROWS": "10",
}


@pytest.fixture(scope="module")
def server(instance, _servers_stopped):
    """This module's web server (in place of the shared one): no background worker."""
    server = start_server(instance, "stream-web", args=["--no-worker"], env=FAST)
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


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


def settled_count(server, key: str, model: str, quiet_s: float = 2.0) -> int:
    """The number of stored predictions of ``model`` once it stopped changing for ``quiet_s``."""
    seen, deadline = [count_predictions(server, key, model)], time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.25)
        seen.append(count_predictions(server, key, model))
        if len(seen) > quiet_s / 0.25 and len(set(seen[-int(quiet_s / 0.25) - 1 :])) == 1:
            return seen[-1]
    pytest.fail(f"predictions of {model} still being stored: {seen}")


def stalling_client(server, key: str, body: dict) -> tuple[socket.socket, bytes]:
    """A client that reads a stream through its first prediction, then stops reading.

    A server writes ahead of its client as far as the socket buffers take. Over loopback, with
    its 64 KB segments, Linux grows the server's send buffer to megabytes (more than a whole
    stream); this client announces Ethernet's segment size (TCP_MAXSEG) and a small receive
    buffer, as a client across a network would, and the buffers fill after some 100-150 KB:
    about 250 rows of digits (550 bytes of events each) or iris (420 bytes).
    """
    payload = json.dumps(body).encode()
    address = urlsplit(server.base_url)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((address.hostname, address.port))
    sock.sendall(
        b"POST /api/v1/predict/stream HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (address.netloc.encode(), key.encode(), len(payload))
        + payload
    )
    received = b""
    while b"event: prediction" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
        if b"\r\n\r\n" in received and b" 200 OK" not in received.split(b"\r\n", 1)[0]:
            break  # refused: the caller sees the status
    return sock, received


def slow_row(server, key: str, version: str, seconds: float) -> list[float]:
    """A row that ``version`` (``slow_version``) takes about ``seconds`` to answer on this host.

    A ``/predict`` of a known number of rounds measures the time a round takes, once the
    server has seen the new version and loaded it (the first answer may include the load).
    A row's time also holds a fixed cost (queueing, the hand-off to the model), so the rounds
    are measured again with a row long enough (about 0.3 s) for that cost not to count.
    """
    rounds, deadline, answered = 100, time.monotonic() + 10, 0
    while True:
        response = requests.post(
            server.url("/api/v1/predict"),
            json={"input_data": [rounds, 0, 0, 0], "model": "iris", "model_version": version},
            headers={"X-API-Key": key},
            timeout=30,
        )
        answered += response.status_code == 200
        if answered == 2 or response.status_code not in (200, 404) or time.monotonic() > deadline:
            break
        time.sleep(0.2 if response.status_code == 404 else 0)
    assert response.status_code == 200, response.text
    per_round = response.json()["processing_time"] / rounds
    rounds = max(rounds, round(0.3 / per_round))
    response = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": [rounds, 0, 0, 0], "model": "iris", "model_version": version},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    per_round = response.json()["processing_time"] / rounds
    return [round(seconds / per_round), 0.0, 0.0, 0.0]


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
    assert received[-2][1] == {
        "completed": 3,
        "total": 3,
        "percent": 100.0,
        "status": "processing",
        "progress": 100.0,
        "step": 3,
    }
    assert received[-1][1]["completed"] == 3 and received[-1][1]["failed"] == 0


def test_a_bad_row_is_refused_before_the_stream_starts(server, instance):
    response = open_stream(server, instance.demo_key, {"inputs": [SETOSA, [1, 2, "x", 4]]})

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/event-stream"
    ((_, name, data),) = list(events_of(response.iter_lines()))
    assert name == "error" and data["detail"] == "inputs[1][2] must be a number, got string"


def test_while_a_slow_row_runs_heartbeats_arrive_then_its_prediction_is_sent_and_stored(
    server, instance, slow_version
):
    key = instance.demo_key
    row = slow_row(server, key, slow_version, seconds=2.0)
    body = {"inputs": [row], "model": "iris", "model_version": slow_version}

    arrivals = []
    with open_stream(server, key, body) as response:
        assert response.status_code == 200
        for _, name, data in events_of(response.iter_lines()):
            arrivals.append((time.monotonic(), name, data))

    names = [name for _, name, _ in arrivals]
    assert names[0] == "started" and names[-3:] == ["prediction", "progress", "completed"]
    prediction = arrivals[-3][2]
    assert prediction["model_version"] == slow_version
    took = prediction["processing_time"]
    assert took > 1.0  # the row took several heartbeat intervals
    beats = names[1:-3]
    assert set(beats) == {":"}, names
    assert len(beats) >= max(2, int(took / HEARTBEAT_SECONDS) - 2), (took, names)
    times = [at for at, _, _ in arrivals[:-2]]  # from started, through the comments, to the row
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.0  # never silent for the row
    stored = requests.get(
        server.url(f"/api/v1/predict/{prediction['prediction_id']}"),
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert stored.status_code == 200
    assert stored.json()["input_data"] == row


def test_a_client_that_disconnects_stops_the_work(server, instance):
    key = instance.demo_key
    rows = [[float(i % 16)] * 64 for i in range(1000)]  # digits: 64 features, used only here
    before = count_predictions(server, key, "digits")

    sock, received = stalling_client(server, key, {"inputs": rows, "model": "digits"})
    # Rows are stored as fast as their events can be written: until the buffers are full (a
    # quarter of the stream), then the server waits in a write and predicts nothing. A server
    # that predicted ahead of its writes, or went on after the client left, would store more:
    # all 1000 rows take a couple of seconds.
    stalled = settled_count(server, key, "digits") - before
    sock.close()  # the server's waiting write fails: no further row
    left = settled_count(server, key, "digits") - before

    assert b" 200 OK" in received.split(b"\r\n", 1)[0]
    assert 1 <= stalled <= len(rows) // 2, stalled
    assert left == stalled
    wanted = f"closed by the client after {stalled} of {len(rows)} rows"
    deadline = time.monotonic() + 5
    while wanted not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # log lines are written a fraction of a second later
    assert wanted in server.log.read_text()


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"),
    reason="SQLite has no connection pool: each thread has a connection of its own, which no "
    "stream can take from /predict",
)
def test_more_open_streams_than_pooled_connections_leave_predict_answering(serve, instance):
    # One process, one view thread and the smallest pool it takes (3 connections); a request
    # waits 2 s for one, then gets 503. Four streams are held open below.
    server = serve(
        "pool",
        args=["--no-worker", "--workers", "1"],
        env={**FAST, "WEB_THREADS": "1", "DB_POOL_MAX": "3", "DB_POOL_TIMEOUT": "2"},
    )
    try:
        _streams_leave_the_pool_to_predict(server, instance.demo_key)
    finally:
        server.stop()


def _streams_leave_the_pool_to_predict(server, key: str) -> None:
    rows = [SETOSA] * 1000
    before = count_predictions(server, key, "iris")
    clients = [
        stalling_client(server, key, {"inputs": rows, "model": "iris", "model_version": "v1"})
        for _ in range(4)
    ]
    try:
        stalled = settled_count(server, key, "iris") - before  # 4 streams waiting to write
        answers = [
            requests.post(
                server.url("/api/v1/predict"),
                json={"input_data": VIRGINICA, "model": "iris"},
                headers={"X-API-Key": key},
                timeout=30,
            )
            for _ in range(5)
        ]
        still = count_predictions(server, key, "iris") - before - len(answers)
    finally:
        for sock, _ in clients:
            sock.close()

    assert [b" 200 OK" in received.split(b"\r\n", 1)[0] for _, received in clients] == [True] * 4
    assert 4 <= stalled <= 4 * len(rows) // 2, stalled
    assert [answer.status_code for answer in answers] == [200] * 5, answers[-1].text
    assert still == stalled  # the streams were open, waiting, while /predict answered


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


def test_a_client_that_reads_nothing_is_dropped_after_the_send_deadline(serve, instance):
    server = serve(
        "send-deadline",
        args=["--no-worker", "--workers", "1"],
        env={**FAST, "MLPLATFORM_MAX_OPEN_STREAMS": "1", "MLPLATFORM_STREAM_SEND_TIMEOUT": "1"},
    )
    key = instance.demo_key
    try:
        rows = [SETOSA] * 1000  # more events than the buffers to a stalled client take
        sock, _ = stalling_client(server, key, {"inputs": rows, "model_version": "v1"})
        statuses, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:
            retry = open_stream(server, key, {"input_data": SETOSA})
            statuses.append(retry.status_code)
            retry.close()
            if retry.status_code == 200:
                break
            time.sleep(0.2)
        sock.settimeout(10)
        closed = False
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
            closed = True
        sock.close()
    finally:
        server.stop()

    assert statuses[0] == 503  # the stalled client held the one slot
    assert statuses[-1] == 200, statuses  # until it was dropped
    assert closed  # the server closed its connection
    assert "the client read nothing for 1 s; its stream is dropped" in server.log_tail(200)
