"""Renderers: JSON on orjson (numpy-aware and several times faster than the stdlib), and the
browsable API."""

import orjson
from django.utils.http import parse_header_parameters
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer

# Times are ISO 8601 with a ``+00:00`` offset, not ``Z``: ``datetime.fromisoformat`` reads only
# that form before Python 3.11, and every face (GraphQL, streams, webhooks) writes it.
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_INDENTED = _OPTIONS | orjson.OPT_INDENT_2


def _default(value):
    # Lazy translations, Decimals and other types DRF's encoder would handle.
    return str(value)


def indented(accepted_media_type: str | None, renderer_context: dict | None) -> bool:
    """Whether the answer is asked for indented, as DRF's JSONRenderer reads it: an ``indent``
    parameter of the accepted media type (``application/json; indent=4``; 0 means compact),
    else an ``indent`` in the renderer context (the browsable API sets one)."""
    if accepted_media_type and ";" in accepted_media_type:
        params = parse_header_parameters(accepted_media_type)[1]
        try:
            return int(params["indent"]) > 0
        except (KeyError, ValueError):
            pass
    return bool(renderer_context and renderer_context.get("indent"))


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        # orjson indents by two spaces whatever width was asked for.
        options = _INDENTED if indented(accepted_media_type, renderer_context) else _OPTIONS
        return orjson.dumps(data, default=_default, option=options)


class PlatformBrowsableAPIRenderer(BrowsableAPIRenderer):
    """DRF's browsable API, with the POST form of an endpoint prefilled with a working example
    body, and that form (not a 405) for a browser's GET of a POST-only endpoint."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        request, response = renderer_context["request"], renderer_context["response"]
        offers_post = "POST" in renderer_context["view"].allowed_methods
        if request.method == "GET" and response.status_code == 405 and offers_post:
            # A person who opens the address in a browser gets the page to POST from; programs
            # (any other Accept) still get the 405.
            response.status_code = 200
            data = {"detail": "This endpoint takes a POST: the form below holds an example body."}
        return super().render(data, accepted_media_type, renderer_context)

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        content = form.fields["_content"] if form is not None else None
        match = getattr(request, "resolver_match", None)
        if content is None or content.initial or match is None or method != "POST":
            return form
        # Imported here: the schema generator imports DRF's views, which import this module.
        from mlplatform.api.schema import request_example

        example = request_example(match.route, match.func, method)
        if example is not None:
            content.initial = orjson.dumps(example, option=orjson.OPT_INDENT_2).decode()
        return form
