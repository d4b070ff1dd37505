"""Structured logs: a per-request (or per-task) context, JSON lines, and the request log line.

``RequestIdMiddleware`` opens a context holding the request id for the whole request; services
add what they learn (``log_context_set(model=..., prediction_id=...)``), and every log line
written meanwhile carries those fields. At the end of the request one line sums it up:
method, path, status, duration, principal (user id or API key prefix, never a secret), model,
version, prediction or job id. Background tasks open their own context (``task_context``)
so a batch job's lines carry the request id of the request that submitted it.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import wraps
from typing import Any

import orjson
from django.utils.functional import SimpleLazyObject, empty

from mlplatform import tracing
from mlplatform.background import LineWriter

_context: ContextVar[dict[str, Any] | None] = ContextVar("mlplatform_log_context", default=None)

# Each record would otherwise look up its thread and its multiprocessing process name, which no
# line shows (the logging HOWTO's "Optimization"): a good part of a record's cost.
logging.logThreads = False
logging.logMultiprocessing = False

request_logger = logging.getLogger("mlplatform.request")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "context"}
)


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Open a fresh context for a request or a task; it is dropped on exit."""
    context = {k: v for k, v in fields.items() if v not in (None, "")}
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def log_context_set(**fields: Any) -> None:
    """Add fields to the open context (a no-op outside requests and tasks)."""
    context = _context.get()
    if context is not None:
        context.update({k: v for k, v in fields.items() if v not in (None, "")})


def log_context_get() -> dict[str, Any]:
    return dict(_context.get() or {})


def current_request_id() -> str | None:
    context = _context.get()
    return context.get("request_id") if context else None


def task_context(func: Callable) -> Callable:
    """Give each run of a background task a context of its own (tasks share worker threads)."""

    @wraps(func)
    def run(*args, **kwargs):
        with log_context(task=func.__name__):
            return func(*args, **kwargs)

    return run


# --- Formatting -------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Attach the open context to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = _context.get() or {}
            if tracing.enabled() and (trace_id := tracing.current_trace_id()):
                record.context = {**record.context, "trace_id": trace_id}
        return True


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        entry.update(getattr(record, "context", None) or {})
        entry.update(_extra(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines (``DEBUG``): the message, then the context as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**(getattr(record, "context", None) or {}), **_extra(record)}
        if record.name == request_logger.name:
            for shown in ("method", "path", "status", "duration_ms"):
                fields.pop(shown, None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


# --- The request log line ---------------------------------------------------------------


class QueuedStreamHandler(logging.StreamHandler):
    """The platform's log handler: a caller only queues its record, and a background thread
    (``mlplatform.background.LineWriter``) formats what queued and writes it to standard error
    in one write, so no request waits on a write.

    Lines reach the stream within ``LineWriter.INTERVAL``; ``flush`` (which
    ``logging.shutdown`` calls at exit) writes what is still queued.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writer: LineWriter[logging.LogRecord] = LineWriter(self._write)

    def emit(self, record: logging.LogRecord) -> None:
        # The message is merged now (its arguments may change later), the rest formatted by the
        # writer; the record stays in this process, so its exc_info can travel as it is.
        try:
            record.msg, record.args = record.getMessage(), None
        except Exception:  # noqa: BLE001 - as Handler.emit does: reported, never raised
            self.handleError(record)
            return
        self._writer.put(record)

    def flush(self) -> None:
        self._writer.flush()

    def _write(self, records: list[logging.LogRecord]) -> None:
        lines = []
        for record in records:
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:  # noqa: BLE001 - as StreamHandler.emit does
                self.handleError(record)
        with self.lock:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # noqa: BLE001 - the stream failed (closed, full): said once
                self.handleError(records[-1])


def principal_of(request) -> str | None:
    """``key:<public prefix>`` or ``user:<id>``; None for anonymous callers. Never a secret."""
    user = request.__dict__.get("user")
    if user is None or (isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    if not getattr(user, "is_authenticated", False):
        return None
    prefix = getattr(request.__dict__.get("auth"), "prefix", None)
    return f"key:{prefix}" if isinstance(prefix, str) else f"user:{user.pk}"


def request_finished(request, response, started: float) -> None:
    """Log the request's line, tally it for the caller's stats, count a rate limit refusal."""
    principal = principal_of(request)
    request_logged(
        method=request.method,
        path=request.path,
        status=response.status_code,
        seconds=time.perf_counter() - started,
        principal=principal,
        user_id=request.user.pk if principal is not None else None,
        remote_addr=request.META.get("REMOTE_ADDR"),
        # accounts.ratelimit leaves the usage it counted on the request (other 429s are not).
        usage=getattr(request, "ratelimit", None),
    )


# Called with every answered request of a known user (``user_id``, ``error``, ``seconds``):
# the apps' per-user tallies (``predictions.stats.usage_record``), added in their ``ready()``.
USER_REQUEST_OBSERVERS: list[Callable[..., None]] = []


def request_logged(
    *,
    method: str,
    path: str,
    status: int,
    seconds: float,
    principal: str | None,
    user_id: int | None,
    remote_addr: str | None,
    usage: Any = None,
) -> None:
    """The request's log line, its tally in the caller's stats, a rate limit refusal counted."""
    from mlplatform import metrics

    if status == 429 and getattr(usage, "limited", False):
        metrics.rate_limited(usage.group)
    if user_id is not None and not path.startswith(("/admin/", "/static/")):
        for observer in USER_REQUEST_OBSERVERS:
            observer(user_id=user_id, error=status >= 400, seconds=seconds)
    level = logging.ERROR if status >= 500 else logging.INFO
    if not request_logger.isEnabledFor(level):
        return
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "principal": principal,
        "remote_addr": remote_addr,
    }
    # makeRecord + handle, not log(): the caller's file and line would say nothing here and
    # finding them is a good part of a log call's cost.
    record = request_logger.makeRecord(
        request_logger.name,
        level,
        __file__,
        0,
        "%s %s %s %.1fms",
        (method, path, status, seconds * 1000),
        None,
        extra={k: v for k, v in fields.items() if v is not None},
    )
    request_logger.handle(record)
