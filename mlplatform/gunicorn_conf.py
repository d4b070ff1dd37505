"""gunicorn configuration, sized from the CPU count and the profile.

The embedded profile (SQLite, in-process cache) runs one process with threads, so that the
in-process cache is shared by every request; the production profile runs one process per core
(inference is CPU-bound) with a few threads each. ``WEB_CONCURRENCY`` and ``WEB_THREADS``
override both.
"""

import os

# Requests run on several threads at once, each a small matrix product: a BLAS that starts a
# thread per core for each of them costs far more CPU than it saves.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

_production = bool(os.environ.get("DATABASE_URL"))
_cores = os.cpu_count() or 1

wsgi_app = "mlplatform.wsgi:application"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", _cores if _production else 1))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", 4))
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
