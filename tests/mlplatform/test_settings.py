"""Profiles: production refuses unsafe settings; SQLite runs in WAL mode with waiting writers."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import OperationalError, connections, transaction

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40
JWT_KEY = "j" * 40


def _start_django(**env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "JWT_SIGNING_KEY", "DEBUG"}
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "mlplatform.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECRET_KEY": SECRET, "JWT_SIGNING_KEY": JWT_KEY, "DEBUG": "1"}, "DEBUG must be off"),
        ({"JWT_SIGNING_KEY": JWT_KEY}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short", "JWT_SIGNING_KEY": JWT_KEY}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": SECRET}, "JWT_SIGNING_KEY must be set"),
        ({"SECRET_KEY": SECRET, "JWT_SIGNING_KEY": SECRET}, "must differ from SECRET_KEY"),
    ],
)
def test_production_refuses_to_start_with_unsafe_settings(env, message):
    result = _start_django(**PRODUCTION, **env)

    assert result.returncode != 0
    assert message in result.stderr


def test_production_starts_with_its_own_secrets():
    result = _start_django(**PRODUCTION, SECRET_KEY=SECRET, JWT_SIGNING_KEY=JWT_KEY)

    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_embedded_profile_needs_no_configuration(tmp_path):
    result = _start_django(MLPLATFORM_VAR_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLPLATFORM_MAX_STREAM_ROWS": "many"}, "MLPLATFORM_MAX_STREAM_ROWS must be an integer"),
        ({"MLPLATFORM_LEAN_HANDLERS": "maybe"}, "MLPLATFORM_LEAN_HANDLERS must be a boolean"),
        ({"MLPLATFORM_RATE_LIMITS": "predict"}, "MLPLATFORM_RATE_LIMITS must be group=rate"),
        ({"SQLITE_SYNCHRONOUS": "sometimes"}, "SQLITE_SYNCHRONOUS must be one of OFF, NORMAL"),
    ],
)
def test_a_variable_of_the_wrong_type_stops_the_start_naming_it(env, message, tmp_path):
    result = _start_django(MLPLATFORM_VAR_DIR=str(tmp_path), **env)

    assert result.returncode != 0
    assert message in result.stderr


def test_variables_set_the_knobs_and_partial_rate_limits_keep_the_other_groups(tmp_path):
    code = (
        "import django; django.setup(); from mlplatform.conf import platform_setting as s; "
        "print(s('MAX_STREAM_ROWS'), s('RATE_LIMITS')['predict'], s('RATE_LIMITS')['auth'])"
    )
    env = {"MLPLATFORM_MAX_STREAM_ROWS": "7", "MLPLATFORM_RATE_LIMITS": "predict=5/s"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "MLPLATFORM_VAR_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout.split() == ["7", "5/s", "10/m"], result.stderr


def test_platform_settings_are_checked_at_start_up(settings):
    settings.PLATFORM = {"MAX_BODY_BYTES": -1, "NO_SUCH_KNOB": 1}

    ids = {error.id for error in run_checks()}

    assert {"mlplatform.E002", "mlplatform.E003"} <= ids


@pytest.fixture
def sqlite_file_alias(tmp_path, django_db_blocker):
    """A second connection alias with the embedded profile's options on a file database."""
    alias = "wal_check"
    connections.settings[alias] = {
        **settings.DATABASES["default"],
        "NAME": str(tmp_path / "db.sqlite3"),
    }
    with django_db_blocker.unblock():
        yield alias
        connections[alias].close()
    del connections[alias]  # this thread's connection, so that the next test gets its own file
    del connections.settings[alias]


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the embedded profile's SQLite")
def test_sqlite_runs_in_wal_mode_and_concurrent_writers_wait(sqlite_file_alias):
    alias = sqlite_file_alias
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 1  # NORMAL: each commit survives a crash of the process
        cursor.execute("CREATE TABLE counter (n INTEGER)")
        cursor.execute("INSERT INTO counter VALUES (0)")
    errors: list[Exception] = []

    def writer() -> None:
        try:
            for _ in range(50):
                # Read, then write: under DEFERRED two such transactions deadlock on the
                # lock upgrade and one fails at once; IMMEDIATE makes the second one wait.
                with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                    cursor.execute("SELECT n FROM counter")
                    (n,) = cursor.fetchone()
                    cursor.execute("UPDATE counter SET n = %s", [n + 1])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connections[alias].close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        total = cursor.fetchone()[0]
    assert errors == []
    assert total == 200


