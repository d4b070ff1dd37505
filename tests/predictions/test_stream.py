"""POST /predict/stream: events in order, stored predictions, validation, scopes, slots."""

import json
import threading
import time

import pytest
from django.db import OperationalError, connections

from mlplatform.logging import log_context_get
from predictions import streaming
from predictions.models import Prediction
from predictions.registry import registry
from predictions.services import predict as predict_service
from predictions.services.batch import batch_job_process
from predictions.streaming import HEARTBEAT, job_watcher, prediction_events, stream_slots

pytestmark = pytest.mark.usefixtures("demo_models")
# A stream's rows are stored by its worker thread, through a database connection of its own
# that sees only committed rows: tests that read a stream commit (the database is emptied after).
streamed = pytest.mark.django_db(transaction=True)
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
HUGE = [3e38] * 4  # finite as float32, but the first layer overflows


def stream(client, body, **headers):
    return client.post("/api/v1/predict/stream", body, format="json", **headers)


def parse(chunks) -> list[tuple[str, dict]]:
    """(event, data) of each event; comments (heartbeats) come out as (':', {})."""
    events = []
    for block in b"".join(chunks).decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append((":", {}))
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@streamed
def test_a_stream_sends_started_then_each_prediction_and_progress_then_completed(key_client):
    response = stream(key_client, {"inputs": [SETOSA, VIRGINICA], "model_version": "v1"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    events = parse(response.streaming_content)
    assert [name for name, _ in events] == [
        "started",
        "prediction",
        "progress",
        "prediction",
        "progress",
        "completed",
    ]
    started, first, progress, second = (data for _, data in events[:4])
    assert started["total"] == 2 and started["stream_id"]
    assert (first["index"], first["label"]) == (0, "setosa")
    assert (second["index"], second["label"]) == (1, "virginica")
    assert progress == {"completed": 1, "total": 2, "percent": 50.0}
    assert events[-1][1] | {"seconds": 0} == {
        "stream_id": started["stream_id"],
        "total": 2,
        "completed": 2,
        "failed": 0,
        "model": "iris",
        "model_versions": {"v1": 2},
        "seconds": 0,
    }


@streamed
def test_each_streamed_prediction_is_stored_and_readable_like_a_predict(key_client):
    events = parse(stream(key_client, {"inputs": [SETOSA, VIRGINICA]}).streaming_content)
    sent = [data for name, data in events if name == "prediction"]

    stored = {str(p.id): p for p in Prediction.objects.all()}
    assert set(stored) == {e["prediction_id"] for e in sent}
    assert [stored[e["prediction_id"]].input for e in sent] == [SETOSA, VIRGINICA]
    read = key_client.get(f"/api/v1/predict/{sent[1]['prediction_id']}").json()
    assert read["label"] == sent[1]["label"] and read["prediction"] == sent[1]["prediction"]


@streamed
def test_one_row_can_be_sent_as_input_data_or_by_feature_name(key_client):
    named = dict(
        zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], SETOSA, strict=True)
    )
    by_list = parse(stream(key_client, {"input_data": SETOSA}).streaming_content)
    by_name = parse(stream(key_client, {"inputs": [named]}).streaming_content)

    assert by_list[0][1]["total"] == 1 and by_list[1][1]["label"] == "setosa"
    assert by_name[1][1]["label"] == "setosa"
    assert Prediction.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [SETOSA, [1, 2, "x", 4]]}, "inputs[1][2] must be a number"),
        ({"inputs": [SETOSA, [1, 2, 3]]}, "row 1: expected 4 features, got 3"),
        ({"input_data": [SETOSA, SETOSA]}, "send one row, or several rows as 'inputs'"),
        ({"inputs": []}, "inputs must not be empty"),
        ({"inputs": None}, "inputs: This field may not be null."),
        ({}, "Send either 'input_data' (one row) or 'inputs'."),
        ({"input_data": SETOSA, "inputs": [SETOSA]}, "Send either"),
    ],
)
def test_a_bad_request_is_refused_before_any_event_and_nothing_is_stored(key_client, body, message):
    response = stream(key_client, body)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert Prediction.objects.count() == 0


