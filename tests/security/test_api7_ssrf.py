"""OWASP API7:2023 Server Side Request Forgery.

The platform makes one kind of outbound request: the webhook a batch job's ``callback_url``
receives. Every address case of the SSRF guard (``tests/predictions/test_ssrf.py``: private,
loopback, link-local, cloud metadata, carrier-grade NAT, multicast, reserved, IPv6 forms that
embed IPv4, decimal, octal and hex spellings; non-http schemes, credentials in the URL) is
refused here through the API, at submit, with a 400 that names ``callback_url`` and no job.
A host that resolves to a public address at submit and to a private one later (DNS rebinding)
is checked again at delivery and refused without a connection; the address checked is the one
connected to; redirects are never followed.
"""

import ipaddress
import socket

import pytest

from predictions.models import BatchJob, WebhookDelivery
from predictions.webhooks import webhook_deliver
from tests.predictions.test_ssrf import NON_PUBLIC_URLS, UNUSABLE_URLS
from tests.predictions.test_webhooks import (  # noqa: F401 - fixtures
    delivery_to,
    make_job,
    receiver,
)
from tests.security.conftest import IRIS, assert_error

pytestmark = pytest.mark.usefixtures("demo_models")
PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def _no_allowlist(monkeypatch):
    monkeypatch.delenv("WEBHOOK_ALLOWED_HOSTS", raising=False)


def submit(client, callback_url: str):
    return client.post(
        "/api/v1/predict/batch",
        {"inputs": [IRIS], "callback_url": callback_url},
        format="json",
    )


@pytest.mark.parametrize(("url", "problem"), NON_PUBLIC_URLS + UNUSABLE_URLS)
def test_a_callback_url_that_is_not_public_is_refused_at_submit(alice, url, problem):
    response = submit(alice, url)

    body = assert_error(response, 400)
    assert "callback" in body["detail"].lower()
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://instance-data/latest/meta-data/",
        "http://no-such-host.invalid/hook",
    ],
)
def test_names_that_do_not_resolve_publicly_are_refused(alice, url):
    response = submit(alice, url)

    assert_error(response, 400)
    assert BatchJob.objects.count() == 0


def _resolver(answers: dict[str, list[list[str]]]):
    """A getaddrinfo that answers each host with the next list of addresses in ``answers``."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        calls.append(host)
        round_ = answers[host][min(len(calls), len(answers[host])) - 1]
        return [
            (
                socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in round_
        ]

    return getaddrinfo, calls


def test_a_name_with_any_private_address_is_refused(alice, monkeypatch):
    getaddrinfo, _ = _resolver({"mixed.example": [[PUBLIC, "10.0.0.5"]]})
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    response = submit(alice, "https://mixed.example/hook")

    assert_error(response, 400)
    assert "10.0.0.5" in response.json()["detail"]
    assert BatchJob.objects.count() == 0


def test_dns_rebinding_is_caught_at_delivery_without_connecting(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    from predictions.batch.jobs import batch_job_process

    getaddrinfo, calls = _resolver(
        {"rebind.example": [[PUBLIC], ["169.254.169.254"]]}  # public at submit, then metadata
    )
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    connections = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a) or 1 / 0)

    accepted = submit(alice, "http://rebind.example/hook")
    assert accepted.status_code == 202
    with django_capture_on_commit_callbacks(execute=False):
        batch_job_process(job_id=accepted.json()["job_id"])
    delivery = WebhookDelivery.objects.get()
    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert calls == ["rebind.example", "rebind.example"]
    assert attempt.error.startswith("Refused by the SSRF guard, not sent:")
    assert "169.254.169.254" in attempt.error
    assert attempt.status_code is None
    assert connections == []
    assert delivery.status == WebhookDelivery.Status.FAILED


@pytest.mark.parametrize("status_code", [301, 302, 303, 307, 308])
def test_a_redirect_towards_the_metadata_service_is_not_followed(
    receiver,  # noqa: F811 - a fixture
    delivery_to,  # noqa: F811 - a fixture
    status_code,
):
    receiver.script("/hook", (status_code, "http://169.254.169.254/latest/meta-data/"))
    delivery = delivery_to(receiver.url())

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    (attempt,) = delivery.tries.all()
    assert receiver.hits("/hook") == 1
    assert attempt.status_code == status_code
    assert "redirects are not followed" in attempt.error
    assert delivery.status == WebhookDelivery.Status.FAILED


def test_the_operator_allowlist_is_the_only_way_to_a_private_receiver(
    receiver,  # noqa: F811 - a fixture
    delivery_to,  # noqa: F811 - a fixture
    monkeypatch,
):
    delivery = delivery_to(receiver.url())
    monkeypatch.delenv("WEBHOOK_ALLOWED_HOSTS")

    webhook_deliver(str(delivery.id))

    delivery.refresh_from_db()
    assert receiver.requests == []
    assert delivery.tries.get().error.startswith("Refused by the SSRF guard")
