"""What every scenario shares: a throw-away instance, servers as process groups, wrk, and
alternated rounds compared against a baseline."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("wrk_post.lua")
TICK = os.sysconf("SC_CLK_TCK")
FAILED: list[str] = []  # the sides that saw errors
FIGURES = ("rps", "cpu_ms", "p50", "p99")
# The platform as it runs (rate limits counted on both counters) with limits no run reaches.
UNLIMITED = ",".join(f"{tier}=1000000000/m" for tier in ("predict", "stream", "batch", "api"))


@dataclass(frozen=True)
class Instance:
    """Environment of a throw-away platform instance and a raw API key of its demo user."""

    profile: str
    env: dict[str, str]
    key: str


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py ARGS` in the instance; its stdout, or an error naming its output."""
    proc = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"manage.py {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


@contextlib.contextmanager
def instance(profile: str, redis_db: int) -> Iterator[Instance]:
    """Temp dir, migrate, seed_demo, an API key; on production a fresh PostgreSQL database and
    a flushed Redis db of the host, dropped and flushed afterwards."""
    var_dir = tempfile.mkdtemp(prefix=f"mlplatform-bench-{profile}-")
    ours = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "JWT_SIGNING_KEY", "DEBUG", "ALLOWED_HOSTS")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(MLPLATFORM_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="mlplatform.settings")
    env.update(SECURE_SSL_REDIRECT="0", RATELIMIT_ENABLE="1", MLPLATFORM_USER_RATE_LIMITS=UNLIMITED)
    db = f"mlplatform_bench_{secrets.token_hex(4)}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc"]
    flush = ["redis-cli", "-h", "127.0.0.1", "-n", str(redis_db), "FLUSHDB"]
    try:
        if profile == "production":
            subprocess.run([*psql, f"CREATE DATABASE {db}"], check=True)
            subprocess.run(flush, check=True, capture_output=True)
            keys = {k: secrets.token_urlsafe(40) for k in ("SECRET_KEY", "JWT_SIGNING_KEY")}
            env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}", DEBUG="0", **keys)
            env.update(REDIS_URL=f"redis://127.0.0.1:6379/{redis_db}", ALLOWED_HOSTS="127.0.0.1")
        manage(env, "migrate", "--noinput")
        manage(env, "seed_demo")
        out = manage(env, "createapikey", "demo", "--name", "bench", "--rate", UNLIMITED)
        yield Instance(profile, env, out.strip().splitlines()[-1])
    finally:
        if profile == "production":
            subprocess.run(flush, capture_output=True)
            subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])
        shutil.rmtree(var_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process in a process group of its own, stopped with its children."""

    proc: subprocess.Popen  # the group's leader
    base: str

    def processes(self) -> Iterator[tuple[Path, list[str]]]:
        """The group's live processes: /proc/PID and the fields of its stat after the name."""
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:
                    yield entry, fields

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the group's live processes."""
        return sum(int(f[11]) + int(f[12]) for _, f in self.processes()) / TICK

    def worker_peaks_mb(self) -> list[float]:
        """Peak resident memory (VmHWM) of each background-worker (qcluster) process."""
        peaks = []
        for entry, _ in self.processes():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if b"qcluster" in (entry / "cmdline").read_bytes():
                    status = (entry / "status").read_text()
                    peaks.append(int(status.split("VmHWM:")[1].split()[0]) / 1024)
        return peaks


@contextlib.contextmanager
def serve(cmd: list[str], env: dict[str, str], port: int, name: str) -> Iterator[Server]:
    """Start `cmd` (listening on `port`), wait for /health to answer 200, stop it afterwards."""
    log = Path(tempfile.gettempdir()) / f"bench-{name}-{port}.log"
    with log.open("wb") as out:
        options = {"cwd": ROOT, "env": env, "stdin": subprocess.DEVNULL, "stderr": out}
        proc = subprocess.Popen(cmd, stdout=out, start_new_session=True, **options)
    server = Server(proc, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{server.base}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def platform(inst: Instance, name: str = "platform", worker: bool = False, **env: str):
    """`manage.py serve` on the instance (without the background worker unless asked)."""
    port = free_port()
    cmd = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return serve(cmd + ([] if worker else ["--no-worker"]), {**inst.env, **env}, port, name)


@dataclass
class Result:
    """One measured load: requests answered, seconds, latency (ms), errors, server CPU (s)."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int
    cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1e3 * self.cpu_s / self.requests if self.requests else 0.0


def wrk(
    url: str, body: str, headers: dict[str, str], conns: int, seconds: float, marker: str = ""
) -> Result:
    """wrk POSTing `body` (wrk_post.lua); an answer without `marker` (if given) is an error."""
    if not shutil.which("wrk"):  # Debian's package
        subprocess.run(["sh", "-c", "apt-get update -qq && apt-get install -y -qq wrk"], check=True)
    head = "\n".join(f"{k}: {v}" for k, v in headers.items())
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout=5s"]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_HEADERS": head, "BENCH_MARKER": marker}
    out = subprocess.run([*cmd, "-s", str(LUA), url], env=env, capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("BENCH ")]
    if not line:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    n, us, p50, p99, bad, marked = (int(v) for v in line[-1].split()[1:])
    missing = n - marked if marker else 0
    return Result(n, us / 1e6, p50 / 1e3, p99 / 1e3, bad + missing)


@dataclass
class Side:
    """One side of a comparison: its load (connections, seconds) -> Result, the server whose
    CPU counts, and a context entered around each of its rounds."""

    name: str
    server: Server
    load: Callable[[int, float], Result]
    around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    rounds: list[Result] = field(default_factory=list)


def post(server: Server, path: str, body: str, name: str, key: str = "", marker: str = ""):
    """A side that wrk loads with POST `path` (with API key `key` if given), once it has
    answered 200 (a model loaded)."""
    url, headers = server.base + path, {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    answer = requests.post(url, data=body, headers=headers, timeout=300)
    if answer.status_code != 200:
        raise RuntimeError(f"{name}: POST {path} answered {answer.status_code}: {answer.text}")
    return Side(name, server, lambda c, s: wrk(url, body, headers, c, s, marker))


def compare(title: str, sides: list[Side], conns: int, args) -> None:
    """`args.rounds` rounds, each loading every side in turn (the order reversed every other
    round); print the median of each figure and its ratio to the first side's."""
    for i in range(args.rounds):
        for side in sides if i % 2 == 0 else sides[::-1]:
            with side.around():
                if args.warmup:
                    side.load(conns, args.warmup)
                before = side.server.cpu_s()
                result = side.load(conns, args.duration)
                result.cpu_s = side.server.cpu_s() - before
            side.rounds.append(result)
    print(f"\n{title}: {conns} connection{'s' * (conns > 1)}, medians of {args.rounds} rounds")
    print(f"  {'':26}{'req/s':>9}{'cpu ms/req':>11}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}")
    base: dict[str, float] = {}
    for side in sides:
        m = {k: statistics.median(getattr(r, k) for r in side.rounds) for k in FIGURES}
        ratios = (f"{m[k] / base[k]:.2f}x {k}" for k in FIGURES if base.get(k))
        vs = "  " + ", ".join(ratios) if base else ""
        base = base or m
        errors = sum(r.errors for r in side.rounds)
        if errors:
            FAILED.append(f"{title}: {side.name}")
        figures = f"{m['rps']:9.1f}{m['cpu_ms']:11.3f}{m['p50']:8.2f}{m['p99']:8.2f}{errors:7d}"
        print(f"  {side.name:26}{figures}{vs}", flush=True)
