"""End to end: SIGTERM drains a server (``/ready`` fails while requests are still served), then
it stops; Ctrl-C stops it at once."""

import signal
import time

import pytest
import requests

pytestmark = pytest.mark.e2e

DRAIN_SECONDS = 3.0
IRIS = [5.1, 3.5, 1.4, 0.2]


def predict(server, key: str) -> requests.Response:
    return requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": IRIS, "model": "iris"},
        headers={"X-API-Key": key},
        timeout=10,
    )


def test_sigterm_fails_ready_while_requests_are_served_then_stops(serve, instance):
    server = serve("drain", args=["--no-worker"], env={"MLPLATFORM_DRAIN_SECONDS": "3"})
    assert requests.get(server.url("/ready"), timeout=10).status_code == 200

    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while (ready := requests.get(server.url("/ready"), timeout=10)).status_code == 200:
        # With half the drain left: time for a balancer's health checks to see it while this
        # server still answers.
        assert time.monotonic() - signalled < DRAIN_SECONDS / 2, "/ready still answers 200"
        time.sleep(0.05)
    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    # Until the drain ends, everything else is served as before: a balancer that has not yet
    # seen /ready fail may still send requests here.
    while time.monotonic() - signalled < DRAIN_SECONDS - 0.5:
        answer = predict(server, instance.demo_key)
        assert answer.status_code == 200, answer.text
        assert requests.get(server.url("/health"), timeout=10).status_code == 200
        assert server.process.poll() is None
        time.sleep(0.1)

    assert server.process.wait(timeout=DRAIN_SECONDS + 15) == 0, server.log_tail()
    assert time.monotonic() - signalled >= DRAIN_SECONDS
    assert "Draining for 3 s" in server.log_tail(200)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url("/health"), timeout=5)


def test_ctrl_c_stops_without_draining(serve):
    server = serve("no-drain", args=["--no-worker"], env={"MLPLATFORM_DRAIN_SECONDS": "30"})
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=15) == 0, server.log_tail()
    assert time.monotonic() - started < 15
    assert "Draining" not in server.log_tail(200)
