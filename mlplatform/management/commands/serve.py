"""``manage.py serve``: the web server (gunicorn) and a background worker (qcluster) together."""

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

import mlplatform

GUNICORN_CONF = Path(mlplatform.__file__).resolve().parent / "gunicorn_conf.py"


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


class Command(BaseCommand):
    help = (
        "Run the web server and one django-q2 worker on the active profile; Ctrl-C stops both. "
        "Add more workers on any host with 'manage.py qcluster'."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, help="Web processes (default: by profile).")
        parser.add_argument("--threads", type=int, help="Threads per web process.")
        parser.add_argument("--no-worker", action="store_true", help="Run no background worker.")

    def handle(self, *args, host, port, workers, threads, no_worker, **options):
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "mlplatform.settings")
        if workers:
            env["WEB_CONCURRENCY"] = str(workers)
        if threads:
            env["WEB_THREADS"] = str(threads)
        web = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(GUNICORN_CONF),
            "--bind",
            f"{host}:{port}",
        ]
        metrics_dir, made_metrics_dir = prepare_metrics_dir(env)
        manage = Path(settings.BASE_DIR) / "manage.py"
        children = [("web", subprocess.Popen(web, env=env, cwd=settings.BASE_DIR))]  # noqa: S603
        if not no_worker:
            worker = [sys.executable, str(manage), "qcluster"]
            children.append(
                ("worker", subprocess.Popen(worker, env=env, cwd=settings.BASE_DIR))  # noqa: S603
            )
        self.stdout.write(
            f"Serving on http://{host}:{port}/ (profile: {settings.PROFILE}); Ctrl-C stops."
        )
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    self.stderr.write(f"the {name} process exited with {child.returncode}")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
        self._stop(children)
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
