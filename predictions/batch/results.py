"""Batch jobs as the API shows them: status bodies, result rows and streamed downloads."""

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import orjson
from django.urls import reverse
from django.utils import timezone

from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PlatformError
from predictions.batch.jobs import chunk_outputs, estimated_completion
from predictions.models import BatchJob
from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input
from predictions.runtime.outputs import describe
from predictions.runtime.tables import FORMATS, Table, TooLarge, TooManyRows, read_table, table_of


def submitted_rows(data: dict, n_features: int, feature_names) -> tuple[Table, str, str]:
    """A submission's rows (JSON ``inputs`` or a ``file``), their format and the file's name;
    InvalidInput (or a 413) names the problem."""
    try:
        if "inputs" in data:
            rows = rows_from_input(
                data["inputs"],
                n_features=n_features,
                feature_names=feature_names,
                field="inputs",
                max_rows=platform_setting("MAX_BATCH_JSON_ROWS"),
            )
            return table_of(rows), BatchJob.InputFormat.JSON, ""
        upload = data["file"]
        name = upload.name or ""
        fmt = data.get("format") or name.rsplit(".", 1)[-1].lower()
        if fmt not in FORMATS:
            raise InvalidInput(
                f"file: cannot tell the format of {name!r}; name it .csv, .npy or .jsonl or "
                "send 'format'."
            )
        if data.get("header") is not None and fmt != "csv":
            raise InvalidInput("header: only a CSV file has a header line.")
        table = read_table(
            upload,
            fmt,
            n_features=n_features,
            max_rows=platform_setting("MAX_BATCH_ROWS"),
            header=data.get("header"),
        )
        return table, fmt, name
    except TooLarge as exc:
        code = "too_many_rows" if isinstance(exc, TooManyRows) else "request_too_large"
        raise PlatformError(f"file: {exc}", code=code, status_code=413) from None
    except InputError as exc:
        where = "inputs" if "inputs" in data else "file"
        message = str(exc)
        raise InvalidInput(
            message if message.startswith(where) else f"{where}: {message}"
        ) from None


def job_links(job: BatchJob) -> dict:
    return {
        "self": reverse("batch-detail", kwargs={"pk": job.pk}),
        "results": reverse("batch-results", kwargs={"pk": job.pk}),
        "events": reverse("batch-events", kwargs={"pk": job.pk}),
        "cancel": reverse("batch-cancel", kwargs={"pk": job.pk}),
    }


def _delivery_state(job: BatchJob) -> dict | None:
    if not job.callback_url:
        return None
    delivery = job.deliveries.order_by("-created_at").first()
    if delivery is None:
        return {"status": "not_sent", "attempts": 0}
    return {
        "status": delivery.status,
        "event": delivery.event_type,
        "attempts": delivery.attempt_count,
        "delivered_at": delivery.delivered_at,
    }


def job_payload(job: BatchJob) -> dict:
    """The status of a job, with progress and timings."""
    elapsed = None
    if job.started_at:
        end = job.finished_at or timezone.now()
        elapsed = max((end - job.started_at).total_seconds(), 0.0)
    return {
        "job_id": str(job.id),
        "status": job.status,
        "model": job.model_version.model.name,
        "model_version": job.model_version.label,
        "routing": job.routing,
        "total_inputs": job.total_inputs,
        "completed": job.completed_inputs,
        "progress": round(job.completed_inputs / job.total_inputs, 4) if job.total_inputs else 1,
        "input_format": job.input_format,
        "error": job.error or None,
        "cancel_requested": job.cancel_requested,
        "callback_url": job.callback_url or None,
        "webhook": _delivery_state(job),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "processing_seconds": elapsed,
        "estimated_completion": None if job.is_terminal else estimated_completion(job),
        "request_id": job.request_id,
        "links": job_links(job),
    }


def job_results(job: BatchJob) -> tuple[list[dict] | None, str | None]:
    """The tutorial's ``results`` of a job once it has ended, every row when there are at most
    ``MAX_PAGE_SIZE``, else that many; and the next ``/results`` page when there are more."""
    if not job.is_terminal:
        return None, None
    size = platform_setting("MAX_PAGE_SIZE")
    stop = min(size, job.completed_inputs)
    rows = result_rows(job, 0, stop) if stop else []
    if job.completed_inputs <= size:
        return rows, None
    return rows, f"{job_links(job)['results']}?page=2&page_size={size}"


def job_detail(job: BatchJob) -> dict:
    """``job_payload`` with ``results`` and ``results_next`` (``job_results``)."""
    results, results_next = job_results(job)
    return job_payload(job) | {"results": results, "results_next": results_next}


def result_rows(job: BatchJob, start: int, stop: int) -> list[dict]:
    """JSON rows ``input_index``, ``prediction``, ``label``, ``confidence`` for [start, stop)."""
    model = job.model_version.model
    rows = []
    for first, outputs in chunk_outputs(job, start, stop):
        for offset, outcome in enumerate(describe(outputs, task=model.task, labels=model.labels)):
            rows.append(
                {
                    "input_index": first + offset,
                    "prediction": outcome.prediction,
                    "label": outcome.label,
                    "confidence": outcome.confidence,
                }
            )
    return rows


# Downloads are written a chunk at a time from lists of byte strings, one per row and column,
# that orjson's formatter and bytes.split make in C: no Python string is formatted per value.


def _row_texts(values: np.ndarray) -> list[bytes]:
    """Each row of a 2-D array as its numbers' shortest exact text, joined by commas."""
    text = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)
    return text[2:-2].split(b"],[")


