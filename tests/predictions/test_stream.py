"""POST /predict/stream: events in order, stored predictions, validation, scopes, slots."""

import asyncio
import itertools
import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from mlplatform.errors import DatabaseUnavailable
from mlplatform.logging import log_context_get
from predictions.batch.jobs import batch_job_process
from predictions.models import Prediction
from predictions.streams import events as streaming
from predictions.streams.events import HEARTBEAT, job_watcher, prediction_events, stream_slots
from tests.streams import streamed as body_of

pytestmark = pytest.mark.usefixtures("demo_models")
# A stream's rows are stored by the process's group commit, through a database connection of
# its own that sees only committed rows: tests that read a stream commit (the database is
# emptied after).
streamed = pytest.mark.django_db(transaction=True)
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
HUGE = [3e38] * 4  # finite as float32, but the first layer overflows


def stream(client, body, **headers):
    return client.post("/api/v1/predict/stream", body, format="json", **headers)


def parse(chunks) -> list[tuple[str, dict]]:
    """(event, data) of each event; comments (heartbeats) come out as (':', {})."""
    if not isinstance(chunks, bytes | list):
        chunks = [body_of(chunks)]  # a streaming response
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
    events = parse(response)
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
    assert progress == {
        "completed": 1,
        "total": 2,
        "percent": 50.0,
        "status": "processing",
        "progress": 50.0,
        "step": 1,
    }
    # Only a one-row stream's summary holds its answer (``prediction``).
    assert events[-1][1] | {"seconds": 0} == {
        "stream_id": started["stream_id"],
        "total": 2,
        "completed": 2,
        "failed": 0,
        "model": "iris",
        "model_versions": {"v1": 2},
        "seconds": 0,
        "status": "completed",
        "progress": 100,
        "step": 2,
    }


@streamed
def test_each_streamed_prediction_is_stored_and_readable_like_a_predict(key_client):
    events = parse(stream(key_client, {"inputs": [SETOSA, VIRGINICA]}))
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
    by_list = parse(stream(key_client, {"input_data": SETOSA}))
    by_name = parse(stream(key_client, {"inputs": [named]}))

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
        ({"inputs": None}, "Send either 'input_data' (one row) or 'inputs'."),  # null: absent
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

    events = parse(stream(key_client, body))

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
    assert parse(served)[-1][0] == "completed"
    assert refused.status_code == 401
    ((name, error),) = parse([refused.content])
    assert name == "error"
    assert error["detail"] == "Authentication credentials were not provided."
    assert error["code"] == "not_authenticated"


def events_of(
    user, rows, *, read: int | None = None, chunks: list | None = None, **options
) -> list[bytes]:
    """The chunks of a stream of ``rows`` for iris: all of them, or the first ``read`` (then the
    stream is closed, as the server closes it when the client has gone). They are gathered in
    ``chunks`` if given, as they arrive."""

    async def run() -> list[bytes]:
        events = prediction_events(
            user=user,
            api_key=None,
            rows=rows,
            model_name="iris",
            version_label=None,
            timeout=None,
            request_id=options.pop("request_id", "r"),
            **options,
        )
        got = [] if chunks is None else chunks
        async for chunk in events:
            got.append(chunk)
            if len(got) == read:
                await events.aclose()
                break
        return got

    return async_to_sync(run)()


@streamed
def test_closing_the_stream_stops_the_work(user):
    chunks = events_of(user, [SETOSA] * 50, read=2)

    assert chunks[0].startswith(b"event: started")
    assert chunks[1].startswith(b"event: prediction")
    assert Prediction.objects.count() == 1


@pytest.fixture
def rows_seen(monkeypatch):
    """Run each row of a stream through ``aprediction_create`` as usual, awaiting
    ``before(row)`` first; what it returns is kept, in order, in the list returned."""
    seen = []
    create = streaming.aprediction_create

    def watch(before):
        async def predict(checked):
            seen.append(await before(checked.input_data))
            return await create(checked)

        monkeypatch.setattr(streaming, "aprediction_create", predict)
        return seen

    return watch


