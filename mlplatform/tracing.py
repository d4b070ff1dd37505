"""OpenTelemetry traces of requests, database calls and batch tasks, on when asked.

Nothing happens unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard variable; the
other ``OTEL_*`` variables, such as ``OTEL_SERVICE_NAME`` or ``OTEL_EXPORTER_OTLP_HEADERS``,
work as the SDK documents). Then every process exports spans over OTLP/HTTP: one per request
(Django), one per SQL statement (SQLite or psycopg), and one per batch task, whose parent is
the span of the request that submitted the job: the submitting request puts its W3C
``traceparent`` into the task's keyword arguments (``task_kwargs``) and the worker continues
the trace from it (``task_span``). The packages come with the ``otel`` extra.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from mlplatform.conf import env

_enabled = False


def enabled() -> bool:
    return _enabled


def setup(exporter: Any = None) -> bool:
    """Turn tracing on if configured (or with ``exporter``, for tests); True when on.

    Called once per process from ``PlatformConfig.ready``, before the WSGI handler loads the
    middleware, so Django's instrumentation can add its own.
    """
    global _enabled
    if _enabled:
        return True
    if exporter is None and not env("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise ImproperlyConfigured(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            f"pip install 'mlplatform[otel]' ({exc})"
        ) from exc

    service = env("OTEL_SERVICE_NAME")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The batch processor re-creates its thread in forked children (uvicorn, django-q2).
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider, response_hook=_response_hook)
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    _enabled = True
    return True


def _response_hook(span, request, response) -> None:
    request_id = getattr(request, "request_id", None)
    if request_id and span.is_recording():
        span.set_attribute("mlplatform.request_id", request_id)


def task_kwargs() -> dict[str, Any]:
    """Keyword arguments that carry the current trace into a queued task ({} when off)."""
    if not _enabled:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {"trace_context": carrier} if carrier else {}


@contextmanager
def task_span(name: str, carrier: dict[str, str] | None, **attributes: Any) -> Iterator[Any]:
    """A span for one run of a task, continuing the trace in ``carrier`` (no-op when off)."""
    if not _enabled:
        yield None
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(carrier or {})
    tracer = trace.get_tracer("mlplatform.tasks")
    attributes = {f"mlplatform.{key}": str(value) for key, value in attributes.items()}
    with tracer.start_as_current_span(
        name, context=context, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


def current_trace_id() -> str | None:
    """The current trace id in hex, for log lines (None when off or outside a span)."""
    if not _enabled:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
