"""Profiles: production refuses unsafe settings; SQLite runs in WAL mode with waiting writers."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import connections, transaction

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
    del connections.settings[alias]


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the embedded profile's SQLite")
def test_sqlite_runs_in_wal_mode_and_concurrent_writers_wait(sqlite_file_alias):
    alias = sqlite_file_alias
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
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
