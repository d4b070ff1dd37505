"""A per-process cache of recently verified API keys, their owners and the owners' scopes.

Loading a key, its owner and the owner's scopes costs two queries, more than the rest of a
prediction. Keys seen within ``API_KEY_CACHE_SECONDS`` (default 1 s) are served from memory:
the raw key is still checked against the hash on every request, expiry is checked against the
clock, and a key revoked through the platform is dropped from this process at once; any other
process notices a revocation or a permission change within 1.5 times the cache time.

When a key's entry runs out, one thread loads it again while the others asking for the same
key meanwhile go on with the entry they have, if it was loaded less than ``STALE_LIMIT`` (1.5)
cache times ago, or else wait for that load (giving back their pooled database connection
first, which the loading thread may need). Without that, every request of a busy key that
came during the load made the same two queries: each second, the requests of that moment in
every process waited for a burst of them.
"""

import threading
import time

from accounts.models import ApiKey
from accounts.scopes import user_scopes
from accounts.selectors import api_key_by_lookup
from mlplatform.conf import platform_setting
from mlplatform.db.pool import give_back_connection

MAX_ENTRIES = 10_000
# How many cache times old an entry may be for a thread to use it while another reloads it.
STALE_LIMIT = 1.5


class VerifiedKeys:
    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ApiKey, float]] = {}
        self._loading: dict[str, threading.Lock] = {}  # lookups being loaded
        self._lock = threading.Lock()

    def get(self, lookup: str) -> ApiKey | None:
        """The key with this lookup id (owner and scopes loaded), or None if there is none."""
        cache_time = platform_setting("API_KEY_CACHE_SECONDS")
        entry = self._entries.get(lookup)
        if entry is not None and self.timer() - entry[1] < cache_time:
            return entry[0]
        with self._lock:
            loading = self._loading.setdefault(lookup, threading.Lock())
        if not loading.acquire(blocking=False):
            if entry is not None and self.timer() - entry[1] < cache_time * STALE_LIMIT:
                return entry[0]
            give_back_connection()
            loading.acquire()
        try:
            entry = self._entries.get(lookup)
            if entry is not None and self.timer() - entry[1] < cache_time:
                return entry[0]  # loaded by the thread this one waited for
            return self._load(lookup)
        finally:
            with self._lock:
                if self._loading.get(lookup) is loading:
                    del self._loading[lookup]
            loading.release()

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
