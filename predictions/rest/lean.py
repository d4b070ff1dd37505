"""Lean handlers of the prediction endpoints: their common case, served on the event loop.

``PredictView`` (``POST /api/v1/predict``) and ``AbTestPredictView`` define these endpoints:
their schema, the browsable API and the whole behaviour. The common case, a program posting a
row with an API key, is served here without Django's request, middleware or the view, with
the same contract: status, body, headers, the stored row, the rate limit counted once
(``tests/e2e/test_lean_parity.py`` holds both to it). Everything else goes to the view, body
included: other credentials, a key not in this process's cache or refused, a body that is not
the serializer's plain case (a missing field, a wrong type, anything DRF would refuse or
convert), and the requests ``LeanRequest.plain_json_post`` leaves out. A request the view
would count against the rate limit before refusing it is only counted once this handler has
taken it; from there on it answers every outcome itself, as the view's exception handler does.
"""

import functools
import logging

import orjson

from accounts.authentication import cached_key
from accounts.ratelimit import acount
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import PlatformError
from mlplatform.jsondepth import too_deep
from mlplatform.lean import LeanRequest, error_content, rendered
from mlplatform.logging import log_context
from predictions.serializers import prediction_payload
from predictions.services import aprediction_create, aprediction_request

logger = logging.getLogger(__name__)

_FIELDS = frozenset({"input_data", "model", "model_version", "timeout"})
_NUMBERS = (int, float)


def plain_fields(body: bytes) -> dict | None:
    """The fields of a ``/predict`` body that ``PredictRequestSerializer`` takes as they are,
    else None: the view's serializer decides (and words its errors)."""
    try:
        data = orjson.loads(body)
    except ValueError:
        return None
    if type(data) is not dict or "input_data" not in data or not data.keys() <= _FIELDS:
        return None
    if too_deep(body, data):
        return None
    for name in ("model", "model_version"):
        value = data.get(name, "x")
        if type(value) is not str or not value or value != value.strip():
            return None
    timeout = data.get("timeout", 1)
    if type(timeout) not in _NUMBERS or not 0.000001 <= timeout <= platform_setting("MAX_TIMEOUT"):
        return None
    return data


async def predict(scope, receive, send, django, match, *, view: str, split_only: bool) -> None:
    """``POST /api/v1/predict`` (or ``/predict/ab-test`` with ``split_only``)."""
    request = LeanRequest(scope, receive)
    raw_key = request.header(b"x-api-key")
    key = data = None
    if (
        raw_key is not None
        and request.plain_json_post()
        and await request.read_body(platform_setting("MAX_BODY_BYTES"))
    ):
        key = cached_key(raw_key, "predict")
        data = plain_fields(request.body) if key is not None else None
    metrics.lean_request(view=view, served=data is not None)
    if data is None:
        await django(scope, request.replay(), send)
        return
    user = key.owner
    with log_context(request_id=request.request_id):
        usage = await acount("predict", principal=f"key:{key.pk}", user=user, api_key=key)
        if usage is not None and usage.limited:
            status = 429
            body = error_content(PlatformError(usage.describe(), code="rate_limited"))
        else:
            try:
                checked = await aprediction_request(
                    user=user,
                    api_key=key,
                    input_data=data["input_data"],
                    model_name=data.get("model"),
                    version_label=None if split_only else data.get("model_version"),
                    timeout=data.get("timeout"),
                    request_id=request.request_id,
                )
                prediction = await aprediction_create(checked)
            except PlatformError as exc:
                status, body = exc.status_code, error_content(exc)
            except Exception:
                logger.exception("prediction failed")
                error = PlatformError("Internal server error.", code="server_error")
                status, body = 500, error_content(error)
            else:
                status, body = 200, rendered(prediction_payload(prediction))
        await request.answer(
            send,
            status,
            body,
            view=view,
            allow="POST, OPTIONS",
            usage=usage,
            key=key,
        )


_predict = functools.partial(predict, view="predict", split_only=False)
_ab_test = functools.partial(predict, view="predict-ab-test", split_only=True)

ROUTES = {
    "/api/v1/predict": _predict,
    "/api/v1/predict/": _predict,
    "/api/v1/predict/ab-test": _ab_test,
    "/api/v1/predict/ab-test/": _ab_test,
}
