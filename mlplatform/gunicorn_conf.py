"""gunicorn configuration, sized from the CPU count and the profile.

The embedded profile (SQLite, in-process cache) runs one process with threads, so that the
in-process cache is shared by every request; the production profile runs one process per core
(inference is CPU-bound) with a few threads each. ``WEB_CONCURRENCY`` and ``WEB_THREADS``
override both.
"""

import gc
import os
import tempfile

# Requests run on several threads at once, each a small matrix product: a BLAS that starts a
# thread per core for each of them costs far more CPU than it saves.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

# Web processes share a pool of database connections among their many threads (settings.py;
# PostgreSQL only). Set here, before the application loads, so that only they get one.
os.environ.setdefault("MLPLATFORM_DB_POOL", "1")

_production = bool(os.environ.get("DATABASE_URL"))
_cores = os.cpu_count() or 1

wsgi_app = "mlplatform.wsgi:application"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", _cores if _production else 1))
worker_class = "gthread"
# With several workers, each listens on a socket of its own (SO_REUSEPORT) and the kernel
# spreads new connections over them. On one shared socket, the worker that wakes first
# accepts, and a client's keep-alive connections could all land on one worker: its core busy,
# the others idle, half the throughput (bench/README.md). The cost: connections still
# waiting in the backlog of a worker that dies are reset. WEB_REUSE_PORT=0 turns it off.
reuse_port = workers > 1 and os.environ.get("WEB_REUSE_PORT", "1").lower() not in ("0", "false")
# WEB_THREADS serve ordinary requests. Each open event stream (POST /predict/stream, batch job
# events) holds a thread for as long as it lasts, so every process gets one more thread per
# stream it may hold (MLPLATFORM_MAX_OPEN_STREAMS, the same default as mlplatform/conf.py; the
# app refuses streams beyond it with 503): streams never take the threads /predict needs.
# Measured in bench/stream_load.py: with 4 threads, 100 open streams stopped /predict entirely.
_stream_threads = int(os.environ.get("MLPLATFORM_MAX_OPEN_STREAMS") or 128)
threads = int(os.environ.get("WEB_THREADS", 4)) + _stream_threads
timeout = int(os.environ.get("WEB_TIMEOUT", 60))
graceful_timeout = 10
keepalive = 5
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", 0))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
# Load the application once in the master, then fork: workers start fast and share pages.
preload_app = _production
# The control socket lives at one path per user: several servers on a host would share it.
control_socket_disable = True

# prometheus_client's multiprocess mode: each process writes its samples to files in this
# directory and /metrics adds them up, whichever worker answers. ``manage.py serve`` sets it
# (shared with its qcluster, emptied at start); gunicorn started alone gets a fresh one. It must
# be in the environment before any process imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlplatform-metrics-")


def _freeze_application() -> None:
    """Take the loaded application out of the way of the garbage collector's full passes.

    A full collection walks every object the collector tracks, with the GIL held: about 75 ms
    for the ~140,000 objects of the loaded application (measured on the 2-core development
    machine), during which every request thread of the process waits. Such a pass comes each
    time enough objects have survived two younger collections, which objects that live a moment
    (queued log records, queued shadow copies) do: these pauses set the p99 of a paced load
    (bench/README.md, traffic_load.py: 10-45 ms, 6-9 ms once frozen). Once every view is imported,
    what exists lives as long as the process: ``gc.freeze()`` moves it to a generation that
    collections skip, so a full pass walks only what requests created since. (A frozen object
    that later ends up in a reference cycle is not reclaimed; what is frozen here is the
    loaded application, which lives as long as the process anyway.)
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view module
    gc.collect()
    gc.freeze()


def when_ready(server):
    """With the application preloaded, freeze it before the workers are forked.

    A worker's collections then never write to the inherited objects' headers, so their pages
    stay shared with the master instead of being copied into every worker (the way the
    ``gc.freeze()`` documentation recommends around ``fork()``).
    """
    if server.cfg.preload_app:
        _freeze_application()


def post_worker_init(worker):
    """Freeze what loading the application in this worker created (all of it without preload)."""
    _freeze_application()


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Write the worker's last request tallies (``/api/v1/stats``) before it exits."""
    try:
        from predictions.stats import usage_flush

        usage_flush()
    except Exception:  # the worker may exit before Django was loaded
        server.log.warning("could not write the request tallies of worker %s", worker.pid)
