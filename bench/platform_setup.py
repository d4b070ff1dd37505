"""Throw-away instance of our platform: temp dir, database, demo models and an API key."""

from __future__ import annotations

import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.loadtypes import Target
from bench.servers import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379"
COMMAND_TIMEOUT_S = 600
PRODUCTION_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "JWT_SIGNING_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
)


@dataclass(frozen=True)
class Instance:
    """Environment to run the platform with, its data directory and a raw API key."""

    profile: str
    env: dict[str, str]
    var_dir: Path
    api_key: str


class SetupError(RuntimeError):
    """A setup command failed; the message carries its command and output."""


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run one setup command from the project root; return stdout or raise SetupError."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        raise SetupError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout


def manage(env: dict[str, str], *args: str) -> str:
    """Run `python manage.py ARGS` with the instance environment."""
    return run([sys.executable, "manage.py", *args], env=env)


def _random_secret(length: int = 50) -> str:
    """Random printable secret without quoting trouble."""
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _api_key(stdout: str) -> str:
    """The raw key that createapikey prints alone on stdout."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SetupError(f"createapikey should print only the key, printed: {stdout!r}")
    return lines[0]


@contextmanager
def production_services(env: dict[str, str], redis_db: int) -> Iterator[None]:
    """Create a fresh PostgreSQL database and flush a Redis db; drop and flush them afterwards."""
    db_name = f"mlplatform_bench_{secrets.token_hex(4)}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    redis = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", str(redis_db), "FLUSHDB"]
    run([*psql, f"CREATE DATABASE {db_name}"])
    try:
        run(redis)
        env.update(
            DATABASE_URL=f"{PG_URL}/{db_name}",
            REDIS_URL=f"{REDIS_URL}/{redis_db}",
            SECRET_KEY=_random_secret(),
            JWT_SIGNING_KEY=_random_secret(),
            DEBUG="0",
            ALLOWED_HOSTS="127.0.0.1,localhost",
        )
        yield
    finally:
        try:
            run(redis)
        finally:
            run([*psql, f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"])


@contextmanager
def instance(profile: str, redis_db: int = 5) -> Iterator[Instance]:
    """Set up a fresh platform instance for `profile` ("embedded" or "production")."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"mlplatform-bench-{profile}-"))
    env = {
        **os.environ,
        "MLPLATFORM_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
        # The benchmarks measure serving, not the rate limits (tested elsewhere), over plain
        # HTTP on localhost (the production profile would redirect to HTTPS).
        "RATELIMIT_ENABLE": "0",
        "SECURE_SSL_REDIRECT": "0",
    }
    for name in PRODUCTION_VARIABLES:
        env.pop(name, None)
    try:
        if profile == "production":
            with production_services(env, redis_db):
                yield _bootstrap(profile, env, var_dir)
        else:
            yield _bootstrap(profile, env, var_dir)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _bootstrap(profile: str, env: dict[str, str], var_dir: Path) -> Instance:
    """Migrate, seed the demo models and create a predict-scoped API key."""
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo")
    key = _api_key(manage(env, "createapikey", "demo", "--scopes", "predict", "--name", "bench"))
    return Instance(profile=profile, env=env, var_dir=var_dir, api_key=key)


def shell(env: dict[str, str], code: str) -> str:
    """Run Python code with `manage.py shell -c` in the instance; return what it printed."""
    return manage(env, "shell", "-c", code)


def serve_command(port: int) -> list[str]:
    """Command line that starts the platform (uvicorn plus a django-q2 worker)."""
    return [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]


@dataclass(frozen=True)
class Running:
    """A started platform server: the process (group) and where it listens."""

    server: Server
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def predict_target(self, api_key: str, body: str, marker: str = "") -> Target:
        """POST /api/v1/predict with this JSON body, authenticated with an API key."""
        headers = {"Content-Type": "application/json", "X-API-Key": api_key}
        return Target(f"{self.base_url}/api/v1/predict", body, headers, marker)


@contextmanager
def serving(instance: Instance, log: Path) -> Iterator[Running]:
    """Start `manage.py serve` for the instance on a free port, wait until healthy, stop it."""
    port = free_port()
    server = Server("platform", serve_command(port), instance.env, ROOT, log)
    try:
        server.start()
        server.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=120)
        yield Running(server, port)
    finally:
        server.stop()
