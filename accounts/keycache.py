"""A per-process cache of recently verified API keys, their owners and the owners' scopes.

Loading a key, its owner and the owner's scopes costs two queries, more than the rest of a
prediction. Keys seen within ``API_KEY_CACHE_SECONDS`` (default 1 s) are served from memory:
the raw key is still checked against the hash on every request, expiry is checked against the
clock, and a key revoked through the platform is dropped from this process at once; any other
process notices a revocation or a permission change within 1.5 times the cache time.

Threads (DRF views) load an expired entry themselves. The event loop never waits for the
database: ``fresh()`` gives an entry younger than ``STALE_LIMIT`` (1.5) cache times, and from one
cache time on has a thread load it again meanwhile; without such an entry the request goes to
the DRF view, which loads it.
"""

import asyncio
import logging
import threading
import time

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections

from accounts.models import ApiKey
from accounts.scopes import user_scopes
from accounts.selectors import api_key_by_lookup
from mlplatform.conf import platform_setting

logger = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
# How many cache times old an entry may be for the event loop to use it while it is reloaded.
STALE_LIMIT = 1.5


class VerifiedKeys:
    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ApiKey, float]] = {}
        self._reloads: dict[str, asyncio.Future] = {}  # the event loop's reloads under way
        self._lock = threading.Lock()

    def get(self, lookup: str) -> ApiKey | None:
        """The key with this lookup id (owner and scopes loaded), or None if there is none."""
        entry = self._entries.get(lookup)
        if entry is not None and self.timer() - entry[1] < platform_setting(
            "API_KEY_CACHE_SECONDS"
        ):
            return entry[0]
        return self._load(lookup)

    def fresh(self, lookup: str) -> ApiKey | None:
        """For the event loop: the cached key while it may be used, else None (load it on a
        thread: ``get``). From one cache time on, a thread reloads it meanwhile."""
        entry = self._entries.get(lookup)
        if entry is None:
            return None
        cache_time = platform_setting("API_KEY_CACHE_SECONDS")
        age = self.timer() - entry[1]
        if age >= cache_time:
            reload = self._reloads.get(lookup)
            if reload is None or reload.done():
                self._reloads[lookup] = asyncio.ensure_future(sync_to_async(self._reload)(lookup))
            if age >= cache_time * STALE_LIMIT:
                return None
        return entry[0]

    def _reload(self, lookup: str) -> ApiKey | None:
        """``_load`` on asgiref's thread, which gives a pooled connection back after it. When
        the database fails, the entry stays as it was until it is too stale to use."""
        try:
            return self._load(lookup)
        except DatabaseError as exc:
            logger.warning("an API key could not be reloaded: %s", exc)
            return None
        finally:
            close_old_connections()

    def _load(self, lookup: str) -> ApiKey | None:
        loaded_at = self.timer()
        key = api_key_by_lookup(lookup)
        if key is not None:
            user_scopes(key.owner)  # remembered on the owner object
        with self._lock:
            if key is None:
                self._entries.pop(lookup, None)
                return None
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[lookup] = (key, loaded_at)
        return key

    def forget(self, lookup: str) -> None:
        with self._lock:
            self._entries.pop(lookup, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_keys = VerifiedKeys()
