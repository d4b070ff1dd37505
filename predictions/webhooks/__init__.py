"""Webhooks: Standard Webhooks signing, one delivery attempt per task, retries via django-q2.

The package holds the delivery itself here, so that queued tasks keep their dotted path
(``TASK``); its admin (``admin``) and the SSRF guard of callback URLs (``ssrf``) beside it.
"""

import http.client
import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task
from standardwebhooks import Webhook

from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.logging import log_context_set, task_context
from predictions.models import BatchJob, ModelVersion, WebhookAttempt, WebhookDelivery
from predictions.webhooks.ssrf import (
    ResolvedTarget,
    UnresolvableHost,
    UnsafeURL,
    check_callback_url,
)

logger = logging.getLogger(__name__)

TASK = "predictions.webhooks.webhook_deliver"
USER_AGENT = "mlplatform-webhooks/1"
MAX_TIMEOUT = 15.0
EXCERPT_CHARS = 500
RETRYABLE_STATUSES = frozenset({408, 429})
# A claimed attempt with no result after timeout + this margin is taken to be abandoned.
LEASE_MARGIN = timedelta(seconds=60)


def webhook_timeout() -> float:
    """Seconds to wait for a receiver, at most ``MAX_TIMEOUT``."""
    return min(float(platform_setting("WEBHOOK_TIMEOUT")), MAX_TIMEOUT)


def retry_delay(number: int) -> timedelta:
    """How long to wait after failed attempt ``number`` (1-based); the last delay repeats."""
    delays = list(platform_setting("WEBHOOK_RETRY_DELAYS"))
    return timedelta(seconds=delays[min(number, len(delays)) - 1])


# --- Enqueue ----------------------------------------------------------------------------


def webhook_enqueue(job: BatchJob) -> WebhookDelivery | None:
    """Record the event of ``job`` reaching its status and queue its delivery after commit."""
    if not job.callback_url:
        return None
    event_type = f"batch_job.{job.status}"
    with transaction.atomic():
        # Holding the job's row makes a second call for the same event find the first one.
        list(BatchJob.objects.select_for_update().filter(pk=job.pk).values_list("pk"))
        existing = WebhookDelivery.objects.filter(job=job, event_type=event_type).first()
        if existing is not None:
            return existing
        delivery = WebhookDelivery.objects.create(
            job=job,
            url=job.callback_url,
            event_type=event_type,
            payload=webhook_payload(job, event_type),
        )
        transaction.on_commit(partial(_queue, str(delivery.id), 1), robust=True)
    return delivery


def webhook_payload(job: BatchJob, event_type: str) -> dict[str, Any]:
    """The event body, shaped as Standard Webhooks suggests: type, timestamp, data."""
    model, version = (
        ModelVersion.objects.filter(pk=job.model_version_id)
        .values_list("model__name", "label")
        .get()
    )
    link = f"{str(platform_setting('PUBLIC_BASE_URL')).rstrip('/')}/api/v1/predict/batch/{job.id}"
    return {
        "type": event_type,
        "timestamp": _iso(job.finished_at or timezone.now()),
        "data": {
            "job_id": str(job.id),
            "status": job.status,
            "model": model,
            "model_version": version,
            "total_inputs": job.total_inputs,
            "completed_inputs": job.completed_inputs,
            "error": job.error or None,
            "request_id": job.request_id or None,
            "links": {"self": link, "results": f"{link}/results"},
        },
    }


def webhook_redeliver(delivery: WebhookDelivery) -> None:
    """Make ``delivery`` pending again and queue one more attempt (the admin's action)."""
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        Schedule.objects.filter(name=_schedule_name(locked.id)).delete()
        locked.status = WebhookDelivery.Status.PENDING
        locked.next_attempt_at = None
        locked.delivered_at = None
        locked.save(update_fields=["status", "next_attempt_at", "delivered_at"])
        transaction.on_commit(
            partial(_queue, str(locked.id), locked.attempt_count + 1), robust=True
        )


def _queue(delivery_id: str, attempt: int) -> None:
    async_task(TASK, delivery_id, attempt=attempt)


def _schedule_name(delivery_id) -> str:
    return f"webhook {delivery_id}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# --- Delivery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    status_code: int | None = None
    error: str = ""
    excerpt: str = ""
    retryable: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@task_context
def webhook_deliver(delivery_id: str, attempt: int | None = None) -> None:
    """The django-q2 task: one attempt at ``delivery_id``; a duplicate or stale run does nothing.

    ``attempt`` is the attempt number the run was queued for; ``None`` means "the next one".
    """
    claimed = _claim(delivery_id, attempt)
    if claimed is None:
        return
    delivery, record = claimed
    request_id = (delivery.payload.get("data") or {}).get("request_id")
    log_context_set(request_id=request_id, job_id=str(delivery.job_id))
    started = time.monotonic()
    try:
        outcome = _send(delivery)
    except Exception as exc:  # a bug here must not leave the attempt open for ever
        logger.exception("webhook %s: attempt %s crashed", delivery.id, record.number)
        outcome = Outcome(error=f"Internal error: {exc!r}", retryable=True)
    _finish(delivery, record, outcome, duration=time.monotonic() - started)


