"""The scopes a credential can carry, and the user permission behind each."""

from django.db import models


class Scope(models.TextChoices):
    PREDICT = "predict", "Make predictions"
    BATCH = "batch", "Submit batch jobs"
    STREAM = "stream", "Stream predictions"
    READ = "read", "Read stored predictions and jobs"


ALL_SCOPES: tuple[str, ...] = tuple(Scope.values)


def permission_codename(scope: str) -> str:
    return f"scope_{scope}"


def user_has_scope(user, scope: str) -> bool:
    """A user holds a scope through the matching permission (directly, by group, or superuser)."""
    return bool(user.is_active and user.has_perm(f"accounts.{permission_codename(scope)}"))
