"""Errors raised by the runtime: a malformed artifact or a bad request input."""


class ArtifactError(ValueError):
    """A model artifact is malformed; the message says exactly what is wrong."""


class InputError(ValueError):
    """Request input is unusable; the message names the problem and where it is."""
