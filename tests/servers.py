"""A throw-away instance (var dir, database, demo seed) and real ``manage.py serve`` processes.

Embedded profile by default; when ``DATABASE_URL`` is set (production profile) the instance gets
a fresh PostgreSQL database of its own, dropped at the end. The tests talk HTTP only. Background
workers (``manage.py qcluster``) can also be started on their own, to be killed and restarted.
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings

MANAGE = Path(settings.BASE_DIR) / "manage.py"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


@dataclass
class Instance:
    """A seeded instance: the environment its processes run with and what seeding printed."""

    env: dict[str, str]
    var_dir: Path
    passwords: dict[str, str]
    demo_key: str

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``manage.py`` in a separate process on this instance; fail with its output."""
        done = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
        return done


@dataclass
class Server:
    """A running ``manage.py serve`` process, in its own process group (and session)."""

    process: subprocess.Popen
    base_url: str
    log: Path
    _log_file: object = field(repr=False, default=None)

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """Ctrl-C, as an operator would; kill whatever is left of the group after a grace time."""
        return stop_group(self.process, self._log_file)

    def stop_soon(self) -> None:
        """Ctrl-C without waiting for the exit, for a server of ``_servers_stopped`` (which waits
        at the end of the session): the next module's tests need not wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def web_pid(self) -> int:
        """The pid of the (one) web process: the uvicorn child of ``manage.py serve``."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if (
                    parent == self.process.pid
                    and b"uvicorn" in (stat.parent / "cmdline").read_bytes()
                ):
                    return int(stat.parent.name)
        raise LookupError("no web process")


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc (``VmRSS``, ``VmHWM``: the peak RSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def peak_memory_reset(pid: int) -> None:
    """Make a process's peak RSS (``VmHWM``) its current RSS (Linux's clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stop_group(process: subprocess.Popen, log_file=None) -> int | None:
    """SIGINT to a session leader, then SIGKILL to whatever is left of its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):  # nothing left of the group: good
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)
    if log_file is not None and not log_file.closed:
        log_file.close()
    return process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    instance: Instance,
    name: str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Server:
    """Start ``manage.py serve [args]`` on ``port`` (else a free one) and wait until ``/health``
    answers.

    ``env`` adds to (or overrides) the instance's environment, e.g. worker or chunk settings.
    """
    port = port or free_port()
    log = instance.var_dir / f"serve-{name}-{port}.log"
    log_file = log.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            str(MANAGE),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        env={**instance.env, **(env or {})},
        cwd=settings.BASE_DIR,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log, log_file)
    try:
        wait_until_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            # A connection may be accepted before the web worker has booted: allow for both.
            if requests.get(server.url("/health"), timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"serve did not answer /health within {START_TIMEOUT:g} s:\n{server.log_tail()}"
            )
        time.sleep(0.05)  # a refused connection costs the booting server nothing


def every_process_reads_the_registry() -> None:
    """Wait out the registry's propagation: a change reaches every web process of a server
    within 1.5 refresh intervals (``predictions.catalogue.registry``; docs/models.md), and the
    production profile runs several. Nothing a client sees tells that every process has it."""
    from mlplatform.conf import platform_setting
    from predictions.catalogue.registry import STALE_LIMIT

    time.sleep(platform_setting("REGISTRY_REFRESH_SECONDS") * STALE_LIMIT)


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database on the production profile (dropped afterwards), else None."""
    configured = os.environ.get("DATABASE_URL")
    if not configured:
        yield None
        return
    import psycopg

    parts = urlsplit(configured)
    name = f"{parts.path.lstrip('/') or 'mlplatform'}_{tag}_{secrets.token_hex(4)}"
    assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _database_url() -> Iterator[str | None]:
    """The session's instance database (production profile), else None."""
    with fresh_database("e2e") as url:
        yield url


@pytest.fixture(scope="session")
def instance(tmp_path_factory, _database_url, _servers_stopped) -> Instance:
    """A migrated and seeded instance in a temporary directory."""
    var_dir = tmp_path_factory.mktemp("instance")
    env = {
        **os.environ,
        "MLPLATFORM_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
        "PYTHONUNBUFFERED": "1",
        # Separate cache keys: the Redis database may be shared with other runs.
        "CACHE_KEY_PREFIX": f"mlplatform-e2e-{secrets.token_hex(4)}",
        # Many modules make keys for the same seeded users on this one instance; the limit's
        # own test sets it back on its server.
        "MLPLATFORM_MAX_ACTIVE_API_KEYS": "1000",
    }
    if _database_url:
        env["DATABASE_URL"] = _database_url
    instance = Instance(env=env, var_dir=var_dir, passwords={}, demo_key="")
    instance.manage("migrate", "--noinput")
    seeded = instance.manage("seed_demo").stdout
    instance.passwords = dict(re.findall(r"created user '(\w+)' with password (\S+)", seeded))
    instance.demo_key = seeded.strip().splitlines()[-1]
    assert set(instance.passwords) == {"admin", "demo"}, seeded
    assert instance.demo_key.startswith("mlp_"), seeded
    return instance