# Writers take turns on SQLite's write lock: BEGIN IMMEDIATE takes it, and a writer that finds
# it taken waits up to the connection's timeout.
embedded_only = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="the embedded profile's SQLite"
)


def _create_items(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("CREATE TABLE items (n INTEGER)")


def _insert(alias: str, n: int) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO items VALUES (%s)", [n])


def _items(alias: str) -> list[int]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM items ORDER BY n")
        return [n for (n,) in cursor.fetchall()]


def _in_thread(alias: str, work) -> tuple[threading.Thread, dict]:
    """Run ``work()`` in another thread, with its own connection; its error lands in the dict."""
    result: dict = {}

    def run():
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the test
            result["error"] = exc
        finally:
            connections[alias].close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _holding(alias: str) -> tuple[threading.Thread, dict, threading.Event]:
    """Another thread inserts 1 in a transaction and holds it open until ``finish`` is set."""
    inside, finish = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic(using=alias):
            _insert(alias, 1)
            inside.set()
            assert finish.wait(5)

    holder, held = _in_thread(alias, hold)
    assert inside.wait(5)
    return holder, held, finish


@pytest.fixture
def writer_timeout(sqlite_file_alias, monkeypatch):
    """The alias's writers wait at most 0.5 s (SQLite's busy timeout and the process's lock)."""
    options = connections.settings[sqlite_file_alias]["OPTIONS"]
    monkeypatch.setitem(
        connections.settings[sqlite_file_alias], "OPTIONS", {**options, "timeout": 0.5}
    )
    return 0.5


@embedded_only
def test_a_write_waits_for_another_threads_transaction_then_lands(sqlite_file_alias):
    alias = sqlite_file_alias
    _create_items(alias)
    holder, held, finish = _holding(alias)
    writer, wrote = _in_thread(alias, lambda: _insert(alias, 2))
    writer.join(0.3)
    waited = writer.is_alive()
    finish.set()
    holder.join(5)
    writer.join(5)

    assert waited
    assert held == {}
    assert wrote == {}
    assert _items(alias) == [1, 2]


@embedded_only
def test_a_write_kept_waiting_past_the_timeout_fails_as_locked_and_loses_nothing(
    sqlite_file_alias, writer_timeout
):
    alias = sqlite_file_alias
    _create_items(alias)
    holder, held, finish = _holding(alias)
    writer, wrote = _in_thread(alias, lambda: _insert(alias, 2))
    writer.join(5)
    finish.set()
    holder.join(5)

    assert isinstance(wrote.get("error"), OperationalError)
    assert "database is locked" in str(wrote["error"])
    assert held == {}
    assert _items(alias) == [1]


@embedded_only
def test_a_failed_or_abandoned_transaction_keeps_no_writer_waiting(
    sqlite_file_alias, writer_timeout
):
    alias = sqlite_file_alias
    _create_items(alias)

    def fail():
        with transaction.atomic(using=alias):
            _insert(alias, 1)
            raise ValueError("the work in the transaction failed")

    def abandon():
        transaction.atomic(using=alias).__enter__()
        _insert(alias, 2)
        connections[alias].close()  # as when a worker's connection is closed mid-transaction

    results = []
    for work in (fail, abandon, lambda: _insert(alias, 3)):
        thread, result = _in_thread(alias, work)
        thread.join(5)
        results.append(result)

    assert isinstance(results[0].get("error"), ValueError)
    assert results[1:] == [{}, {}]
    assert _items(alias) == [3]
