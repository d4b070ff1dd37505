"""Webhooks sent to a real local receiver: signing, retries, redirects, timeouts, SSRF, admin."""

import ast
import base64
import hashlib
import hmac
import html
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.scheduler import scheduler
from django_q.signing import SignedPackage

from accounts.services import webhook_secret_rotate
from predictions.models import BatchJob, ModelVersion, WebhookAttempt, WebhookDelivery
from predictions.webhooks import (
    TASK,
    webhook_deliver,
    webhook_enqueue,
    webhook_redeliver,
)

pytestmark = pytest.mark.usefixtures("demo_models")
DELIVERIES_URL = "/admin/predictions/webhookdelivery/"


# --- A real HTTP receiver ---------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers each path from a script (a status, "hang" or a redirect)."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list] = field(default_factory=dict)
    server_names: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def script(self, path: str, *answers) -> None:
        self.scripts[path] = list(answers)

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def next_answer(self, path: str):
        with self.lock:
            answers = self.scripts.get(path, [])
            return answers.pop(0) if len(answers) > 1 else (answers[0] if answers else 200)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        receiver: Receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.requests.append(
            Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        answer = receiver.next_answer(self.path)
        if answer == "hang":
            receiver.release.wait(10)
            return
        if isinstance(answer, tuple):  # (status, location): a redirect
            self.send_response(answer[0])
            self.send_header("Location", answer[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        text = f"answer {answer} " + "x" * 1000
        self.send_response(answer)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, format, *args):
        pass


def _serve(receiver: Receiver, server: ThreadingHTTPServer, scheme: str, host: str):
    server.receiver = receiver
    server.daemon_threads = True
    receiver.base_url = f"{scheme}://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _serve(receiver, server, "http", "127.0.0.1")
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast_retries(settings):
    """Small knobs so that tests never wait long."""
    settings.PLATFORM = {
        **settings.PLATFORM,
        "WEBHOOK_TIMEOUT": 0.5,
        "WEBHOOK_MAX_ATTEMPTS": 6,
        "WEBHOOK_RETRY_DELAYS": [5, 30, 120, 600, 3600],
    }


@pytest.fixture
def make_job(user):
    def make(callback_url: str, status: str = BatchJob.Status.COMPLETED, **extra) -> BatchJob:
        return BatchJob.objects.create(
            owner=user,
            model_version=ModelVersion.objects.get(model__name="iris", label="v1"),
            total_inputs=1,
            completed_inputs=1 if status == BatchJob.Status.COMPLETED else 0,
            chunk_size=1,
            input_format="json",
            status=status,
            callback_url=callback_url,
            finished_at=timezone.now(),
            **extra,
        )

    return make


@pytest.fixture
def delivery_to(make_job, django_capture_on_commit_callbacks):
    def make(url: str, **job_fields) -> WebhookDelivery:
        with django_capture_on_commit_callbacks():
            return webhook_enqueue(make_job(url, **job_fields))

    return make


def expected_signature(secret: str, received: Received) -> str:
    """Standard Webhooks, recomputed here from the raw request alone."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        received.headers["webhook-id"].encode()
        + b"."
        + received.headers["webhook-timestamp"].encode()
        + b"."
        + received.body
    )
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def queued_tasks() -> list[dict]:
    return [SignedPackage.loads(row.payload) for row in OrmQ.objects.order_by("id")]


def schedule_for(delivery: WebhookDelivery) -> Schedule:
    return Schedule.objects.get(func=TASK, args=repr(str(delivery.id)))


@pytest.fixture
def run_due_retry(monkeypatch):
    """What the cluster does when a retry is due: its scheduler queues it, a worker runs it."""
    # The scheduler closes "old" connections first; here that one holds the test's transaction.
    monkeypatch.setattr("django_q.scheduler.close_old_django_connections", lambda: None)

    def run(delivery: WebhookDelivery) -> None:
        Schedule.objects.filter(pk=schedule_for(delivery).pk).update(
            next_run=timezone.now() - timedelta(seconds=1)
        )
        OrmQ.objects.all().delete()
        scheduler()
        assert not Schedule.objects.filter(func=TASK).exists()  # a one-off is spent
        (task,) = queued_tasks()
        assert task["func"] == TASK
        webhook_deliver(*task["args"], **task["kwargs"])

    return run


# --- Enqueue ----------------------------------------------------------------------------


def test_if_job_has_no_callback_url_then_no_delivery(make_job):
    assert webhook_enqueue(make_job("")) is None
    assert WebhookDelivery.objects.count() == 0


def test_enqueue_stores_the_event_and_queues_its_delivery_after_commit(
    make_job, django_capture_on_commit_callbacks
):
    job = make_job("https://93.184.216.34/hooks", request_id="req-42")

    with django_capture_on_commit_callbacks(execute=True):
        delivery = webhook_enqueue(job)
        assert OrmQ.objects.count() == 0  # nothing is queued before the job's change commits

    assert delivery.status == WebhookDelivery.Status.PENDING
    assert delivery.event_type == "batch_job.completed"
    assert delivery.url == "https://93.184.216.34/hooks"
    payload = delivery.payload
    assert payload["type"] == "batch_job.completed"
    assert payload["timestamp"].endswith("+00:00")
    assert payload["data"] == {
        "job_id": str(job.id),
        "status": "completed",
        "model": "iris",
        "model_version": "v1",
        "total_inputs": 1,
        "completed_inputs": 1,
        "error": None,
        "request_id": "req-42",
        "links": {
            "self": f"/api/v1/predict/batch/{job.id}",
            "results": f"/api/v1/predict/batch/{job.id}/results",
        },
    }
    (task,) = queued_tasks()
    assert task["func"] == "predictions.webhooks.webhook_deliver"
    assert task["args"] == (str(delivery.id),)
    assert task["kwargs"] == {"attempt": 1}


def test_links_are_absolute_when_a_public_base_url_is_set(settings, delivery_to):
    settings.PLATFORM = {**settings.PLATFORM, "PUBLIC_BASE_URL": "https://ml.example.com/"}

    delivery = delivery_to("https://93.184.216.34/hooks")

    job_id = delivery.job_id
    assert delivery.payload["data"]["links"]["self"] == (
        f"https://ml.example.com/api/v1/predict/batch/{job_id}"
    )


def test_enqueue_twice_for_the_same_status_keeps_one_delivery(
    make_job, django_capture_on_commit_callbacks
):
    job = make_job("https://93.184.216.34/hooks", status=BatchJob.Status.FAILED, error="boom")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = webhook_enqueue(job)
        second = webhook_enqueue(job)

    assert first.pk == second.pk
    assert len(callbacks) == 1
    assert WebhookDelivery.objects.filter(job=job).count() == 1
    assert first.payload["data"]["error"] == "boom"
    assert first.event_type == "batch_job.failed"


# --- Delivery ---------------------------------------------------------------------------


def test_delivery_is_signed_per_standard_webhooks(receiver, delivery_to, user):
    delivery = delivery_to(receiver.url("/hooks/batch?tenant=7"))

    webhook_deliver(str(delivery.id))

    (received,) = receiver.requests
    assert received.path == "/hooks/batch?tenant=7"
    headers = received.headers
    assert headers["content-type"] == "application/json"
    assert headers["host"] == receiver.base_url.removeprefix("http://")
    assert headers["webhook-id"] == str(delivery.id)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    assert headers["webhook-signature"] == expected_signature(user.webhook_secret, received)
    assert json.loads(received.body) == delivery.payload
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.delivered_at is not None
    assert delivery.next_attempt_at is None
    (attempt,) = delivery.tries.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.duration is not None and attempt.duration >= 0
    assert attempt.response_excerpt.startswith("answer 200 xxx")
    assert len(attempt.response_excerpt) == 500
    assert not Schedule.objects.exists()


def test_standardwebhooks_library_verifies_the_delivery(receiver, delivery_to, user):
    standardwebhooks = pytest.importorskip("standardwebhooks")
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    (received,) = receiver.requests
    verified = standardwebhooks.Webhook(user.webhook_secret).verify(received.body, received.headers)
    assert verified["data"]["job_id"] == str(delivery.job_id)
    another = "whsec_" + base64.b64encode(b"another key of 32 bytes........").decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(another).verify(received.body, received.headers)


def test_events_after_a_rotation_are_signed_with_the_new_secret(receiver, delivery_to, user):
    old = user.webhook_secret
    delivery = delivery_to(receiver.url())

    new = webhook_secret_rotate(user=user)
    webhook_deliver(str(delivery.id))

    (received,) = receiver.requests
    assert new != old
    assert received.headers["webhook-signature"] == expected_signature(new, received)
    assert received.headers["webhook-signature"] != expected_signature(old, received)


def test_a_delivered_delivery_is_not_sent_again(receiver, delivery_to):
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))
    webhook_deliver(str(delivery.id))
    webhook_deliver(str(delivery.id), attempt=1)

    assert receiver.hits("/hook") == 1
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1


def test_503_twice_then_200_is_retried_with_backoff_then_delivered(
    receiver, delivery_to, fast_retries, run_due_retry
):
    receiver.script("/hook", 503, 503, 200)
    delivery = delivery_to(receiver.url())

    before = timezone.now()
    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING
    assert delivery.attempt_count == 1
    first_wait = delivery.next_attempt_at - before
    assert timedelta(seconds=5) <= first_wait < timedelta(seconds=7)
    retry = schedule_for(delivery)
    assert retry.schedule_type == Schedule.ONCE
    assert retry.next_run == delivery.next_attempt_at
    assert ast.literal_eval(retry.kwargs) == {"attempt": 2}

    before = timezone.now()
    run_due_retry(delivery)

    delivery.refresh_from_db()
    assert delivery.attempt_count == 2
    second_wait = delivery.next_attempt_at - before
    assert timedelta(seconds=30) <= second_wait < timedelta(seconds=32)
    assert Schedule.objects.filter(func=TASK).count() == 1
    assert ast.literal_eval(schedule_for(delivery).kwargs) == {"attempt": 3}

    run_due_retry(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.next_attempt_at is None
    assert not Schedule.objects.filter(func=TASK).exists()
    attempts = list(delivery.tries.values_list("number", "status_code", "error"))
    assert attempts == [(1, 503, "HTTP 503"), (2, 503, "HTTP 503"), (3, 200, "")]
    assert receiver.hits("/hook") == 3
    # Every attempt is a new signature over the same event id.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


def test_after_max_attempts_the_delivery_fails(receiver, delivery_to, settings):
    settings.PLATFORM = {**settings.PLATFORM, "WEBHOOK_MAX_ATTEMPTS": 3}
    receiver.script("/hook", 500)
    delivery = delivery_to(receiver.url())

    waits = []
    for _ in range(3):
        webhook_deliver(str(delivery.id))
        delivery.refresh_from_db()
        waits.append(delivery.next_attempt_at)
    webhook_deliver(str(delivery.id))

    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempt_count == 3
    assert waits[0] < waits[1] and waits[2] is None
    assert receiver.hits("/hook") == 3
    assert not Schedule.objects.filter(func=TASK).exists()


@pytest.mark.parametrize(
    ("status_code", "retried"),
    [(400, False), (401, False), (404, False), (410, False), (422, False)]
    + [(408, True), (429, True), (500, True), (502, True), (503, True)],
)
def test_only_timeouts_throttling_and_server_errors_are_retried(
    receiver, delivery_to, status_code, retried
):
    receiver.script("/hook", status_code)
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert attempt.status_code == status_code
    assert attempt.error == f"HTTP {status_code}"
    if retried:
        assert delivery.status == WebhookDelivery.Status.PENDING
        assert schedule_for(delivery).next_run == delivery.next_attempt_at
    else:
        assert delivery.status == WebhookDelivery.Status.FAILED
        assert delivery.next_attempt_at is None
        assert not Schedule.objects.exists()


@pytest.mark.parametrize("status_code", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_is_final(receiver, delivery_to, status_code):
    receiver.script("/hook", (status_code, receiver.url("/target")))
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    assert receiver.hits("/hook") == 1
    assert receiver.hits("/target") == 0
    assert delivery.status == WebhookDelivery.Status.FAILED
    (attempt,) = delivery.tries.all()
    assert attempt.status_code == status_code
    assert "redirects are not followed" in attempt.error


def test_a_hanging_receiver_is_a_timed_out_attempt_then_retried(
    receiver, delivery_to, fast_retries
):
    receiver.script("/hook", "hang")
    delivery = delivery_to(receiver.url())

    started = time.monotonic()
    webhook_deliver(str(delivery.id))
    elapsed = time.monotonic() - started

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert attempt.status_code is None
    assert attempt.error == "Timed out after 0.5 s."
    assert 0.4 < attempt.duration < 3 and elapsed < 3
    assert delivery.status == WebhookDelivery.Status.PENDING
    assert schedule_for(delivery).next_run == delivery.next_attempt_at


def test_a_refused_connection_is_recorded_and_retried(receiver, delivery_to):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    delivery = delivery_to(f"http://127.0.0.1:{port}/hook")

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert attempt.status_code is None
    assert attempt.error.startswith("Connection error: ConnectionRefusedError")
    assert delivery.status == WebhookDelivery.Status.PENDING


def test_if_the_url_became_private_then_refused_without_connecting(
    receiver, delivery_to, monkeypatch
):
    delivery = delivery_to(receiver.url())
    monkeypatch.delenv("WEBHOOK_ALLOWED_HOSTS")

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    assert receiver.requests == []
    assert delivery.status == WebhookDelivery.Status.FAILED
    (attempt,) = delivery.tries.all()
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused by the SSRF guard, not sent:")
    assert "127.0.0.1, a loopback address" in attempt.error


def test_if_the_host_stops_resolving_then_the_attempt_is_retried(delivery_to):
    delivery = delivery_to("https://gone.invalid/hook")

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert "'gone.invalid' does not resolve" in attempt.error
    assert delivery.status == WebhookDelivery.Status.PENDING


def test_a_stale_or_concurrent_run_sends_nothing(receiver, delivery_to, fast_retries):
    receiver.script("/hook", 503, 200)
    delivery = delivery_to(receiver.url())
    webhook_deliver(str(delivery.id), attempt=1)

    webhook_deliver(str(delivery.id), attempt=1)  # the first run, delivered twice by the broker
    webhook_deliver(str(delivery.id), attempt=3)  # not its turn
    assert receiver.hits("/hook") == 1

    # An attempt another worker has open (and may still finish) blocks a concurrent run.
    delivery.refresh_from_db()
    delivery.attempt_count = 2
    delivery.save()
    open_attempt = WebhookAttempt.objects.create(delivery=delivery, number=2)
    webhook_deliver(str(delivery.id), attempt=3)
    assert receiver.hits("/hook") == 1

    # Once its lease has run out, the run queued for it takes over as the next attempt.
    WebhookAttempt.objects.filter(pk=open_attempt.pk).update(
        started_at=timezone.now() - timedelta(minutes=5)
    )
    webhook_deliver(str(delivery.id), attempt=2)

    delivery.refresh_from_db()
    assert receiver.hits("/hook") == 2
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    attempts = list(delivery.tries.values_list("number", "status_code"))
    assert attempts == [(1, 503), (2, None), (3, 200)]
    assert delivery.tries.get(number=2).error.startswith("Abandoned")


# --- HTTPS: the checked IP is dialled, the host name is used for SNI and the certificate ------


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An HTTPS receiver on 127.0.0.1 with a self-signed certificate for "localhost"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")

    def certificate(name: str):
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"]
            + ["-addext", f"subjectAltName=DNS:{name}"],
            check=True,
            capture_output=True,
        )
        return cert, key

    trusted = certificate("localhost")
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted[0]))  # the only CA the client trusts
    servers = []

    def start(cert_name: str) -> Receiver:
        cert, key = trusted if cert_name == "localhost" else certificate(cert_name)
        receiver = Receiver()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        _serve(receiver, server, "https", "localhost")
        servers.append((receiver, server))
        return receiver

    yield start
    for receiver, server in servers:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def test_https_connects_to_the_checked_ip_with_sni_for_the_host_name(tls_receiver, delivery_to):
    receiver = tls_receiver("localhost")
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED, delivery.tries.get().error
    assert receiver.server_names == ["localhost"]
    (received,) = receiver.requests
    assert received.headers["host"] == receiver.base_url.removeprefix("https://")


def test_https_keeps_certificate_verification_on(tls_receiver, delivery_to):
    receiver = tls_receiver("impostor.example")  # not a certificate for localhost, not trusted
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert attempt.error.startswith("TLS error:")
    assert "CERTIFICATE_VERIFY_FAILED" in attempt.error
    assert receiver.requests == []
    assert delivery.status == WebhookDelivery.Status.PENDING


# --- Redelivery and the admin -------------------------------------------------------------


def test_redeliver_resets_a_failed_delivery_and_queues_one_more_attempt(
    receiver, delivery_to, django_capture_on_commit_callbacks
):
    receiver.script("/hook", 404, 200)
    delivery = delivery_to(receiver.url())
    webhook_deliver(str(delivery.id))
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED

    with django_capture_on_commit_callbacks(execute=True):
        webhook_redeliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PENDING
    (task,) = queued_tasks()
    assert (task["args"], task["kwargs"]) == ((str(delivery.id),), {"attempt": 2})
    webhook_deliver(*task["args"], **task["kwargs"])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert list(delivery.tries.values_list("number", "status_code")) == [(1, 404), (2, 200)]


def test_redeliver_replaces_a_scheduled_retry(
    receiver, delivery_to, django_capture_on_commit_callbacks
):
    receiver.script("/hook", 503)
    delivery = delivery_to(receiver.url())
    webhook_deliver(str(delivery.id))
    assert Schedule.objects.filter(func=TASK).count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        webhook_redeliver(delivery)

    assert not Schedule.objects.filter(func=TASK).exists()
    assert [t["kwargs"] for t in queued_tasks()] == [{"attempt": 2}]


def test_admin_delivery_page_shows_its_attempts(admin_client, receiver, delivery_to):
    receiver.script("/hook", 503, 200)
    delivery = delivery_to(receiver.url())
    webhook_deliver(str(delivery.id))
    webhook_deliver(str(delivery.id))

    listing = admin_client.get(DELIVERIES_URL)
    page = admin_client.get(f"{DELIVERIES_URL}{delivery.id}/change/")

    assert listing.status_code == 200 and str(delivery.id) in listing.content.decode()
    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    assert "batch_job.completed" in text
    assert "HTTP 503" in text
    assert "answer 503" in text and "answer 200" in text
    assert '"job_id": "' + str(delivery.job_id) in text


def test_admin_redeliver_action_queues_another_attempt(
    admin_client, receiver, delivery_to, django_capture_on_commit_callbacks
):
    delivery = delivery_to(receiver.url())
    webhook_deliver(str(delivery.id))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            DELIVERIES_URL,
            {"action": "redeliver", "_selected_action": [str(delivery.id)]},
            follow=True,
        )

    assert "Queued 1 delivery attempt(s)." in response.content.decode()
    (task,) = queued_tasks()
    webhook_deliver(*task["args"], **task["kwargs"])
    assert receiver.hits("/hook") == 2
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempt_count == 2
