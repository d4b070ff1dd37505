"""Many processes, one truth: two web servers and two background workers on PostgreSQL + Redis.

Rate-limit counters, batch jobs and registry changes live in PostgreSQL and Redis, so any
process sees what any other did. Runs on the production profile only: the embedded profile
is one web process by design (its counters live in that process's memory).
"""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlplatform.conf import platform_setting
from tests.e2e.test_batch_worker import iris_rows, npy_bytes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"),
        reason="needs the production profile (DATABASE_URL and REDIS_URL)",
    ),
]

PREDICT_LIMIT = 40
CHUNK_ROWS = 300
JOBS, USERS = 20, 4  # at most 5 unfinished jobs per user (MAX_ACTIVE_BATCH_JOBS)
ENV = {
    "MLPLATFORM_RATE_LIMITS": f"predict={PREDICT_LIMIT}/h,batch=1000/m,api=100000/m",
    "MLPLATFORM_USER_RATE_LIMITS": "batch=1000/m,api=100000/m",
    "MLPLATFORM_BATCH_CHUNK_ROWS": str(CHUNK_ROWS),
    "Q_WORKERS": "2",
}
IRIS = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def cluster(instance, _servers_stopped):
    """Two ``serve --no-worker`` web servers and two ``qcluster`` workers on one database."""
    from tests.servers import start_qcluster, start_server

    webs = [
        start_server(instance, f"web{i}", args=["--no-worker", "--workers", "1"], env=ENV)
        for i in (1, 2)
    ]
    _servers_stopped.extend(webs)
    workers = [start_qcluster(instance, f"worker{i}", env=ENV) for i in (1, 2)]
    try:
        # Both must be taking tasks before any is queued, or the first up may take them all.
        for worker in workers:
            worker.wait_running()
        yield webs, workers
    finally:
        for process in (*workers, *webs):
            process.stop()


@pytest.fixture(scope="module")
def keys(instance, cluster) -> list[str]:
    """One API key for each of USERS new users of the 'API users' group."""
    code = f"""
from accounts.models import User
from accounts.services import api_key_create
from predictions.demo.seed import api_users_group
group = api_users_group()
for i in range({USERS}):
    user, _ = User.objects.get_or_create(username=f"many{{i}}")
    user.groups.add(group)
    print("KEY", api_key_create(owner=user, name="many", scopes=["predict", "batch", "read"])[1])
"""
    out = instance.manage("shell", "-c", code).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("KEY ")]


def predict(base_url: str, key: str, **body) -> requests.Response:
    return requests.post(
        base_url + "/api/v1/predict",
        json={"input_data": IRIS, **body},
        headers={"X-API-Key": key, "Connection": "close"},
        timeout=30,
    )


def test_a_rate_limit_admits_exactly_n_requests_over_both_servers(cluster, keys):
    webs, _ = cluster
    key = keys[0]
    first = predict(webs[0].base_url, key)
    assert first.status_code == 200, first.text
    # Counters are per window (an hour here); start over in the next one if it ends too soon.
    left = int(first.headers["X-RateLimit-Reset"]) - time.time()
    if left < 15:
        time.sleep(left + 1)
        first = predict(webs[0].base_url, key)
        assert first.headers["X-RateLimit-Remaining"] == str(PREDICT_LIMIT - 1)

    targets = [webs[i % 2].base_url for i in range(2 * PREDICT_LIMIT)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda url: predict(url, key), targets))

    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) == PREDICT_LIMIT - 1  # and the first one: N in all
    by_server = {w.base_url: 0 for w in webs}
    for url, answer in zip(targets, answers, strict=True):
        by_server[url] += answer.status_code == 200
    assert all(by_server.values()), by_server  # both servers admitted some
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.json()["code"] == "rate_limited" and a.headers["Retry-After"] for a in refused)


