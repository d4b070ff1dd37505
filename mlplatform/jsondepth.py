"""How deep a JSON request may nest. Django-free: the V2 codec uses it too.

No request of the API nests deeper than ``MAX_JSON_DEPTH`` (a V2 tensor of 30 dimensions
would); a deeper document only makes the code that walks it (serializers, encoders, GraphQL's
coercion of variables) run out of stack.
"""

MAX_JSON_DEPTH = 32

TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels; no request of this API needs more."


def too_deep(data: bytes | bytearray | memoryview, value: object) -> bool:
    """Whether ``value``, parsed from ``data``, nests deeper than ``MAX_JSON_DEPTH``.

    A document cannot nest deeper than it has brackets, so most bodies are not walked.
    """
    buffer = data.obj if isinstance(data, memoryview) else data
    if buffer.count(b"[") + buffer.count(b"{") <= MAX_JSON_DEPTH:
        return False
    level = [value] if isinstance(value, list | dict) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, list | dict)
        ]
    return False
