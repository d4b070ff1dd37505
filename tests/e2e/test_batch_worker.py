"""End to end: batch jobs run by a real ``manage.py qcluster``, including one killed mid-job.

The web server runs with ``serve --no-worker``, so the only workers are the clusters a test
starts; they pick tasks up from the database broker and, once killed, hand them back after
``Q_RETRY`` seconds (shorter here than by default, with a task's time and timeout below it, as
the settings require). No other worker may serve the instance while these tests run.
"""

import io
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.servers import chromium, start_server

pytestmark = pytest.mark.e2e

CHUNK_ROWS = 2000
# Rows of the job that is killed: at CHUNK_ROWS a run takes a few seconds (printed), long enough
# to be killed mid-job.
KILLED_JOB_ROWS = 400_000
Q_RETRY = 18
# A killed job's task is handed out again at most Q_RETRY seconds after it was taken; the new
# worker starts and polls within seconds, and the rest of the job takes a few more.
PROGRESS_WITHIN = Q_RETRY + 15.0
RESUME_WITHIN = Q_RETRY + 45.0
WORKER_ENV = {
    "Q_WORKERS": "1",
    "MLPLATFORM_BATCH_CHUNK_ROWS": str(CHUNK_ROWS),
    "Q_RETRY": str(Q_RETRY),
    "Q_TIMEOUT": "15",
    "MLPLATFORM_BATCH_TASK_SECONDS": "8",
}
IRIS_LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def web(instance, _servers_stopped):
    """A web server without a background worker, chunking batch jobs by CHUNK_ROWS."""
    server = start_server(instance, "batch-web", args=["--no-worker"], env=WORKER_ENV)
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


@pytest.fixture
def start_worker(qcluster):
    def start(name: str):
        return qcluster(name, env=WORKER_ENV)

    return start


def iris_rows(n: int, seed: int = 7) -> np.ndarray:
    """Plausible iris measurements with one decimal, as float32 (exact in JSON as well)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.8, 0.8], size=(n, 4))
    return np.round(np.clip(rows, 0.1, None), 1).astype(np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def submit_npy(web, key: str, rows: np.ndarray, **fields: str) -> dict:
    response = requests.post(
        web.url("/api/v1/predict/batch"),
        files={"file": ("rows.npy", npy_bytes(rows), "application/octet-stream")},
        data={"model": "iris", **fields},
        headers={"X-API-Key": key},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    return response.json()


def job_status(web, key: str, job_id: str) -> dict:
    response = requests.get(
        web.url(f"/api/v1/predict/batch/{job_id}"), headers={"X-API-Key": key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_completed(web, key: str, job_id: str, within: float, worker) -> dict:
    deadline = time.monotonic() + within
    while True:
        job = job_status(web, key, job_id)
        if job["status"] != "queued" and job["status"] != "processing":
            assert job["status"] == "completed", f"{job}\n{worker.log_tail()}"
            return job
        assert time.monotonic() < deadline, (
            f"not completed within {within:g} s: {job}\n{worker.log_tail()}"
        )
        time.sleep(0.1)


def wait_until_under_way(web, key: str, job_id: str, rows_done: int, worker) -> dict:
    """The job's status once ``rows_done`` rows are stored (or it has ended)."""
    deadline = time.monotonic() + 30
    while True:
        job = job_status(web, key, job_id)
        if job["completed"] >= rows_done or job["status"] not in ("queued", "processing"):
            return job
        assert time.monotonic() < deadline, f"never started: {job}\n{worker.log_tail()}"
        time.sleep(0.02)


