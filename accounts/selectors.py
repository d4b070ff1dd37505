"""Reads of users and API keys."""

from django.db.models import QuerySet

from accounts.models import ApiKey, User


def api_keys_for(user: User) -> QuerySet[ApiKey]:
    """A user's own keys (staff too: keys are personal)."""
    return ApiKey.objects.filter(owner=user)


def api_key_by_lookup(lookup: str) -> ApiKey | None:
    return ApiKey.objects.select_related("owner").filter(lookup=lookup).first()
