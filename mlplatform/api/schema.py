"""OpenAPI schema hooks."""


def drop_trailing_slash_duplicates(endpoints, **kwargs):
    """Each route is served with and without a trailing slash; document it once."""
    paths = {path for path, *_ in endpoints}
    return [
        (path, regex, method, callback)
        for path, regex, method, callback in endpoints
        if not (path.endswith("/") and path.rstrip("/") in paths)
    ]
