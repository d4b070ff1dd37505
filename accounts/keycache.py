"""A per-process cache of recently verified API keys, their owners and the owners' scopes.

Loading a key, its owner and the owner's scopes costs two queries, more than the rest of a
prediction. Keys seen within ``API_KEY_CACHE_SECONDS`` (default 1 s) are served from memory:
the raw key is still checked against the hash on every request, expiry is checked against the
clock, and a key revoked through the platform is dropped from this process at once; any other
process notices a revocation or a permission change within the cache time.
"""

import threading
import time

from accounts.models import ApiKey
from accounts.scopes import user_scopes
from accounts.selectors import api_key_by_lookup
from mlplatform.conf import platform_setting

MAX_ENTRIES = 10_000


class VerifiedKeys:
    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def get(self, lookup: str) -> ApiKey | None:
        """The key with this lookup id (owner and scopes loaded), or None if there is none."""
        now = self.timer()
        entry = self._entries.get(lookup)
        if entry is not None and now - entry[1] < platform_setting("API_KEY_CACHE_SECONDS"):
            return entry[0]
        key = api_key_by_lookup(lookup)
        with self._lock:
            if key is None:
                self._entries.pop(lookup, None)
                return None
            user_scopes(key.owner)  # remembered on the owner object
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[lookup] = (key, now)
        return key

    def forget(self, lookup: str) -> None:
        with self._lock:
            self._entries.pop(lookup, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_keys = VerifiedKeys()
