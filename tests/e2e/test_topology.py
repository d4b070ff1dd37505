"""The production topology as processes: HAProxy (``ops/haproxy.cfg``, as compose runs it) in
front of two web servers, and two background workers, on PostgreSQL + Redis.

Under steady load through the balancer: a web server killed (SIGKILL) fails only the requests
it held and is taken out within its health checks; a rolling restart (SIGTERM, start again,
then the other) fails none; a worker killed mid-job leaves the job to the other, which
finishes it with exactly its rows.
"""

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from django.conf import settings

from tests.e2e.test_batch_worker import iris_rows, stored_state, submit_npy
from tests.e2e.test_faults import stored_predictions
from tests.servers import free_port, start_qcluster, start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"),
        reason="needs the production profile (DATABASE_URL and REDIS_URL)",
    ),
    pytest.mark.skipif(not shutil.which("haproxy"), reason="needs haproxy (.ci/run installs it)"),
]

HAPROXY_CFG = Path(settings.BASE_DIR) / "ops" / "haproxy.cfg"
CHECK_INTER, CHECK_FALL, CHECK_RISE = 0.5, 2, 2
# Longer than the balancer takes to see /ready fail: INTER x (FALL + 1), with room for a
# loaded host.
DRAIN_SECONDS = 3.0
CLIENTS = 4  # each with one request in flight at a time: modest load on a small host
CHUNK_ROWS = 2000
JOB_ROWS = 300_000
Q_TIMEOUT, Q_RETRY = 10, 12
ENV = {
    "MLPLATFORM_RATE_LIMITS": "predict=100000/m,api=100000/m,batch=1000/m",
    "MLPLATFORM_USER_RATE_LIMITS": "predict=100000/m,api=100000/m,batch=1000/m",
    "MLPLATFORM_DRAIN_SECONDS": str(DRAIN_SECONDS),
    "TRUSTED_PROXY_COUNT": "1",
    "MLPLATFORM_BATCH_CHUNK_ROWS": str(CHUNK_ROWS),
    # A killed worker's task is handed out again after Q_RETRY: short here, so the test is.
    "Q_WORKERS": "1",
    "Q_TIMEOUT": str(Q_TIMEOUT),
    "Q_RETRY": str(Q_RETRY),
    "MLPLATFORM_BATCH_TASK_SECONDS": "8",
}
IRIS = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Balancer:
    process: subprocess.Popen
    base_url: str
    stats_url: str
    log: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    def servers(self) -> dict[str, dict[str, str]]:
        """The web backend's servers as HAProxy's statistics show them (status, stot, ...)."""
        text = requests.get(self.stats_url + ";csv", timeout=5).text.lstrip("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "web" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, name: str, status: str, within: float) -> float:
        """Seconds until server ``name`` shows ``status`` (``UP``, ``DOWN``), at most ``within``."""
        started = time.monotonic()
        while (now := self.servers()[name]["status"]) != status:
            assert time.monotonic() - started < within, f"{name} still {now}"
            time.sleep(0.05)
        return time.monotonic() - started


@dataclass
class Load:
    """CLIENTS threads predicting through the balancer until stopped: (id, start, end, outcome)."""

    base_url: str
    key: str
    prefix: str = field(default_factory=lambda: f"topo-{time.time_ns()}-")
    results: list[tuple[str, float, float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        for n in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            request_id = f"{self.prefix}{n}-{i}"
            i += 1
            started = time.monotonic()
            try:
                response = requests.post(
                    self.base_url + "/api/v1/predict",
                    json={"input_data": IRIS, "model": "iris", "model_version": "v1"},
                    headers={"X-API-Key": self.key, "X-Request-ID": request_id},
                    timeout=30,
                )
                outcome: int | str = response.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.results.append((request_id, started, time.monotonic(), outcome))

    def failed(self) -> list[tuple[str, float, float, int | str]]:
        return [result for result in self.results if result[3] != 200]

    def wait_for(self, count: int, *, started_after: float = 0.0, within: float = 30) -> None:
        """Return once ``count`` requests sent after ``started_after`` (monotonic) have ended."""
        deadline = time.monotonic() + within
        while (done := sum(r[1] > started_after for r in self.results)) < count:
            assert time.monotonic() < deadline, f"{done} of {count} requests ended"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def topology(instance, _servers_stopped, tmp_path_factory):
    """HAProxy, two ``serve --no-worker`` web servers and two ``qcluster`` workers."""
    ports = {"web1": free_port(), "web2": free_port()}
    webs = {
        name: start_server(instance, name, args=["--no-worker", "--workers", "1"], env=ENV, port=p)
        for name, p in ports.items()
    }
    _servers_stopped.extend(webs.values())
    workers = [start_qcluster(instance, f"topology{i}", env=ENV) for i in (1, 2)]
    listen, stats = free_port(), free_port()
    log = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    log_file = log.open("w")
    haproxy = subprocess.Popen(
        ["haproxy", "-db", "-f", str(HAPROXY_CFG)],
        env={
            **os.environ,
            "LISTEN": f"127.0.0.1:{listen}",
            "STATS_LISTEN": f"127.0.0.1:{stats}",
            "WEB1": f"127.0.0.1:{ports['web1']}",
            "WEB2": f"127.0.0.1:{ports['web2']}",
            "CHECK_INTER": f"{int(CHECK_INTER * 1000)}ms",
            "CHECK_FALL": str(CHECK_FALL),
            "CHECK_RISE": str(CHECK_RISE),
        },
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    balancer = Balancer(
        haproxy, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{stats}/stats", log
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert haproxy.poll() is None, log.read_text()
            try:
                if all(s["status"] == "UP" for s in balancer.servers().values()):
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for worker in workers:
            worker.wait_running()
        yield balancer, webs, ports, workers
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        log_file.close()
        for process in (*workers, *webs.values()):
            process.stop()


def restart(instance, webs, ports, name: str, balancer: Balancer) -> None:
    """Start web server ``name`` again on its port, and wait until the balancer sends to it."""
    webs[name] = start_server(
        instance, name, args=["--no-worker", "--workers", "1"], env=ENV, port=ports[name]
    )
    balancer.wait_for(name, "UP", within=CHECK_INTER * CHECK_RISE + 10)


def test_a_web_server_killed_under_load_fails_only_the_requests_it_held(topology, instance):
    balancer, webs, ports, _ = topology
    with Load(balancer.base_url, instance.demo_key) as load:
        load.wait_for(20)  # both servers under load
        os.killpg(webs["web1"].process.pid, signal.SIGKILL)
        killed = _refused(ports["web1"])
        taken_out = balancer.wait_for("web1", "DOWN", within=10)
        sent_to_dead = int(balancer.servers()["web1"]["stot"])
        load.wait_for(30, started_after=killed + 0.5)  # the load goes on, on web2
    webs["web1"].process.wait(timeout=10)

    failed = load.failed()
    ok = [r for r in load.results if r[3] == 200]
    print(
        f"\n{len(load.results)} requests through the balancer, {len(failed)} failed "
        f"{sorted({str(r[3]) for r in failed})}; web1 out of rotation {taken_out:.2f} s after "
        "the kill"
    )
    # Within its health checks: FALL failures INTER apart, plus one interval to the first.
    assert taken_out < CHECK_INTER * (CHECK_FALL + 1) + 1.0
    # Only requests in flight on it at the kill fail (one per client at most), as a 502 from
    # the balancer: those sent before its socket was gone. The ones sent to it later were
    # refused and redispatched to web2.
    assert len(failed) <= CLIENTS, failed
    assert all(r[3] == 502 and r[1] < killed for r in failed), failed
    assert sum(r[1] > killed + 0.5 for r in ok) > 20  # the load went on, on web2
    assert int(balancer.servers()["web1"]["stot"]) == sent_to_dead  # nothing sent once down
    # Every answered prediction was stored whole; a failed one all or nothing.
    stored = stored_predictions(instance, load.prefix)
    assert stored["incomplete"] == 0
    assert len(ok) <= stored["total"] <= len(ok) + len(failed)

    restart(instance, webs, ports, "web1", balancer)


def test_a_rolling_restart_fails_no_request(topology, instance):
    balancer, webs, ports, _ = topology
    before = {name: int(s["stot"]) for name, s in balancer.servers().items()}
    with Load(balancer.base_url, instance.demo_key) as load:
        load.wait_for(20)
        for name in ("web1", "web2"):
            old = webs[name]
            old.process.send_signal(signal.SIGTERM)
            balancer.wait_for(name, "DOWN", within=DRAIN_SECONDS)
            assert old.process.wait(timeout=DRAIN_SECONDS + 20) == 0, old.log_tail()
            restart(instance, webs, ports, name, balancer)
            load.wait_for(20, started_after=time.monotonic())  # sent to both again
    after = {name: int(s["stot"]) for name, s in balancer.servers().items()}

    failed = load.failed()
    print(f"\n{len(load.results)} requests during the rolling restart, {len(failed)} failed")
    assert failed == []
    assert len(load.results) > 50
    assert all(after[name] > before[name] for name in before), (before, after)
    stored = stored_predictions(instance, load.prefix)
    assert stored == {"total": len(load.results), "incomplete": 0}


def test_a_worker_killed_mid_job_leaves_it_to_the_other(topology, instance):
    balancer, _, _, workers = topology
    key = instance.demo_key
    rows = iris_rows(JOB_ROWS, seed=22)
    job = submit_npy(balancer, key, rows, model_version="v1")
    job_id, total = job["job_id"], job["total_inputs"]
    assert total == JOB_ROWS

    deadline = time.monotonic() + 30
    while (status := _status(balancer, key, job_id))["completed"] < total // 10:
        assert status["status"] in ("queued", "processing"), status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    holders = [w for w in workers if f"batch {job_id}" in w.log.read_text(errors="replace")]
    assert len(holders) == 1, [w.log_tail() for w in workers]
    (killed,) = holders
    (other,) = [w for w in workers if w is not killed]
    os.killpg(killed.pgid, signal.SIGKILL)
    killed.process.wait(timeout=10)
    stopped = _status(balancer, key, job_id)
    assert stopped["status"] == "processing" and stopped["completed"] < total, stopped

    deadline = time.monotonic() + Q_RETRY + 45
    while (status := _status(balancer, key, job_id))["status"] in ("queued", "processing"):
        assert time.monotonic() < deadline, f"{status}\n{other.log_tail()}"
        time.sleep(0.2)
    print(f"\nkilled at {stopped['completed']} of {total} rows; the other worker finished it")
    assert status["status"] == "completed", status
    assert f"batch {job_id}" in other.log.read_text(errors="replace")
    state = stored_state(instance, job_id)
    assert state["completed_inputs"] == state["total_inputs"] == total, state
    assert state["chunks"] == state["distinct_indexes"] == -(-total // CHUNK_ROWS), state
    assert state["chunk_rows"] == total, state
    results = requests.get(
        balancer.url(f"/api/v1/predict/batch/{job_id}/results"),
        params={"format": "npy"},
        headers={"X-API-Key": key},
        timeout=60,
    )
    assert results.status_code == 200
    assert np.load(io.BytesIO(results.content)).shape == (total, 3)


def _refused(port: int) -> float:
    """The time from which connections to a killed server's port are refused."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic()
        time.sleep(0.005)


def _status(balancer: Balancer, key: str, job_id: str) -> dict:
    response = requests.get(
        balancer.url(f"/api/v1/predict/batch/{job_id}"), headers={"X-API-Key": key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()
