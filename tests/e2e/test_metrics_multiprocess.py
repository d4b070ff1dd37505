"""End to end: /metrics adds up every web worker and background worker of a host.

The module has an instance of its own, so no background worker of another test's server
(they share the task queue of the shared instance) can take its batch job.
"""

import json
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Instance, Server, fresh_database, start_server

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
ROUND = 24  # predictions per round, sent 8 at a time, each on a connection of its own
MAX_ROUNDS = 8


@pytest.fixture(scope="module")
def two_worker_server(tmp_path_factory) -> Iterator[tuple[Server, Instance]]:
    """``serve --workers 2`` (two web workers and a qcluster) on a fresh instance."""
    var_dir = tmp_path_factory.mktemp("metrics-instance")
    with fresh_database("metrics") as database_url:
        env = {
            **os.environ,
            "MLPLATFORM_VAR_DIR": str(var_dir),
            "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
            "PYTHONUNBUFFERED": "1",
            "CACHE_KEY_PREFIX": f"mlplatform-metrics-{secrets.token_hex(4)}",
            "LOG_FORMAT": "json",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        instance = Instance(env=env, var_dir=var_dir, passwords={}, demo_key="")
        instance.manage("migrate", "--noinput")
        instance.demo_key = instance.manage("seed_demo").stdout.strip().splitlines()[-1]
        server = start_server(instance, "metrics", args=["--workers", "2"])
        try:
            yield server, instance
        finally:
            server.stop()


def scrape(server: Server) -> dict[str, list]:
    response = requests.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def total(samples: dict[str, list], name: str, **labels) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def request_lines(server: Server, path: str) -> list[dict]:
    lines = []
    for raw in server.log.read_text(errors="replace").splitlines():
        if raw.startswith("{") and '"mlplatform.request"' in raw:
            entry = json.loads(raw)
            if entry["path"] == path:
                lines.append(entry)
    return lines


def predict_once(server: Server, key: str) -> int:
    # No session: a new connection for every request, which the kernel hands to either worker.
    response = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": SETOSA, "model_version": "v1"},
        headers={"X-API-Key": key, "Connection": "close"},
        timeout=30,
    )
    return response.status_code


def test_prediction_totals_add_up_over_two_web_workers(two_worker_server):
    server, instance = two_worker_server
    sent, pids = 0, set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(MAX_ROUNDS):
            statuses = list(
                pool.map(lambda _: predict_once(server, instance.demo_key), range(ROUND))
            )
            assert statuses == [200] * ROUND
            sent += ROUND
            # Each process writes its log lines at most 250 ms after they are logged.
            deadline = time.monotonic() + 5
            while len(lines := request_lines(server, "/api/v1/predict")) < sent:
                assert time.monotonic() < deadline, f"{len(lines)} of {sent} lines written"
                time.sleep(0.05)
            pids = {line["pid"] for line in lines}
            if len(pids) >= 2:
                break
    assert len(pids) >= 2, f"all {sent} requests went to one worker: {pids}"

    samples = scrape(server)

    served_by = {
        pid: sum(1 for line in request_lines(server, "/api/v1/predict") if line["pid"] == pid)
        for pid in pids
    }
    assert sum(served_by.values()) == sent and min(served_by.values()) > 0
    ok = {"model": "iris", "version": "v1", "routing": "explicit", "outcome": "ok"}
    assert total(samples, "mlplatform_predictions_total", **ok) == sent
    assert total(samples, "mlplatform_inference_seconds_count", model="iris") == sent
    assert (
        total(
            samples,
            "django_http_responses_total_by_status_view_method_total",
            view="predict",
            status="200",
            method="POST",
        )
        == sent
    )
    web = {s.labels["pid"] for s in samples["mlplatform_process_cpu_seconds_total"]}
    assert {str(pid) for pid in pids} <= web


def test_batch_rows_counted_by_the_background_worker_show_on_the_web_workers_metrics(
    two_worker_server,
):
    server, instance = two_worker_server
    headers = {"X-API-Key": instance.demo_key}
    submitted = requests.post(
        server.url("/api/v1/predict/batch"),
        json={"inputs": [SETOSA] * 25, "model_version": "v1"},
        headers=headers,
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    job_url = server.url(f"/api/v1/predict/batch/{submitted.json()['job_id']}")
    deadline = time.monotonic() + 60
    while requests.get(job_url, headers=headers, timeout=10).json()["status"] != "completed":
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)

    samples = scrape(server)

    assert total(samples, "mlplatform_batch_rows_processed_total", model="iris", version="v1") == 25
    assert total(samples, "mlplatform_batch_jobs_total", status="queued") == 1
    assert total(samples, "mlplatform_batch_jobs_total", status="completed") == 1
    assert total(samples, "mlplatform_batch_jobs", status="completed") == 1
    roles = {s.labels["role"] for s in samples["mlplatform_process_resident_memory_bytes"]}
    assert roles == {"web", "worker"}


def test_stats_count_the_requests_of_every_worker(two_worker_server):
    server, instance = two_worker_server
    headers = {"X-API-Key": instance.demo_key}
    predicted = len(request_lines(server, "/api/v1/predict"))

    # Each worker writes its tallies at most every 2 s, at the end of a request (or on exit):
    # keep asking (on new connections, so both workers answer) until every one has.
    deadline = time.monotonic() + 30
    while True:
        requests.get(
            server.url("/api/v1/models"), headers={**headers, "Connection": "close"}, timeout=10
        )
        body = requests.get(
            server.url("/api/v1/stats"), headers={**headers, "Connection": "close"}, timeout=10
        ).json()
        if body["request_count"] >= predicted + 1:  # + the batch submit
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.5)

    assert body["total_predictions"] == predicted
    assert body["error_count"] == 0
    assert body["completed_batch_jobs"] == 1
