"""OpenTelemetry: request, database and task spans, the task continuing the request's trace.

The spans go to the SDK's in-memory exporter: the real SDK and instrumentations, no mocks.
"""

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rest_framework.test import APIClient

from mlplatform import tracing
from mlplatform.background import group_commit
from mlplatform.logging import ContextFilter, JSONFormatter, log_context
from predictions.models import BatchJob
from predictions.tasks import batch_job_run

SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def spans():
    """Tracing on for this module, as if OTEL_EXPORTER_OTLP_ENDPOINT were set."""
    exporter = InMemorySpanExporter()
    assert not tracing.enabled()
    assert tracing.setup(exporter)
    yield exporter
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    DjangoInstrumentor().uninstrument()
    SQLite3Instrumentor().uninstrument()
    PsycopgInstrumentor().uninstrument()
    tracing._enabled = False


@pytest.fixture
def traced_connection(spans):
    """The test database's connection, traced as one opened after ``setup`` would be.

    In a server ``setup`` runs before any connection opens; the test database's connection
    was opened (and for SQLite in memory cannot be reopened) before this module turned
    tracing on, so it is wrapped the way the instrumentation wraps new connections.
    """
    from django.db import connection
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    connection.ensure_connection()
    raw = connection.connection
    instrumentor = SQLite3Instrumentor if connection.vendor == "sqlite" else PsycopgInstrumentor
    connection.connection = instrumentor.instrument_connection(
        raw, tracer_provider=trace.get_tracer_provider()
    )
    yield
    connection.connection = raw


@pytest.fixture
def queued(monkeypatch):
    """The tasks queued with django-q2 (run by hand below, as a worker would, later)."""
    calls = []
    monkeypatch.setattr(
        "predictions.batch.jobs.async_task",
        lambda *args, **kwargs: calls.append((args, kwargs)),
    )
    return calls


def test_without_the_endpoint_tracing_stays_off(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.setattr(tracing, "_enabled", False)  # as in a process that never set it up

    assert tracing.setup() is False and not tracing.enabled()
    assert tracing.task_kwargs() == {}
    with tracing.task_span(
        "batch_job_run", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    ):
        assert tracing.current_trace_id() is None


@pytest.mark.django_db(transaction=True)
def test_the_batch_task_span_is_a_child_of_the_submitting_request_span(
    spans, traced_connection, queued, user, make_key, demo_models
):
    client = APIClient()  # a new client loads the middleware, with OpenTelemetry's
    client.credentials(HTTP_X_API_KEY=make_key(user))
    spans.clear()

    response = client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA] * 3}, format="json", HTTP_X_REQUEST_ID="t-1"
    )
    assert response.status_code == 202
    [(args, kwargs)] = queued
    group_commit.drain(timeout=10)  # what the request left to it (its key's last use) is written
    request_spans = spans.get_finished_spans()
    spans.clear()
    assert trace.get_current_span().get_span_context().is_valid is False  # outside the request
    func, *task_args = args
    assert func == "predictions.tasks.batch_job_run"
    batch_job_run(*task_args, **{k: v for k, v in kwargs.items() if k != "task_name"})

    [server] = [s for s in request_spans if s.kind == trace.SpanKind.SERVER]
    task_spans = spans.get_finished_spans()
    [task] = [s for s in task_spans if s.name == "batch_job_run"]
    assert server.attributes["mlplatform.request_id"] == "t-1"
    assert server.attributes["http.route"].startswith("api/v1/predict/batch")
    assert "traceparent" in kwargs["trace_context"]
    assert task.context.trace_id == server.context.trace_id
    assert task.parent.span_id == server.context.span_id
    assert task.attributes["mlplatform.job_id"] == response.json()["job_id"]
    assert BatchJob.objects.get().status == BatchJob.Status.COMPLETED

    # Database calls are spans too: the request's under the request, the task's under the task.
    # (Writes a request leaves to the group commit, such as its key's last use, are traces of
    # their own: the commit's thread writes those of many requests together.)
    request_db = [s for s in request_spans if s.kind == trace.SpanKind.CLIENT and s.parent]
    task_db = [s for s in task_spans if s.kind == trace.SpanKind.CLIENT]
    assert request_db and all(s.context.trace_id == server.context.trace_id for s in request_db)
    assert any(s.parent.span_id == server.context.span_id for s in request_db)
    assert task_db and all(s.parent.span_id == task.context.span_id for s in task_db)
    assert any("INSERT" in s.attributes.get("db.statement", "") for s in request_db)


def test_log_lines_carry_the_trace_id(spans):
    record = logging.LogRecord("tests", logging.INFO, "", 0, "hello", (), None)
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("outer") as span, log_context(request_id="r-9"):
        ContextFilter().filter(record)

    entry = json.loads(JSONFormatter().format(record))
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["request_id"] == "r-9"
    assert tracing.current_trace_id() is None