@pytest.fixture(scope="session")
def _servers_stopped() -> Iterator[list[Server]]:
    """Every server started in the session; stopped before the database is dropped."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def serve(instance, _servers_stopped) -> Callable[..., Server]:
    """Start another server on the shared instance; it is stopped at the end of the session."""

    def start(
        name: str = "extra", *, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> Server:
        server = start_server(instance, name, args=args, env=env)
        _servers_stopped.append(server)
        return server

    return start


@pytest.fixture(scope="module")
def server(instance, _servers_stopped) -> Iterator[Server]:
    """One server shared by the tests of a module."""
    server = start_server(instance, "shared")
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


@dataclass
class Worker:
    """A running ``manage.py qcluster``, leader of its own session (sentinel, workers, monitor)."""

    process: subprocess.Popen
    log: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def pgid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_running(self, timeout: float = 60) -> "Worker":
        """Return once the cluster says it is running (its pusher takes tasks from then on)."""
        deadline = time.monotonic() + timeout
        while "] running." not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, f"qcluster exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"qcluster not running:\n{self.log_tail()}"
            time.sleep(0.1)
        return self

    def stop(self) -> int | None:
        return stop_group(self.process, self._log_file)


def start_qcluster(instance: Instance, name: str, env: Mapping[str, str] | None = None) -> Worker:
    """Start ``manage.py qcluster`` in a session of its own; ``env`` adds to the instance's."""
    log = instance.var_dir / f"qcluster-{name}-{secrets.token_hex(3)}.log"
    log_file = log.open("w")
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), "qcluster"],
        env={**instance.env, **(env or {})},
        cwd=settings.BASE_DIR,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Worker(process, log, log_file)


@pytest.fixture
def qcluster(instance) -> Iterator[Callable[..., Worker]]:
    """Start background workers on the shared instance; every one is stopped after the test."""
    workers: list[Worker] = []

    def start(name: str = "worker", env: Mapping[str, str] | None = None) -> Worker:
        worker = start_qcluster(instance, name, env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


SLOW_VERSION = "slow"


def slow_iris_onnx(size: int = 256) -> bytes:
    """An iris graph whose inference takes as long as its caller asks: a row whose largest value
    is n multiplies a size x size matrix n times over (an ONNX Loop) before it is answered.

    Iris rows (values below 8) take a few milliseconds; the check at upload (rows of zeros) none.
    """
    from onnx import TensorProto, helper

    from predictions.runtime.onnx import IR_VERSION, OPSET

    square = helper.make_tensor("square", TensorProto.INT64, [2], [size, size])
    spin = helper.make_graph(
        [
            helper.make_node("Identity", ["again"], ["again_next"]),
            helper.make_node("MatMul", ["matrix", "matrix"], ["matrix_next"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("round", TensorProto.INT64, []),
            helper.make_tensor_value_info("again", TensorProto.BOOL, []),
            helper.make_tensor_value_info("matrix", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("again_next", TensorProto.BOOL, []),
            helper.make_tensor_value_info("matrix_next", TensorProto.FLOAT, [size, size]),
        ],
    )
    weights = helper.make_tensor(
        "weights",
        TensorProto.FLOAT,
        [4, 3],
        [0.3, -0.2, -0.1, 0.1, 0.2, -0.3, -0.4, 0.1, 0.3, -0.2, -0.1, 0.3],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["square"], ["zeros"]),
            helper.make_node("ReduceMax", ["input"], ["largest"], keepdims=0),
            helper.make_node("Cast", ["largest"], ["rounds"], to=TensorProto.INT64),
            helper.make_node("Loop", ["rounds", "", "zeros"], ["spun"], body=spin),
            helper.make_node("ReduceSum", ["spun"], ["zero"], keepdims=0),
            helper.make_node("MatMul", ["input", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "zero"], ["same_scores"]),
            helper.make_node("Softmax", ["same_scores"], ["output"], axis=-1),
        ],
        "iris-slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[square, weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


@pytest.fixture(scope="session")
def slow_version(instance) -> str:
    """The label of a staged iris version whose inference is as slow as a row asks (see
    ``slow_iris_onnx``); staged, it serves only requests that name it. Servers already running
    see it within ``REGISTRY_REFRESH_SECONDS``."""
    path = instance.var_dir / "iris-slow.onnx"
    path.write_bytes(slow_iris_onnx())
    instance.manage(
        "register_model", "iris", str(path), "--label", SLOW_VERSION, "--status", "staged"
    )
    return SLOW_VERSION


@contextlib.contextmanager
def chromium(window_size: str = "1400,1200") -> Iterator:
    """Debian's headless Chromium, able to reach no host but this one (``.ci/run`` installs
    ``chromium`` and ``chromium-driver``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver")
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.add_argument(f"--window-size={window_size}")
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
