"""Idempotency keys: the same key and body from the same principal get the first answer again.

Only successful answers are kept, for 24 hours; a key sent again with a different body is
refused (422), and a key whose first request is still running is refused (409) instead of
running twice.
"""

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
from django.db import IntegrityError, transaction
from django.utils import timezone

from mlplatform.errors import InvalidInput, PlatformError
from predictions.models import IdempotencyRecord

REPLAY_WINDOW = timedelta(hours=24)
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def fingerprint(body: Any) -> str:
    """A hash of the parsed request body (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotent(
    *,
    principal: str,
    endpoint: str,
    key: str,
    request_fingerprint: str,
    run: Callable[[], tuple[int, dict]],
) -> tuple[int, dict, bool]:
    """Run ``run`` once per key; return (status, body, replayed)."""
    if not _VALID_KEY.match(key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            code="invalid_idempotency_key",
        )
    now = timezone.now()
    scope = {"principal": principal, "endpoint": endpoint, "key": key}
    record = IdempotencyRecord.objects.filter(**scope, created_at__gte=now - REPLAY_WINDOW).first()
    if record is not None:
        if record.request_hash != request_fingerprint:
            raise PlatformError(
                "This Idempotency-Key was already used with a different request body; "
                "use a new key for a new request.",
                code="idempotency_key_reused",
                status_code=422,
            )
        return record.status_code, record.response, True
    with transaction.atomic():
        IdempotencyRecord.objects.filter(**scope, created_at__lt=now - REPLAY_WINDOW).delete()
        status_code, body = run()
        # Stored as the client saw it: datetimes and UUIDs as JSON strings.
        stored = orjson.loads(orjson.dumps(body))
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    **scope,
                    request_hash=request_fingerprint,
                    status_code=status_code,
                    response=stored,
                )
        except IntegrityError:
            # Another request with this key got there first: undo ours rather than do it twice.
            raise PlatformError(
                "A request with this Idempotency-Key is already being processed; retry shortly.",
                code="idempotency_key_in_use",
                status_code=409,
            ) from None
    return status_code, stored, False
