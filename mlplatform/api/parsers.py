"""A JSON parser on orjson that refuses oversized bodies, non-finite numbers and deep nesting
by name."""

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from mlplatform.errors import PayloadTooLarge
from mlplatform.jsondepth import TOO_DEEP, too_deep
from mlplatform.middleware import body_limit

_NON_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"+Infinity", b"nan", b"inf", b"-inf")


def read_limited(stream, limit: int) -> bytes:
    """Read the body, refusing it once it passes the configured size (chunked bodies too)."""
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    return data


def loads(data: bytes):
    """Parse JSON, naming NaN, Infinity, out-of-range numbers and deep nesting when they are
    the problem."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        at = data[exc.pos : exc.pos + 10].lstrip()
        if "infinity when parsed" in message or at.startswith(_NON_FINITE_TOKENS):
            raise ParseError(
                "Malformed JSON: NaN, Infinity and numbers beyond the float range are not "
                f"finite numbers ({message})."
            ) from None
        raise ParseError(f"Malformed JSON: {message}.") from None
    if too_deep(data, value):
        raise ParseError(TOO_DEEP)
    return value


class ORJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = body_limit(request.path) if request is not None else body_limit("")
        data = read_limited(stream, limit)
        if not data.strip():
            raise ParseError("The request body is empty; send a JSON object.")
        return loads(data)
