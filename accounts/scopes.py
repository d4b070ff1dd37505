"""The scopes a credential can carry, and the user permission behind each."""

from django.contrib.auth.models import Permission
from django.db import models
from django.db.models import Q


class Scope(models.TextChoices):
    PREDICT = "predict", "Make predictions"
    BATCH = "batch", "Submit batch jobs"
    STREAM = "stream", "Stream predictions"
    READ = "read", "Read stored predictions and jobs"
    MODELS = "models", "Register models and versions"


ALL_SCOPES: tuple[str, ...] = tuple(Scope.values)
# What a client of the served models needs; registering models is an operator's function, so
# the "API users" group and the demo key hold these and not ``models``.
CLIENT_SCOPES: tuple[str, ...] = (Scope.PREDICT, Scope.BATCH, Scope.STREAM, Scope.READ)
# Staff run the registry from the admin; they hold ``models`` without a permission of its own.
STAFF_SCOPES: frozenset[str] = frozenset({Scope.MODELS})
_CODENAME_PREFIX = "scope_"


def permission_codename(scope: str) -> str:
    return f"{_CODENAME_PREFIX}{scope}"


def user_scopes(user) -> frozenset[str]:
    """The scopes a user holds through permissions (directly or by group; all for superusers;
    ``models`` for staff).

    One query, remembered on the user object for the rest of the request: this runs on every
    scoped API call, where Django's ``has_perm`` would load all permissions in two queries.
    """
    cached = getattr(user, "_scopes_cache", None)
    if cached is not None:
        return cached
    if not user.is_active:
        scopes = frozenset()
    elif user.is_superuser:
        scopes = frozenset(ALL_SCOPES)
    else:
        codenames = (
            Permission.objects.filter(
                Q(user=user) | Q(group__user=user),
                content_type__app_label="accounts",
                codename__startswith=_CODENAME_PREFIX,
            )
            .values_list("codename", flat=True)
            .distinct()
        )
        scopes = frozenset(c.removeprefix(_CODENAME_PREFIX) for c in codenames) & set(ALL_SCOPES)
        if user.is_staff:
            scopes |= STAFF_SCOPES
    user._scopes_cache = scopes
    return scopes


def user_has_scope(user, scope: str) -> bool:
    return scope in user_scopes(user)
