"""Helpers for tests of code that reads the database while others wait: a fake clock, a call
run in another thread as a concurrent request would make it, and a database read held midway."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


class Clock:
    """A monotonic clock that moves only when the test sets ``now``."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def in_thread(ask: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    """Run ``ask()`` in another thread, as another request would; its ``value`` or ``error``
    lands in the dict returned."""
    result = {}

    def run():
        try:
            result["value"] = ask()
        except Exception as exc:
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


class HeldRead:
    """Wraps the function ``name`` of ``module`` (a read of the database): counts its calls,
    and once armed, the next call, in whichever thread, waits until the test releases it (and
    fails with the given error, if any)."""

    def __init__(self, monkeypatch, module, name: str):
        self.calls = 0
        self.entered, self.release = threading.Event(), threading.Event()
        self._armed, self._error = False, None
        read = getattr(module, name)

        def held(*args):
            self.calls += 1
            if self._armed:
                self._armed = False
                self.entered.set()
                assert self.release.wait(5), "the read was not released"
                if self._error is not None:
                    raise self._error
            return read(*args)

        monkeypatch.setattr(module, name, held)

    def arm(self, *, error: Exception | None = None) -> None:
        self._armed, self._error = True, error