def _claim(delivery_id: str, attempt: int | None) -> tuple[WebhookDelivery, WebhookAttempt] | None:
    """Number and open the next attempt, or None when this run has nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return None
        last = delivery.tries.order_by("-number").first()
        open_attempt = last is not None and last.duration is None and not last.error
        lease_start = now - timedelta(seconds=webhook_timeout()) - LEASE_MARGIN
        if open_attempt and last.started_at > lease_start:
            return None  # another worker is sending it right now
        expected = delivery.attempt_count + 1
        # The run queued for an attempt whose worker died takes over as the next attempt.
        takes_over = open_attempt and attempt == delivery.attempt_count
        if attempt is not None and attempt != expected and not takes_over:
            return None  # a duplicate or a run another one already replaced
        if open_attempt:
            last.error = "Abandoned: the worker stopped before this attempt finished."
            last.save(update_fields=["error"])
        # A retry scheduled earlier is now redundant (it would find its number taken).
        Schedule.objects.filter(name=_schedule_name(delivery.id)).delete()
        delivery.attempt_count = expected
        delivery.next_attempt_at = None
        delivery.save(update_fields=["attempt_count", "next_attempt_at"])
        record = WebhookAttempt.objects.create(delivery=delivery, number=expected, started_at=now)
    return delivery, record


def _send(delivery: WebhookDelivery) -> Outcome:
    """Check the URL again, sign the body and POST it to the address that was checked."""
    try:
        target = check_callback_url(delivery.url)
    except UnresolvableHost as exc:
        return Outcome(error=str(exc), retryable=True)
    except UnsafeURL as exc:
        return Outcome(error=f"Refused by the SSRF guard, not sent: {exc}")
    secret = (
        get_user_model()
        .objects.filter(batch_jobs=delivery.job_id)
        .values_list("webhook_secret", flat=True)
        .get()
    )
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    msg_id = str(delivery.id)
    timestamp = datetime.fromtimestamp(int(time.time()), UTC)
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body),
    }
    timeout = webhook_timeout()
    try:
        status_code, excerpt = _post(target, body, headers, timeout)
    except TimeoutError:
        return Outcome(error=f"Timed out after {timeout:g} s.", retryable=True)
    except ssl.SSLError as exc:
        return Outcome(error=f"TLS error: {exc}", retryable=True)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(error=f"Connection error: {exc!r}", retryable=True)
    return classify(status_code, excerpt)


def classify(status_code: int, excerpt: str = "") -> Outcome:
    """2xx delivers; 408, 429 and 5xx are retried; redirects and other answers are final."""
    if 200 <= status_code < 300:
        return Outcome(status_code=status_code, excerpt=excerpt)
    if 300 <= status_code < 400:
        error = f"HTTP {status_code}: redirects are not followed."
        return Outcome(status_code=status_code, excerpt=excerpt, error=error)
    retryable = status_code in RETRYABLE_STATUSES or status_code >= 500
    return Outcome(
        status_code=status_code, excerpt=excerpt, error=f"HTTP {status_code}", retryable=retryable
    )


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP, with SNI and the certificate check made for the URL's host name."""

    def __init__(self, ip: str, port: int, *, server_hostname: str, **kwargs):
        super().__init__(ip, port, **kwargs)
        self.server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_hostname)


def _post(
    target: ResolvedTarget, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, str]:
    # Connecting to target.ip (never to the name) means no second DNS answer can differ
    # from the one the SSRF guard checked. http.client never follows redirects.
    if target.scheme == "https":
        connection: http.client.HTTPConnection = PinnedHTTPSConnection(
            target.ip,
            target.port,
            server_hostname=target.host,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    else:
        connection = http.client.HTTPConnection(target.ip, target.port, timeout=timeout)
    try:
        connection.request("POST", target.path_and_query, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(4 * EXCERPT_CHARS).decode("utf-8", errors="replace")
        return response.status, excerpt[:EXCERPT_CHARS]
    finally:
        connection.close()


def _finish(
    delivery: WebhookDelivery, record: WebhookAttempt, outcome: Outcome, *, duration: float
) -> None:
    """Store the attempt and move the delivery on: delivered, retried later, or failed."""
    now = timezone.now()
    with transaction.atomic():
        record.duration = duration
        record.status_code = outcome.status_code
        record.error = outcome.error
        record.response_excerpt = outcome.excerpt
        record.save(update_fields=["duration", "status_code", "error", "response_excerpt"])
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk).first()
        if delivery is None:
            return
        if outcome.delivered:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = now
        elif outcome.retryable and record.number < int(platform_setting("WEBHOOK_MAX_ATTEMPTS")):
            delivery.next_attempt_at = now + retry_delay(record.number)
            Schedule.objects.create(
                name=_schedule_name(delivery.id),
                func=TASK,
                args=repr(str(delivery.id)),
                kwargs=repr({"attempt": record.number + 1}),
                schedule_type=Schedule.ONCE,
                repeats=-1,
                next_run=delivery.next_attempt_at,
            )
        else:
            delivery.status = WebhookDelivery.Status.FAILED
        delivery.save(update_fields=["status", "delivered_at", "next_attempt_at"])
    metrics.webhook_attempted(delivery.status)
    logger.info(
        "webhook %s attempt %s: %s",
        delivery.id,
        record.number,
        outcome.status_code or outcome.error,
    )