def download(web, key: str, job_id: str, fmt: str) -> requests.Response:
    response = requests.get(
        web.url(f"/api/v1/predict/batch/{job_id}/results"),
        params={"format": fmt},
        headers={"X-API-Key": key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def stored_state(instance, job_id: str, since: float | None = None) -> dict:
    """The job's row, its chunks (those created after ``since``, a Unix time) and queued tasks."""
    code = f"""
import json
from datetime import datetime, timezone
from django.db.models import Count
from django_q.models import OrmQ
from predictions.models import BatchChunk, BatchJob

job = BatchJob.objects.get(pk={job_id!r})
chunks = BatchChunk.objects.filter(job=job)
since = {since!r}
later = chunks.filter(created_at__gt=datetime.fromtimestamp(since, timezone.utc)) if since else None
print(json.dumps({{
    "status": job.status,
    "attempts": job.attempts,
    "completed_inputs": job.completed_inputs,
    "total_inputs": job.total_inputs,
    "chunk_size": job.chunk_size,
    "error": job.error,
    "chunks": chunks.count(),
    "distinct_indexes": chunks.aggregate(n=Count("index", distinct=True))["n"],
    "chunk_rows": sum(stop - start for start, stop in chunks.values_list("start", "stop")),
    "chunks_since": None if later is None else later.count(),
    "ormq": [
        {{"id": q.id, "key": q.key, "name": q.name(), "lock": str(q.lock)}}
        for q in OrmQ.objects.all()
    ],
}}))
"""
    return json.loads(instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def session_processes(session: int) -> dict[int, str]:
    """Processes of a session that have not exited (zombies have), with their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found[int(entry)] = command.decode(errors="replace")
    return found


def test_a_small_json_job_is_run_by_the_worker_and_downloads_as_csv(web, start_worker, instance):
    key = instance.demo_key
    worker = start_worker("small")
    rows = iris_rows(1000, seed=1)

    submitted = requests.post(
        web.url("/api/v1/predict/batch"),
        json={"model": "iris", "inputs": rows.tolist()},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    job = wait_until_completed(web, key, submitted.json()["job_id"], 30, worker)

    assert job["completed"] == job["total_inputs"] == 1000
    csv = download(web, key, job["job_id"], "csv")
    assert csv.headers["Content-Type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert len(lines) == 1001
    assert lines[0] == "input_index,label,confidence," + ",".join(f"p_{n}" for n in IRIS_LABELS)
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1000))
    assert {line.split(",")[1] for line in lines[1:]} <= set(IRIS_LABELS)


def test_a_job_whose_worker_is_killed_finishes_from_its_last_chunk_after_a_restart(
    web, start_worker, instance
):
    key = instance.demo_key
    rows = iris_rows(KILLED_JOB_ROWS)
    worker = start_worker("first")

    # A run without a kill: how long the job takes, and the results a kill must not change.
    started = time.monotonic()
    baseline = submit_npy(web, key, rows)
    baseline = wait_until_completed(web, key, baseline["job_id"], 60, worker)
    baseline_wall = time.monotonic() - started
    expected = np.load(io.BytesIO(download(web, key, baseline["job_id"], "npy").content))
    version = baseline["model_version"]
    print(
        f"\n{KILLED_JOB_ROWS} rows in chunks of {CHUNK_ROWS}, no kill: "
        f"{baseline['processing_seconds']:.2f} s processing, {baseline_wall:.2f} s submit-to-done"
    )
    assert expected.shape == (KILLED_JOB_ROWS, 3)

    # The same rows again, pinned to the same version; the whole cluster is killed mid-job. When
    # the job ends before a status answer shows it well under way (a fast host, a slow answer),
    # it is run again with the rows given twice, which takes twice as long.
    for repeats in (1, 2):
        job_rows = np.tile(rows, (repeats, 1))
        submitted = submit_npy(web, key, job_rows, model_version=version)
        job_id, total = submitted["job_id"], submitted["total_inputs"]
        assert total == len(job_rows)
        job = wait_until_under_way(web, key, job_id, total // 4, worker)
        if job["completed"] < total:
            break
        print(f"{total} rows finished before they could be killed: again, twice as many")
    else:
        pytest.fail(f"finished before it could be killed, twice as many rows too: {job}")
    rows, expected = job_rows, np.tile(expected, (repeats, 1))
    os.killpg(worker.pgid, signal.SIGKILL)
    killed_at = time.monotonic()
    worker.process.wait(timeout=10)
    kill_deadline = time.monotonic() + 10
    while session_processes(worker.pgid) and time.monotonic() < kill_deadline:
        time.sleep(0.1)
    assert not session_processes(worker.pgid), session_processes(worker.pgid)

    stopped = job_status(web, key, job_id)
    time.sleep(1.0)  # a while with no worker: nothing else moves the job on
    still = job_status(web, key, job_id)
    assert stopped["status"] == still["status"] == "processing"
    assert stopped["completed"] == still["completed"]
    assert job["completed"] <= still["completed"] < total
    assert still["completed"] % CHUNK_ROWS == 0
    print(
        f"killed at {job['completed']} rows seen ({still['completed']} stored, "
        f"{still['completed'] // CHUNK_ROWS} of {math.ceil(total / CHUNK_ROWS)} chunks)"
    )

    restarted = time.monotonic()
    restarted_at = time.time()
    worker = start_worker("second")
    resumed_after = None
    while True:
        job = job_status(web, key, job_id)
        if resumed_after is None and job["completed"] > still["completed"]:
            resumed_after = time.monotonic() - restarted
        if job["status"] not in ("queued", "processing"):
            break
        assert time.monotonic() - restarted < RESUME_WITHIN, (
            f"not completed {RESUME_WITHIN:g} s after the restart: {job}\n"
            f"{stored_state(instance, job_id)}\n{worker.log_tail()}"
        )
        time.sleep(0.1)
    finished_after = time.monotonic() - restarted
    print(
        f"restarted {restarted - killed_at:.2f} s after the kill; progress "
        f"again after {resumed_after or 0:.2f} s, completed after {finished_after:.2f} s "
        f"(Q_RETRY={Q_RETRY} s)"
    )

    assert restarted - killed_at + resumed_after <= PROGRESS_WITHIN, "picked up too late"
    state = stored_state(instance, job_id, since=restarted_at)
    assert job["status"] == "completed", f"{job}\n{state}\n{worker.log_tail()}"
    assert job["completed"] == total, state
    assert state["attempts"] >= 2, state
    n_chunks = math.ceil(total / CHUNK_ROWS)
    assert state["chunks"] == state["distinct_indexes"] == n_chunks, state
    assert state["chunk_rows"] == total, state
    # The restarted worker stored only the chunks the killed one had not: it resumed.
    assert state["chunks_since"] == n_chunks - still["completed"] // CHUNK_ROWS, state

    results = np.load(io.BytesIO(download(web, key, job_id, "npy").content))
    assert results.shape == (total, 3)
    assert np.allclose(results.sum(axis=1), 1.0, atol=1e-5)
    assert (results >= 0).all()
    np.testing.assert_array_equal(results, expected)
    boundary = still["completed"]
    sample = sorted({0, 1, boundary - 1, boundary, boundary + 1, total // 2, total - 1})
    for index in sample:
        answer = requests.post(
            web.url("/api/v1/predict"),
            json={"model": "iris", "model_version": version, "input_data": rows[index].tolist()},
            headers={"X-API-Key": key},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
        np.testing.assert_allclose(
            results[index], answer.json()["prediction"], rtol=0, atol=1e-6, err_msg=str(index)
        )

    # The acknowledged task is gone from the broker: nothing will run the job a third time.
    ack_deadline = time.monotonic() + 10
    while state["ormq"] and time.monotonic() < ack_deadline:
        time.sleep(0.5)
        state = stored_state(instance, job_id)
    assert state["ormq"] == [], state


def test_the_admin_page_of_a_job_follows_it_to_the_end_by_itself(web, start_worker, instance):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    job = submit_npy(web, instance.demo_key, iris_rows(KILLED_JOB_ROWS))
    with chromium() as browser:
        browser.get(web.url(f"/admin/login/?next=/admin/predictions/batchjob/{job['job_id']}/"))
        browser.find_element(By.ID, "id_username").send_keys("admin")
        browser.find_element(By.ID, "id_password").send_keys(instance.passwords["admin"])
        browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
        bar = browser.find_element(By.CSS_SELECTOR, ".job-progress progress")
        label = browser.find_element(By.CSS_SELECTOR, ".job-progress-text")
        assert label.text.startswith(f"0 / {KILLED_JOB_ROWS:,} rows (0%)"), label.text

        start_worker("admin-page")
        seen = set()

        def ended(_) -> bool:
            # The label first: an update landing between the two reads is then seen in full.
            done = "ended" in label.text
            seen.add(bar.get_attribute("value"))
            return done

        WebDriverWait(browser, 60, poll_frequency=0.2).until(ended)

        assert bar.get_attribute("value") == bar.get_attribute("max") == str(KILLED_JOB_ROWS)
        assert f"{KILLED_JOB_ROWS:,} / {KILLED_JOB_ROWS:,} rows (100%)" in label.text
        assert "rows/s" in label.text
        assert len(seen) >= 2, seen  # the page moved with the job, never reloaded


def test_two_worker_processes_share_a_job_and_store_each_chunk_once(web, qcluster, instance):
    key = instance.demo_key
    # One cluster of two worker processes: a cluster takes the next tasks ahead of its free
    # workers, so the parts of a job spread over the workers of the cluster that takes them.
    worker = qcluster("two-workers", env={**WORKER_ENV, "Q_WORKERS": "2"}).wait_running()
    rows = iris_rows(KILLED_JOB_ROWS)

    started = time.monotonic()
    job = submit_npy(web, key, rows)
    done = wait_until_completed(web, key, job["job_id"], 60, worker)

    print(
        f"\n{KILLED_JOB_ROWS} rows on two worker processes: {done['processing_seconds']:.2f} s"
        f" processing, {time.monotonic() - started:.2f} s submit-to-done"
    )
    state = stored_state(instance, job["job_id"])
    n_chunks = math.ceil(KILLED_JOB_ROWS / CHUNK_ROWS)
    assert state["chunks"] == state["distinct_indexes"] == n_chunks, state
    assert state["chunk_rows"] == KILLED_JOB_ROWS, state
    stored = [
        json.loads(line)
        for line in worker.log.read_text().splitlines()
        if f"batch {job['job_id']}: rows" in line
    ]
    assert len(stored) == n_chunks
    assert len({line["pid"] for line in stored}) == 2  # each worker process stored a part
    results = np.load(io.BytesIO(download(web, key, job["job_id"], "npy").content))
    assert results.shape == (KILLED_JOB_ROWS, 3)
