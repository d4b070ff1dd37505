"""``manage.py serve``: the web server (uvicorn) and a background worker (qcluster) together."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from mlplatform.conf import env, platform_setting
from mlplatform.health import DRAINING_FLAG_VARIABLE


def prepare_metrics_dir(env: dict[str, str]) -> tuple[Path, bool]:
    """An empty multiprocess metrics directory for the web and worker processes.

    Both write their Prometheus samples there and /metrics adds them up. An operator's
    ``PROMETHEUS_MULTIPROC_DIR`` is emptied (old processes' samples would count again); else a
    temporary one is made, and removed on exit (True).
    """
    configured = env.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="mlplatform-metrics-"))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def web_processes(requested: int | None) -> int:
    """How many web processes to run: asked for, else ``WEB_CONCURRENCY``, else by profile."""
    if requested:
        return requested
    return env("WEB_CONCURRENCY") or os.cpu_count() or 1


def websocket_options() -> list[str]:
    """uvicorn's WebSocket options from the platform's knobs (predictions/streams/websocket.py).

    uvicorn closes a message past the largest size with 1009 before it is whole, and a socket
    whose pong does not come within the ping interval with 1011. Messages are not compressed:
    rows of numbers gain little from it and each message would cost a deflate on the event loop.
    """
    ping = str(platform_setting("WS_PING_SECONDS"))
    return [
        *("--ws", "websockets-sansio"),
        *("--ws-max-size", str(platform_setting("WS_MAX_MESSAGE_BYTES"))),
        *("--ws-ping-interval", ping, "--ws-ping-timeout", ping),
        *("--ws-per-message-deflate", "false"),
    ]


class Command(BaseCommand):
    help = (
        "Run the web server and one django-q2 worker on the active profile; Ctrl-C stops both, "
        "SIGTERM too after a drain of DRAIN_SECONDS (during which /ready answers 503). Add more "
        "workers on any host with 'manage.py qcluster'."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            help="Web processes (default: WEB_CONCURRENCY, else 1 on the embedded profile, whose "
            "in-process cache must see every request, and one per core on production).",
        )
        parser.add_argument("--no-worker", action="store_true", help="Run no background worker.")

    def handle(self, *args, host, port, workers, no_worker, **options):
        children_env = dict(os.environ)
        children_env.setdefault("DJANGO_SETTINGS_MODULE", "mlplatform.settings")
        web = [sys.executable, "-m", "uvicorn", "mlplatform.asgi:application"]
        web += ["--host", host, "--port", str(port), "--workers", str(web_processes(workers))]
        # httptools parses HTTP in C and uvloop runs the event loop on libuv, where h11 and
        # asyncio would do both in Python (docs/decisions/0001).
        web += ["--http", "httptools", "--loop", "uvloop", "--lifespan", "on"]
        # Every request gets one JSON log line of the platform's (mlplatform.logging).
        web += ["--no-access-log", "--timeout-graceful-shutdown", "10"]
        web += websocket_options()
        metrics_dir, made_metrics_dir = prepare_metrics_dir(children_env)
        # While this file exists, /ready answers 503 in every web process (mlplatform.health).
        flag_dir = Path(tempfile.mkdtemp(prefix="mlplatform-serve-"))
        draining_flag = flag_dir / "draining"
        children_env[DRAINING_FLAG_VARIABLE] = str(draining_flag)
        web_process = subprocess.Popen(web, env=children_env, cwd=settings.BASE_DIR)  # noqa: S603
        children = [("web", web_process)]
        if not no_worker:
            # ``-m django``, not manage.py: an installed wheel (the container image) has none.
            worker = [sys.executable, "-m", "django", "qcluster"]
            children.append(
                ("worker", subprocess.Popen(worker, env=children_env, cwd=settings.BASE_DIR))  # noqa: S603
            )
        self.stdout.write(
            f"Serving on http://{host}:{port}/ (profile: {settings.PROFILE}); Ctrl-C stops."
        )
        received: list[int] = []
        signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
        drain_seconds = platform_setting("DRAIN_SECONDS")
        drain_until: float | None = None
        stopping = False
        exit_code = 0
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    self.stderr.write(f"the {name} process exited with {child.returncode}")
                    exit_code = child.returncode or 1
                    stopping = True
            if received and drain_until is None:
                if received[0] == signal.SIGTERM and drain_seconds > 0:
                    # SIGTERM (a rolling restart, a container stopped): /ready fails first, so
                    # the load balancer's health checks take this server out while it still
                    # answers; then uvicorn stops accepting and finishes what it holds.
                    draining_flag.touch()
                    drain_until = time.monotonic() + drain_seconds
                    self.stdout.write(f"Draining for {drain_seconds:g} s: /ready answers 503.")
                else:
                    stopping = True
            if signal.SIGINT in received:  # Ctrl-C, also during a drain: stop now
                stopping = True
            if drain_until is not None and time.monotonic() >= drain_until:
                stopping = True
            time.sleep(0.1)
        self._stop(children)
        shutil.rmtree(flag_dir, ignore_errors=True)
        if made_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if exit_code:
            sys.exit(exit_code)

    def _stop(self, children, grace: float = 15.0) -> None:
        for _, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Stopped.")