def test_more_rows_than_the_limit_are_refused(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_STREAM_ROWS": 3}

    response = stream(key_client, {"inputs": [SETOSA] * 4})

    assert response.status_code == 400
    assert response.json()["detail"] == "inputs has 4 rows; at most 3 are allowed"


def test_an_unknown_model_or_version_is_a_404_before_the_stream(key_client):
    assert stream(key_client, {"input_data": SETOSA, "model": "nope"}).status_code == 404
    missing = stream(key_client, {"input_data": SETOSA, "model_version": "v9"})
    assert missing.status_code == 404
    assert missing.json()["code"] == "version_not_found"


@streamed
def test_a_row_the_model_fails_on_is_an_error_event_and_the_stream_goes_on(key_client):
    body = {"inputs": [SETOSA, HUGE, VIRGINICA], "model_version": "v1"}

    events = parse(stream(key_client, body).streaming_content)

    error = next(data for name, data in events if name == "error")
    assert error["index"] == 1 and "overflow" in error["detail"]
    assert error["code"] == "invalid_input"
    assert events[-1][1]["completed"] == 2 and events[-1][1]["failed"] == 1
    assert Prediction.objects.count() == 2


def test_streaming_needs_the_stream_scope(user, make_key, client_for):
    response = stream(client_for(make_key(user, scopes=["predict"])), {"input_data": SETOSA})

    assert response.status_code == 403
    assert "'stream'" in response.json()["detail"]


def test_without_credentials_the_stream_is_401(client_for):
    response = stream(client_for(), {"input_data": SETOSA})

    assert response.status_code == 401
    assert "WWW-Authenticate" in response


@streamed
def test_an_event_source_client_is_served_and_gets_errors_as_an_error_event(key_client, client_for):
    accept = {"HTTP_ACCEPT": "text/event-stream"}
    served = stream(key_client, {"input_data": SETOSA}, **accept)
    refused = stream(client_for(), {"input_data": SETOSA}, **accept)

    assert served.status_code == 200
    assert parse(served.streaming_content)[-1][0] == "completed"
    assert refused.status_code == 401
    ((name, error),) = parse([refused.content])
    assert name == "error"
    assert error["detail"] == "Authentication credentials were not provided."
    assert error["code"] == "not_authenticated"


@streamed
def test_closing_the_stream_stops_the_work(user):
    events = prediction_events(
        user=user,
        api_key=None,
        rows=[SETOSA] * 50,
        model_name="iris",
        version_label=None,
        timeout=None,
        request_id="r",
    )
    assert next(events).startswith(b"event: started")
    assert next(events).startswith(b"event: prediction")

    events.close()  # what the server does when a write to the client fails

    assert Prediction.objects.count() == 1


def events_of(user, rows, **options) -> list[bytes]:
    """Every chunk of a stream of ``rows`` for iris, read to its end."""
    return list(
        prediction_events(
            user=user,
            api_key=None,
            rows=rows,
            model_name="iris",
            version_label=None,
            timeout=None,
            request_id=options.pop("request_id", "r"),
            **options,
        )
    )


@pytest.fixture
def rows_seen(monkeypatch):
    """Run each row of a stream through ``prediction_create`` as usual, calling ``before(row)``
    first (on the worker's thread); what it returns is kept, in order, in the list returned."""
    seen = []
    create = streaming.prediction_create

    def watch(before):
        def predict(**options):
            seen.append(before(options["input_data"]))
            return create(**options)

        monkeypatch.setattr(streaming, "prediction_create", predict)
        return seen

    return watch


@streamed
def test_while_a_slow_row_runs_a_heartbeat_comment_is_sent_every_interval(user, rows_seen):
    rows_seen(lambda row: time.sleep(0.6) if row == VIRGINICA else None)

    chunks = events_of(user, [SETOSA, VIRGINICA], heartbeat_seconds=0.1)

    names = [name for name, _ in parse(chunks)]
    assert names[:3] == ["started", "prediction", "progress"]  # a fast row: no comment
    beats = names[3:-3]
    assert 3 <= len(beats) <= 7 and set(beats) == {":"}, names  # 0.6 s at one per 0.1 s
    assert names[-3:] == ["prediction", "progress", "completed"]
    assert HEARTBEAT in chunks
    assert Prediction.objects.count() == 2


@streamed
def test_a_row_waits_its_turn_while_the_processs_stream_rows_are_all_being_computed(user, settings):
    settings.PLATFORM = {**getattr(settings, "PLATFORM", {}), "STREAM_ROW_CONCURRENCY": 1}
    turn = streaming.row_slots(1)
    chunks: list[bytes] = []
    turn.acquire()  # another stream's row is being computed
    try:
        events = prediction_events(
            user=user,
            api_key=None,
            rows=[SETOSA],
            model_name="iris",
            version_label=None,
            timeout=None,
            request_id="r",
            heartbeat_seconds=0.1,
        )
        reader = threading.Thread(target=lambda: chunks.extend(chunk for chunk in events))
        reader.start()
        time.sleep(0.5)
        waiting = [name for name, _ in parse(list(chunks))]
        stored_while_waiting = Prediction.objects.count()
    finally:
        turn.release()
    reader.join(timeout=10)

    assert waiting[0] == "started" and set(waiting[1:]) == {":"} and len(waiting) >= 3, waiting
    assert stored_while_waiting == 0
    assert [name for name, _ in parse(chunks)][-3:] == ["prediction", "progress", "completed"]
    assert Prediction.objects.count() == 1


@streamed
def test_a_database_outage_mid_stream_ends_it_with_an_error_event_naming_it(user, rows_seen):
    def lose_the_database(row):
        if row == VIRGINICA:
            raise OperationalError("connection refused")

    rows_seen(lose_the_database)

    events = parse(events_of(user, [SETOSA, VIRGINICA, SETOSA]))

    assert [name for name, _ in events] == ["started", "prediction", "progress", "error"]
    assert events[-1][1] == {
        "detail": "The database is unavailable; try again shortly.",
        "code": "database_unavailable",
    }
    assert Prediction.objects.count() == 1


@streamed
def test_rows_are_computed_off_the_streams_thread_in_its_log_context(user, rows_seen):
    seen = rows_seen(lambda row: (threading.current_thread(), log_context_get()))

    chunks = events_of(user, [SETOSA, VIRGINICA], request_id="req-7")

    stream_id = parse(chunks)[0][1]["stream_id"]
    assert [thread for thread, _ in seen] == [seen[0][0]] * 2
    assert seen[0][0] is not threading.current_thread()
    assert [context for _, context in seen] == [{"request_id": "req-7", "stream_id": stream_id}] * 2


@streamed
def test_without_a_pool_the_worker_keeps_its_connection_until_the_stream_ends(user, rows_seen):
    seen = rows_seen(lambda row: (connections["default"], connections["default"].connection))

    events_of(user, [SETOSA, VIRGINICA, SETOSA])

    worker = seen[0][0]
    assert [wrapper for wrapper, _ in seen] == [worker] * 3  # the worker thread's connection,
    assert [held is not None for _, held in seen] == [False, True, True]  # opened once,
    assert worker.connection is None  # closed when the stream ended


@streamed
def test_with_a_pool_inferences_run_without_a_connection_and_each_row_gives_it_back(
    user, monkeypatch
):
    monkeypatch.setattr(streaming, "_pooled", lambda: True)
    seen, run = [], predict_service.inference_run

    def inference(*args, **kwargs):
        seen.append((connections["default"], connections["default"].connection))
        return run(*args, **kwargs)

    monkeypatch.setattr(predict_service, "inference_run", inference)
    registry.clear()  # the first row's registry reads the models and the artifact first

    chunks = events_of(user, [SETOSA, VIRGINICA, SETOSA])

    assert [name for name, _ in parse(chunks)].count("prediction") == 3
    assert [held for _, held in seen] == [None, None, None]
    assert seen[-1][0].connection is None  # given back after the last row too
    assert Prediction.objects.count() == 3


def test_streams_beyond_the_open_stream_limit_get_503_until_one_closes(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_OPEN_STREAMS": 1}
    first = stream(key_client, {"input_data": SETOSA})

    refused = stream(key_client, {"input_data": SETOSA})
    first.close()
    again = stream(key_client, {"input_data": SETOSA})
    again.close()

    assert first.status_code == 200
    assert refused.status_code == 503
    assert refused.json()["code"] == "too_many_streams"
    assert again.status_code == 200
    assert stream_slots.open == 0


def test_the_stream_is_documented_as_an_event_stream(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/predict/stream"]["post"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]


# --- batch job events -----------------------------------------------------------------------


def submit_job(client, n: int = 5) -> str:
    body = {"inputs": [SETOSA] * n, "model_version": "v1"}
    response = client.post("/api/v1/predict/batch", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()["job_id"]


def test_event_source_clients_can_follow_and_resume_a_job(key_client):
    job_id = submit_job(key_client)
    batch_job_process(job_id=job_id)
    url = f"/api/v1/predict/batch/{job_id}/events"

    followed = key_client.get(url, HTTP_ACCEPT="text/event-stream")
    resumed = key_client.get(url + "?last_event_id=5", HTTP_ACCEPT="text/event-stream")

    assert followed.status_code == 200
    assert [name for name, _ in parse(followed.streaming_content)] == ["progress", "completed"]
    assert [name for name, _ in parse(resumed.streaming_content)] == ["completed"]


@pytest.mark.django_db(transaction=True)
def test_a_waiting_stream_follows_the_job_through_the_shared_watcher(
    key_client, settings, monkeypatch
):
    settings.PLATFORM = {**settings.PLATFORM, "STREAM_HEARTBEAT_SECONDS": 0.2}
    monkeypatch.setattr(job_watcher, "poll_seconds", 0.05)
    job_id = submit_job(key_client)
    response = key_client.get(f"/api/v1/predict/batch/{job_id}/events")
    events = iter(response.streaming_content)

    first = next(events)
    assert first.startswith(b"id: 0\nevent: progress")
    assert next(events) == HEARTBEAT  # nothing happened for 0.2 s
    batch_job_process(job_id=job_id)
    rest = parse(events)
    response.close()

    assert [name for name, _ in rest if name != ":"] == ["progress", "completed"]
    assert rest[-1][1]["completed"] == 5
    assert stream_slots.open == 0
    deadline = time.monotonic() + 2
    while job_watcher._thread is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # the watcher stops once nothing is watched
    assert job_watcher._thread is None
