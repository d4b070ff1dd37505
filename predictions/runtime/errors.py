"""Errors raised by the runtime: a malformed artifact, a bad request input, a failed upstream."""


class ArtifactError(ValueError):
    """A model artifact is malformed; the message says exactly what is wrong."""


class InputError(ValueError):
    """Request input is unusable; the message names the problem and where it is."""


class UpstreamError(Exception):
    """A remote model's server failed to answer; the message names it, never its credential."""


class UpstreamTimeout(UpstreamError):
    """A remote model's server did not answer within the version's timeout."""
