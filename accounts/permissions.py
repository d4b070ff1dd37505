"""Permissions: scopes (user permission AND key scope) and user-only operations."""

import functools

from rest_framework.permissions import BasePermission

from accounts.models import ApiKey
from accounts.scopes import user_has_scope


class ScopePermission(BasePermission):
    """The caller holds ``scope``: its user has the permission and its key (if any) the scope."""

    scope = ""
    code = "missing_scope"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        key = request.auth if isinstance(request.auth, ApiKey) else None
        if key is not None and self.scope not in key.scopes:
            self.message = f"This API key lacks the {self.scope!r} scope."
            return False
        if not user_has_scope(user, self.scope):
            self.message = f"User {user.get_username()!r} lacks the {self.scope!r} scope."
            return False
        return True


@functools.cache
def scope_required(scope: str) -> type[ScopePermission]:
    return type(f"Has{scope.title()}Scope", (ScopePermission,), {"scope": scope})


class UserCredentialsOnly(BasePermission):
    """Operations on credentials themselves need the user's own login, not an API key."""

    message = "API keys cannot manage credentials; authenticate with a JWT or a session."
    code = "user_credentials_required"
    refuses_api_keys = True  # the schema leaves the API-key scheme out of these operations

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated) and not isinstance(
            request.auth, ApiKey
        )


class AnyScopePermission(BasePermission):
    """The caller holds at least one of ``scopes`` (as ScopePermission judges each).

    Not DRF's ``A | B``: its ``OR`` carries neither operand's message nor code, so a refusal
    would be the generic "permission denied" instead of naming the scopes wanted.
    """

    scopes: tuple[str, ...] = ()
    code = "missing_scope"

    def has_permission(self, request, view) -> bool:
        if any(scope_required(scope)().has_permission(request, view) for scope in self.scopes):
            return True
        wanted = " or ".join(repr(scope) for scope in self.scopes)
        self.message = f"This credential lacks the {wanted} scope."
        return False


@functools.cache
def any_scope_required(*scopes: str) -> type[AnyScopePermission]:
    return type("HasAnyScope", (AnyScopePermission,), {"scopes": scopes})