def _index_texts(first: int, n: int) -> list[bytes]:
    text = orjson.dumps(np.arange(first, first + n), option=orjson.OPT_SERIALIZE_NUMPY)
    return text[1:-1].split(b",")


def _lines(n: int, *columns: list[bytes] | bytes) -> bytes:
    """``n`` rows made of ``columns``, each a list of ``n`` byte strings or one for every row."""
    width = len(columns)
    parts: list[bytes] = [b""] * (n * width)
    for offset, column in enumerate(columns):
        parts[offset::width] = column if isinstance(column, list) else [column] * n
    return b"".join(parts)


def _top(outputs: np.ndarray, labels: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Each row's label (from ``labels``, already encoded) and confidence, as texts."""
    top = outputs.argmax(axis=1)
    confidence = np.take_along_axis(outputs, top[:, None], axis=1)
    return np.asarray(labels, dtype=object)[top].tolist(), _row_texts(confidence)


def _csv_cell(text: str) -> bytes:
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.encode()


def _csv(job: BatchJob) -> Iterator[bytes]:
    model = job.model_version.model
    labels = [b"," + _csv_cell(label) + b"," for label in model.labels]
    width = None
    for first, outputs in chunk_outputs(job, 0, job.completed_inputs):
        if width is None:
            width = outputs.shape[1]
            yield _csv_header(model, width)
        n, index = len(outputs), _index_texts(first, len(outputs))
        if model.task == "classification":
            top = outputs.argmax(axis=1)
            label = np.asarray(labels, dtype=object)[top].tolist()
            # The confidence and the probabilities, formatted together.
            confidence = np.take_along_axis(outputs, top[:, None], axis=1)
            values = _row_texts(np.hstack([confidence, outputs]))
            yield _lines(n, index, label, values, b"\n")
        else:
            yield _lines(n, index, b",", _row_texts(outputs), b"\n")
    if width is None:
        yield _csv_header(model, 1)


def _csv_header(model, width: int) -> bytes:
    if model.task == "classification":
        names = ["input_index", "label", "confidence", *[f"p_{n}" for n in model.labels]]
    else:
        names = ["input_index", *[f"value_{i}" for i in range(width)]]
    return b",".join(map(_csv_cell, names)) + b"\n"


def _jsonl(job: BatchJob) -> Iterator[bytes]:
    """The rows of ``result_rows`` as JSON Lines."""
    model = job.model_version.model
    labels = [orjson.dumps(label) for label in model.labels]
    for first, outputs in chunk_outputs(job, 0, job.completed_inputs):
        n = len(outputs)
        if model.task == "classification":
            label, confidence = _top(outputs, labels)
        else:
            label, confidence = b"null", b"null"
        yield _lines(
            n,
            b'{"input_index":',
            _index_texts(first, n),
            b',"prediction":[',
            _row_texts(outputs),
            b'],"label":',
            label,
            b',"confidence":',
            confidence,
            b"}\n",
        )


def _npy(job: BatchJob) -> Iterator[bytes]:
    n_outputs = len(job.model_version.model.labels) or None
    chunks = chunk_outputs(job, 0, job.completed_inputs)
    first = next(chunks, None)
    if n_outputs is None:
        n_outputs = first[1].shape[1] if first else 0
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": "<f4", "fortran_order": False, "shape": (job.completed_inputs, n_outputs)},
    )
    yield header.getvalue()
    if first is not None:
        yield first[1].astype("<f4", copy=False).tobytes()
    for _, outputs in chunks:
        yield outputs.astype("<f4", copy=False).tobytes()


DOWNLOADS = {
    "csv": ("text/csv", _csv),
    "jsonl": ("application/x-ndjson", _jsonl),
    "npy": ("application/octet-stream", _npy),
}


def _sse(event: str, data: dict, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def job_state(job_id) -> dict:
    """What the events of a job show: status, completed and total rows, error."""
    return (
        BatchJob.objects.filter(pk=job_id)
        .values("status", "completed_inputs", "total_inputs", "error")
        .get()
    )


async def job_events(
    job: BatchJob,
    *,
    read: Callable[[], dict],
    last_event_id: str | None = None,
    poll_seconds: float = 0.5,
    heartbeat_seconds: float = 15.0,
    max_seconds: float = 3600.0,
) -> AsyncIterator[bytes]:
    """Server-Sent Events of a job's progress until it ends (ids are completed-row counts).

    ``read`` gives the job's latest known state (``job_state``'s fields), without waiting.
    """
    try:
        seen = int(last_event_id) if last_event_id else -1
    except ValueError:
        seen = -1
    started = last_beat = time.monotonic()
    while time.monotonic() - started < max_seconds:
        row = read()
        completed, total = row["completed_inputs"], row["total_inputs"]
        if completed > seen:
            seen = completed
            progress = {
                "job_id": str(job.pk),
                "status": row["status"],
                "completed": completed,
                "total": total,
                "percent": round(100 * completed / total, 2) if total else 100.0,
            }
            yield _sse("progress", progress, str(completed))
            last_beat = time.monotonic()
        if row["status"] in BatchJob.TERMINAL:
            final = {
                "job_id": str(job.pk),
                "status": row["status"],
                "completed": completed,
                "total": total,
                "error": row["error"] or None,
            }
            yield _sse(row["status"], final)
            return
        if time.monotonic() - last_beat >= heartbeat_seconds:
            yield b": keep-alive\n\n"
            last_beat = time.monotonic()
        await asyncio.sleep(poll_seconds)
