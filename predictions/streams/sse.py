"""Server-Sent Events over HTTP: ``POST /predict/stream`` (predictions, each stored as ``/predict``
does) and ``GET /predict/batch/{id}/events`` (a batch job's progress)."""

from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.permissions import any_scope_required, scope_required
from mlplatform.api.renderers import ORJSONRenderer
from mlplatform.api.schema import event_stream_schema
from mlplatform.conf import platform_setting
from predictions.batch.results import job_state
from predictions.models import BatchJob
from predictions.selectors import batch_job_get
from predictions.serializers import PredictRequestSerializer
from predictions.streams.events import (
    CONTENT_TYPE,
    HEADERS,
    held_stream,
    prediction_events,
    sse_event,
    stream_inputs,
    watched_job_events,
)


class EventStreamRenderer(BaseRenderer):
    """Lets ``Accept: text/event-stream`` through; an error answer becomes one ``error`` event."""

    media_type = CONTENT_TYPE
    format = "sse"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else sse_event("error", data)


def event_stream_response(events, user) -> StreamingHttpResponse:
    """A streaming answer of ``events``, holding a stream slot of ``user`` until it is closed
    (503 when the server has none free, 429 when the user holds their most).

    The view's database connection goes back now (to its pool, on PostgreSQL): the events are
    made on the event loop, which reads and writes through other threads, and the view's own
    thread would hold its connection for as long as the stream stays open.
    """
    if not connection.in_atomic_block:
        connection.close()
    response = StreamingHttpResponse(held_stream(events, user.pk), content_type=CONTENT_TYPE)
    for name, value in HEADERS.items():
        response[name] = value
    return response


class PredictStreamRequestSerializer(PredictRequestSerializer):
    input_data = serializers.JSONField(
        required=False, help_text="One row, as for /predict (or send 'inputs')."
    )
    inputs = serializers.JSONField(
        required=False,
        help_text="Several rows (at most MAX_STREAM_ROWS, default 1000), predicted in order.",
    )

    def validate(self, data):
        if ("input_data" in data) == ("inputs" in data):
            raise serializers.ValidationError("Send either 'input_data' (one row) or 'inputs'.")
        return data


_EXAMPLE = (
    'event: started\ndata: {"stream_id":"9f0c...","total":2,"model":"iris","request_id":"..."}\n\n'
    'event: prediction\ndata: {"index":0,"prediction_id":"...","model":"iris",'
    '"model_version":"v2","prediction":[0.98,0.02,0.0],"label":"setosa","confidence":0.98,...}\n\n'
    'event: progress\ndata: {"completed":1,"total":2,"percent":50.0}\n\n'
    "...\n\n"
    'event: completed\ndata: {"stream_id":"9f0c...","total":2,"completed":2,"failed":0,...}\n\n'
)


class PredictStreamView(APIView):
    """Predict one row or many, as Server-Sent Events; each prediction is stored as it is sent."""

    permission_classes = [scope_required("stream")]
    ratelimit_group = "stream"
    renderer_classes = [ORJSONRenderer, EventStreamRenderer]

    @extend_schema(
        request=PredictStreamRequestSerializer,
        responses={
            (200, CONTENT_TYPE): OpenApiResponse(
                response=event_stream_schema(
                    "started", "prediction", "error", "progress", "completed"
                ),
                description=(
                    "Events `started` (stream_id, total), per row `prediction` (index, "
                    "prediction, label, confidence, prediction_id, ...) or `error` (index, "
                    "detail, code), and `progress` (completed, total, percent), then "
                    "`completed` (summary). Every event's data also has the tutorial's "
                    "`status` (started, processing, completed, error), and `progress` "
                    "(percent) with `step` (rows done); a one-row stream's `completed` holds "
                    "its `prediction`, `label` and `confidence`. While a row is being "
                    "computed, a `: keep-alive` comment every STREAM_HEARTBEAT_SECONDS (15 s). "
                    "Closing the connection stops the work. Errors before the first event are "
                    "JSON, or one `error` event when only `text/event-stream` is accepted."
                ),
                examples=[OpenApiExample("two rows", value=_EXAMPLE, media_type=CONTENT_TYPE)],
            ),
            400: OpenApiResponse(description="A bad row, named before any event is sent."),
            404: OpenApiResponse(description="Unknown model or version."),
            429: OpenApiResponse(description="Rate limited, or you hold your most open streams."),
            503: OpenApiResponse(description="This server holds its limit of open streams."),
        },
    )
    def post(self, request):
        serializer = PredictStreamRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        field = "inputs" if "inputs" in data else "input_data"
        model_name, rows = stream_inputs(
            field=field,
            value=data[field],
            model_name=data.get("model"),
            version_label=data.get("model_version"),
            user=request.user,
            api_key=api_key,
        )
        events = prediction_events(
            user=request.user,
            api_key=api_key,
            rows=rows,
            model_name=model_name,
            version_label=data.get("model_version"),
            timeout=data.get("timeout"),
            request_id=request.request_id,
        )
        return event_stream_response(events, request.user)


class BatchEventsView(APIView):
    """Server-Sent Events of a job's progress until it ends; resumable with Last-Event-ID."""

    permission_classes = [any_scope_required("read", "batch")]
    # EventSource sends ``Accept: text/event-stream``; errors then arrive as one error event.
    renderer_classes = [ORJSONRenderer, EventStreamRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                description="Resume after this event (ids are completed-row counts).",
            ),
            OpenApiParameter(
                "last_event_id", str, description="The same, for clients that cannot set headers."
            ),
        ],
        responses={
            (200, "text/event-stream"): event_stream_schema(
                "progress", *map(str, BatchJob.TERMINAL), "error"
            )
        },
    )
    def get(self, request, pk):
        job = batch_job_get(user=request.user, job_id=pk)
        last_event_id = request.headers.get("Last-Event-ID") or request.query_params.get(
            "last_event_id"
        )
        events = watched_job_events(
            job,
            state=job_state(job.pk),
            last_event_id=last_event_id,
            heartbeat_seconds=platform_setting("STREAM_HEARTBEAT_SECONDS"),
        )
        return event_stream_response(events, request.user)
