"""The one application error type and the one error shape; ``mlplatform.api.exceptions``
maps errors to HTTP."""

from mlplatform.logging import current_request_id


class PlatformError(Exception):
    """An error the caller can act on: a status, a machine-readable code and a message."""

    status_code = 400
    code = "invalid"

    def __init__(self, detail: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class InvalidInput(PlatformError):
    status_code = 400
    code = "invalid_input"


class NotFound(PlatformError):
    status_code = 404
    code = "not_found"


class Forbidden(PlatformError):
    status_code = 403
    code = "permission_denied"


class PayloadTooLarge(PlatformError):
    status_code = 413
    code = "request_too_large"


class InferenceTimeout(PlatformError):
    status_code = 504
    code = "inference_timeout"


class DatabaseUnavailable(PlatformError):
    """The database did not answer, or no pooled connection came in time: retry shortly."""

    status_code = 503
    code = "database_unavailable"

    def __init__(self, detail: str = "The database is unavailable; try again shortly.") -> None:
        super().__init__(detail)


class UpstreamFailed(PlatformError):
    """A remote model server failed to answer (502); the detail names it, never its credential."""

    status_code = 502
    code = "upstream_error"


class UpstreamTimedOut(UpstreamFailed):
    """A remote model server did not answer within the version's timeout (504)."""

    status_code = 504
    code = "upstream_timeout"


def error_body(detail: str, code: str, **extra) -> dict:
    """The error shape, with the request id so a caller can quote it to an operator."""
    request_id = current_request_id()
    if request_id:
        extra.setdefault("request_id", request_id)
    return {"detail": detail, "code": code, **extra}
