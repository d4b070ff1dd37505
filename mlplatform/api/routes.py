"""URL helpers: every API route answers with a trailing slash or without one."""

from django.urls import path


def route(pattern: str, view, name: str) -> list:
    """The pattern without and with a trailing slash; only the first carries the name."""
    pattern = pattern.rstrip("/")
    return [path(pattern, view, name=name), path(f"{pattern}/", view)]