class Arrivals(list):
    """Chunks of a stream, and when each arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def append(self, chunk: bytes) -> None:
        self.at.append(time.monotonic())
        super().append(chunk)


@streamed
def test_while_a_slow_row_runs_a_heartbeat_comment_is_sent_every_interval(user, rows_seen):
    chunks = Arrivals()

    async def slow(row):
        if row == VIRGINICA:  # slow until the client has had three comments
            deadline = time.monotonic() + 10
            while chunks.count(HEARTBEAT) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)

    rows_seen(slow)

    events_of(user, [SETOSA, VIRGINICA], heartbeat_seconds=0.1, chunks=chunks)

    names = [name for name, _ in parse(chunks)]
    assert names[:3] == ["started", "prediction", "progress"]  # a fast row: no comment
    beats = names[3:-3]
    assert len(beats) >= 3 and set(beats) == {":"}, names
    # One comment per interval of silence, never sooner.
    beats_at = [at for at, chunk in zip(chunks.at, chunks, strict=True) if chunk == HEARTBEAT]
    assert all(b - a >= 0.095 for a, b in itertools.pairwise(beats_at)), beats_at
    assert names[-3:] == ["prediction", "progress", "completed"]
    assert HEARTBEAT in chunks
    assert Prediction.objects.count() == 2


@streamed
def test_a_database_outage_mid_stream_ends_it_with_an_error_event_naming_it(user, rows_seen):
    async def lose_the_database(row):
        if row == VIRGINICA:
            raise DatabaseUnavailable()  # what storing a row answers when the database is gone

    rows_seen(lose_the_database)

    events = parse(events_of(user, [SETOSA, VIRGINICA, SETOSA]))

    assert [name for name, _ in events] == ["started", "prediction", "progress", "error"]
    assert events[-1][1] == {
        "detail": "The database is unavailable; try again shortly.",
        "code": "database_unavailable",
        "status": "error",
    }
    assert Prediction.objects.count() == 1


@streamed
def test_each_row_is_predicted_in_the_streams_log_context(user, rows_seen):
    async def context(row):
        return log_context_get()

    seen = rows_seen(context)

    chunks = events_of(user, [SETOSA, VIRGINICA], request_id="req-7")

    stream_id = parse(chunks)[0][1]["stream_id"]
    assert [{k: c[k] for k in ("request_id", "stream_id")} for c in seen] == [
        {"request_id": "req-7", "stream_id": stream_id}
    ] * 2


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


def test_one_user_cannot_take_the_stream_slots_of_others(
    user, other_user, make_key, client_for, settings
):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_OPEN_STREAMS": 3, "MAX_OPEN_STREAMS_PER_USER": 2}
    first_key, second_key = client_for(make_key(user)), client_for(make_key(user))
    held = [stream(first_key, {"input_data": SETOSA}), stream(second_key, {"input_data": SETOSA})]

    refused = stream(first_key, {"input_data": SETOSA})  # all of a user's keys count together
    other = stream(client_for(make_key(other_user)), {"input_data": SETOSA})
    held.pop().close()
    again = stream(second_key, {"input_data": SETOSA})

    assert [r.status_code for r in held] == [200]
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_streams"
    assert "the most one user may hold" in refused.json()["detail"]
    assert other.status_code == 200
    assert again.status_code == 200
    for response in (*held, other, again):
        response.close()
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
    assert [name for name, _ in parse(followed)] == ["progress", "completed"]
    assert [name for name, _ in parse(resumed)] == ["completed"]


@pytest.mark.django_db(transaction=True)
def test_a_waiting_stream_follows_the_job_through_the_shared_watcher(
    key_client, settings, monkeypatch
):
    settings.PLATFORM = {**settings.PLATFORM, "STREAM_HEARTBEAT_SECONDS": 0.2}
    monkeypatch.setattr(job_watcher, "poll_seconds", 0.05)
    job_id = submit_job(key_client)
    response = key_client.get(f"/api/v1/predict/batch/{job_id}/events")

    async def follow():
        events = aiter(response.streaming_content)
        first, beat = await anext(events), await anext(events)
        await sync_to_async(batch_job_process)(job_id=job_id)
        rest = [chunk async for chunk in events]
        response.close()
        for _ in range(40):  # the watcher stops once nothing is watched
            if job_watcher._task.done():
                break
            await asyncio.sleep(0.05)
        return first, beat, rest, job_watcher._task.done()

    first, beat, rest, watcher_stopped = async_to_sync(follow)()

    assert first.startswith(b"id: 0\nevent: progress")
    assert beat == HEARTBEAT  # nothing happened for 0.2 s
    rest = parse(rest)
    assert [name for name, _ in rest if name != ":"] == ["progress", "completed"]
    assert rest[-1][1]["completed"] == 5
    assert stream_slots.open == 0
    assert watcher_stopped
