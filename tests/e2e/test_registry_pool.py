"""Threads waiting for the registry give back their pooled connections to the one reading it.

A web process's request threads borrow from a pool of ``DB_POOL_MAX`` connections, often early
(authentication). Had the threads waiting for a registry read or an artifact load kept theirs,
they could hold the whole pool while the reading thread waits for one until the pool's timeout.
Production profile only, each case in a process of its own: the pool is set up at settings
import, in processes started with ``MLPLATFORM_DB_POOL=1``.
"""

import json
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.db import connection

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL's connection pool"
    ),
]

POOL = {"MLPLATFORM_DB_POOL": "1", "DB_POOL_MAX": "2", "DB_POOL_TIMEOUT": "2"}
HOLDERS = ("holder-1", "holder-2")


@pytest.mark.parametrize("waiting_for", ["revision", "artifact"])
def test_threads_holding_the_whole_pool_let_the_reading_thread_have_a_connection(
    instance, waiting_for
):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, django; django.setup(); "
            "from tests.e2e.test_registry_pool import starve; starve(sys.argv[1])",
            waiting_for,
        ],
        env={**instance.env, **POOL},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["reader"] == got["holder-1"] == got["holder-2"] != "", got


def starve(waiting_for: str) -> None:
    """Run in a process with a pool of 2: two threads each holding a pooled connection ask
    the registry while a third, holding none, reads it (the ``revision`` after the snapshot
    was marked stale, or the ``artifact`` of a version not loaded yet); print what each got
    as JSON and exit 1 if any failed."""
    from predictions.models import ModelVersion
    from predictions.registry import registry

    version = registry.model("iris").versions["v1"]
    connection.close()  # back to the pool, all of which the holders take below
    if waiting_for == "revision":
        registry.mark_stale()

        def ask() -> str:
            return registry.model("iris").name
    else:

        def ask() -> str:
            return type(registry.predictor(version)).__name__

    got: dict[str, str] = {}
    holding, go = threading.Barrier(len(HOLDERS) + 1), threading.Event()

    def answer(name: str, hold: bool) -> None:
        try:
            if hold:
                ModelVersion.objects.exists()  # borrows a connection and keeps it
                holding.wait()
                go.wait()
            got[name] = ask()
        except Exception as exc:
            got[name] = f"failed: {exc!r}"
        finally:
            connection.close()

    holders = [threading.Thread(target=answer, args=(name, True)) for name in HOLDERS]
    for thread in holders:
        thread.start()
    holding.wait()
    reader = threading.Thread(target=answer, args=("reader", False))
    reader.start()
    # The holders ask only once the reader waits for a connection: the order that starves.
    deadline = time.monotonic() + 10
    while connection.pool.get_stats().get("requests_waiting", 0) < 1:
        assert time.monotonic() < deadline and reader.is_alive(), got
        time.sleep(0.01)
    go.set()
    for thread in (*holders, reader):
        thread.join()
    connection.close_pool()
    print(json.dumps(got))
    sys.exit(1 if any(value.startswith("failed") for value in got.values()) else 0)
