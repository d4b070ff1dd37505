"""A web process's pool of connections has room for the thread reading the registry.

View threads borrow from a pool of ``DB_POOL_MAX`` connections early (authentication) and keep
theirs while they wait for a registry read or an artifact load that another thread makes, so
the pool has room for every view thread plus the group commit's thread and the event loop's
reader (``WEB_THREADS + 2``); a smaller pool is refused at start. Production profile only, each
case in a process of its own: the pool is set up at settings import, in processes started with
``MLPLATFORM_DB_POOL=1``.
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

POOL = {"MLPLATFORM_DB_POOL": "1", "WEB_THREADS": "2", "DB_POOL_TIMEOUT": "2"}
# The two view threads, and the group commit's thread holding one for a write.
HOLDERS = ("view-1", "view-2", "commit")


@pytest.mark.parametrize("waiting_for", ["revision", "artifact"])
def test_with_every_view_thread_holding_a_connection_the_reading_thread_has_one(
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
    assert got["reader"] == got["view-1"] == got["view-2"] != "", got


def test_a_pool_smaller_than_the_threads_that_share_it_is_refused(instance):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**instance.env, **POOL, "DB_POOL_MAX": "3"},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "DB_POOL_MAX (3) must be at least WEB_THREADS + 2 (4)" in done.stderr


def starve(waiting_for: str) -> None:
    """Run in a process with ``POOL``: the holders each borrow a connection; then a reader
    holding none asks the registry (the ``revision`` after the snapshot was marked stale, or
    the ``artifact`` of a version not loaded yet) while the view threads ask it too. Print what
    each got as JSON and exit 1 if any failed."""
    from predictions.catalogue.registry import registry
    from predictions.models import ModelVersion

    version = registry.model("iris").versions["v1"]
    connection.close()  # back to the pool, which the holders and the reader share below
    if waiting_for == "revision":
        registry.mark_stale()

        def ask() -> str:
            return registry.model("iris").name
    else:

        def ask() -> str:
            return type(registry.predictor(version)).__name__

    got: dict[str, str] = {}
    holding, go, done = threading.Barrier(len(HOLDERS) + 1), threading.Event(), threading.Event()

    def answer(name: str, hold: bool) -> None:
        try:
            if hold:
                ModelVersion.objects.exists()  # borrows a connection and keeps it
                holding.wait()
                go.wait()
            if name == "commit":  # holds its connection until the others are done
                got[name] = "held" if done.wait(10) else "failed: the others never finished"
            else:
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
    time.sleep(0.05)  # the reader first, the view threads waiting behind its read
    go.set()
    for thread in (*holders[:-1], reader):
        thread.join()
    done.set()
    holders[-1].join()
    connection.close_pool()
    print(json.dumps(got))
    sys.exit(1 if any(value.startswith("failed") for value in got.values()) else 0)