def test_twenty_concurrent_batch_jobs_each_finish_once_with_exact_rows(cluster, keys, instance):
    webs, workers = cluster
    sizes = [500 + 137 * i for i in range(JOBS)]
    submitted: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        key, web = keys[i % USERS], webs[i % 2]
        response = requests.post(
            web.url("/api/v1/predict/batch"),
            files={"file": ("rows.npy", npy_bytes(iris_rows(sizes[i], seed=i)), "x/npy")},
            data={"model": "iris", "model_version": "v1"},
            headers={"X-API-Key": key},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        with lock:
            submitted.append((response.json()["job_id"], key, sizes[i]))

    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(submit, range(JOBS)))
    assert len(submitted) == JOBS

    deadline = time.monotonic() + 240
    pending = {job_id for job_id, _, _ in submitted}
    keys_of = {job_id: key for job_id, key, _ in submitted}
    while pending:
        assert time.monotonic() < deadline, (
            f"{len(pending)} jobs unfinished\n{workers[0].log_tail()}\n{workers[1].log_tail()}"
        )
        for job_id in list(pending):
            job = requests.get(
                webs[0].url(f"/api/v1/predict/batch/{job_id}"),
                headers={"X-API-Key": keys_of[job_id]},
                timeout=10,
            ).json()
            if job["status"] not in ("queued", "processing"):
                assert job["status"] == "completed", job
                pending.discard(job_id)
        time.sleep(0.5)

    state = _stored_jobs(instance, [job_id for job_id, _, _ in submitted])
    for job_id, key, rows in submitted:
        job = state[job_id]
        assert job["completed_inputs"] == job["total_inputs"] == rows, job
        assert job["chunks"] == job["distinct_indexes"] == -(-rows // CHUNK_ROWS), job
        assert job["chunk_rows"] == rows, job
        # One run of each of its parts' tasks finished it: none picked up twice or run again.
        parts = min(platform_setting("BATCH_PARALLEL_TASKS"), job["chunks"])
        assert job["attempts"] == job["task_runs"] == job["successes"] == parts, job
        lines = (
            requests.get(
                webs[1].url(f"/api/v1/predict/batch/{job_id}/results"),
                params={"format": "jsonl"},
                headers={"X-API-Key": key},
                timeout=60,
            )
            .text.strip()
            .splitlines()
        )
        assert [json.loads(line)["input_index"] for line in lines] == list(range(rows))
    # Each worker took part in some jobs.
    logs = [w.log.read_text(errors="replace") for w in workers]
    taken = [[job_id for job_id, _, _ in submitted if f"batch {job_id}" in log] for log in logs]
    print(f"\n{JOBS} jobs, {sum(sizes)} rows; jobs worked on per worker: {[len(t) for t in taken]}")
    assert set(taken[0]) | set(taken[1]) == {job_id for job_id, _, _ in submitted}
    assert taken[0] and taken[1], taken


def test_a_weight_change_through_one_server_is_served_by_the_other_within_2_s(cluster, instance):
    webs, _ = cluster
    session = requests.Session()
    login = webs[0].url("/admin/login/")
    session.get(login, timeout=10)
    session.post(
        login,
        data={
            "username": "admin",
            "password": instance.passwords["admin"],
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": login},
        timeout=10,
    )
    version_id = _version_id(instance, "iris", "v2")
    change = webs[0].url(f"/admin/predictions/modelversion/{version_id}/change/")
    page = session.get(change, timeout=10)
    assert page.status_code == 200, page.text[:500]

    def set_status(status: str) -> None:
        # Retire v2 (or make it active again) through server 1's admin.
        form = _form_fields(page.text)
        form.update(status=status, csrfmiddlewaretoken=session.cookies["csrftoken"])
        saved = session.post(change, data=form, headers={"Referer": change}, timeout=10)
        assert saved.status_code == 200 and "was changed successfully" in saved.text, saved.text[
            :2000
        ]

    key = instance.demo_key

    def served_within_2_s(status: int) -> bool:
        """Whether server 2 answers a request for v2 sent within 2 s of the change with
        ``status`` (when the answer arrives does not count: a busy host may be slow to send it)."""
        changed = time.monotonic()
        while True:
            sent = time.monotonic()
            answer = predict(webs[1].base_url, key, model="iris", model_version="v2")
            if answer.status_code == status:
                return True
            if sent - changed >= 2.0:
                return False
            time.sleep(0.05)

    try:
        set_status("retired")
        assert served_within_2_s(404), "server 2 still serves the retired v2"
        answer = predict(webs[1].base_url, key, model="iris", model_version="v2").json()
        assert answer["code"] == "version_retired"
    finally:
        set_status("active")
    assert served_within_2_s(200), "server 2 does not serve v2 again"


def _version_id(instance, model: str, label: str) -> int:
    code = (
        "from predictions.models import ModelVersion; "
        f"print(ModelVersion.objects.get(model__name={model!r}, label={label!r}).pk)"
    )
    return int(instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def _form_fields(html: str) -> dict[str, str]:
    """The values of a Django admin change form's inputs, selects and text areas."""
    from html.parser import HTMLParser

    class Form(HTMLParser):
        def __init__(self):
            super().__init__()
            self.fields: dict[str, str] = {}
            self._select: str | None = None
            self._textarea: str | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            name = a.get("name")
            if tag == "input" and name and a.get("type") not in ("submit", "file", "button"):
                if a.get("type") in ("checkbox", "radio"):
                    if "checked" in a:
                        self.fields[name] = a.get("value", "on")
                else:
                    self.fields[name] = a.get("value", "")
            elif tag == "select" and name:
                self._select = name
            elif tag == "option" and self._select and "selected" in a:
                self.fields[self._select] = a.get("value", "")
            elif tag == "textarea" and name:
                self._textarea = name
                self.fields[name] = ""

        def handle_endtag(self, tag):
            if tag == "select":
                self._select = None
            elif tag == "textarea":
                self._textarea = None

        def handle_data(self, data):
            if self._textarea:
                self.fields[self._textarea] += data

    parser = Form()
    parser.feed(html)
    return parser.fields


def _stored_jobs(instance, job_ids: list[str]) -> dict[str, dict]:
    """Per job: counts, its chunks and the runs of its task."""
    code = f"""
import json
from django.db.models import Count
from django_q.models import Task
from predictions.models import BatchChunk, BatchJob
out = {{}}
for job in BatchJob.objects.filter(pk__in={job_ids!r}):
    chunks = BatchChunk.objects.filter(job=job)
    tasks = list(Task.objects.filter(name__startswith=f"batch {{job.pk}} part "))
    out[str(job.pk)] = {{
        "completed_inputs": job.completed_inputs,
        "total_inputs": job.total_inputs,
        "attempts": job.attempts,
        "chunks": chunks.count(),
        "distinct_indexes": chunks.aggregate(n=Count("index", distinct=True))["n"],
        "chunk_rows": sum(stop - start for start, stop in chunks.values_list("start", "stop")),
        "task_runs": sum(t.attempt_count for t in tasks),
        "successes": sum(t.success for t in tasks),
    }}
print(json.dumps(out))
"""
    return json.loads(instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1])
