"""Lean handler of V2 ``infer``: its common case, served on the event loop.

``InferView`` defines the endpoint; a program posting a tensor (JSON or binary) with an API
key is served here with the same contract (``tests/e2e/test_lean_parity.py``). Handed to the
view: other credentials, a key not in this process's cache or refused, a compressed body, and
the requests ``LeanRequest.plain_post`` leaves out. Once the rate limit has counted the
request, this handler answers every outcome itself, in the protocol's error shape.
"""

import logging
import re

import orjson

from accounts.authentication import cached_key
from accounts.ratelimit import acount
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import PlatformError
from mlplatform.lean import LeanRequest
from mlplatform.logging import log_context
from predictions.runtime.v2codec import HEADER_LENGTH, ProtocolError
from predictions.v2.codec import decode_request
from predictions.v2.services import answer_encoded, atensor_predictions_create, atensor_request

logger = logging.getLogger(__name__)

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()  # ASGI names headers in lowercase


async def infer(scope, receive, send, django, match: re.Match) -> None:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""
    name, version = match["name"], match["version"]
    view = "v2-version-infer" if version is not None else "v2-infer"
    request = LeanRequest(scope, receive)
    raw_key = request.header(b"x-api-key")
    key = None
    if (
        raw_key is not None
        and request.plain_post()
        and await request.read_body(platform_setting("MAX_BODY_BYTES"))
    ):
        key = cached_key(raw_key, "predict")
    metrics.lean_request(view=view, served=key is not None)
    if key is None:
        await django(scope, request.replay(), send)
        return
    content_type, extra = b"application/json", []
    with log_context(request_id=request.request_id):
        usage = await acount("predict", principal=f"key:{key.pk}", user=key.owner, api_key=key)
        if usage is not None and usage.limited:
            status, body = 429, _error(usage.describe())
        else:
            try:
                inference = decode_request(request.body, request.header(_HEADER_LENGTH))
                checked = await atensor_request(
                    user=key.owner,
                    api_key=key,
                    model_name=name,
                    version_label=version,
                    request=inference,
                    request_id=request.request_id,
                )
                answer = await atensor_predictions_create(checked)
                body, header_length = answer_encoded(answer, inference)
                status = 200
                if header_length is not None:
                    content_type = b"application/octet-stream"
                    extra = [(_HEADER_LENGTH, b"%d" % header_length)]
            except ProtocolError as exc:
                status, body = exc.status_code, _error(str(exc))
            except PlatformError as exc:
                status, body = exc.status_code, _error(exc.detail)
            except Exception:
                logger.exception("inference failed")
                status, body = 500, _error("Internal server error.")
        await request.answer(
            send,
            status,
            body,
            view=view,
            allow="POST, OPTIONS",
            vary="",
            content_type=content_type,
            extra=extra,
            usage=usage,
            key=key,
        )


def _error(detail: str) -> bytes:
    return orjson.dumps({"error": detail})


PATTERNS = {r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer/?$": infer}
