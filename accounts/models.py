"""Users and their API keys."""

import base64
import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone

from accounts import crypto
from accounts.rates import validate_overrides
from accounts.scopes import ALL_SCOPES, permission_codename


def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


RATE_LIMITS_HELP = (
    "Overrides of the default rate limits, e.g. '1200/m' (predictions) or "
    "'predict=1200/m, batch=100/h'. Groups: auth, predict, batch, stream, api; periods s, m, h, d. "
    "Empty: the defaults."
)


class User(AbstractUser):
    """A person or service account; its scope permissions bound what its keys can do."""

    webhook_secret = models.CharField(
        max_length=64,
        default=_webhook_secret,
        help_text="Signs this user's webhook events (Standard Webhooks, whsec_ + base64).",
    )
    rate_limits = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_overrides],
        help_text=RATE_LIMITS_HELP,
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        permissions = [(permission_codename(s), f"Can use the '{s}' scope") for s in ALL_SCOPES]


class ApiKey(models.Model):
    """A long-lived credential for programs; only a hash of the key is kept."""

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    lookup = models.CharField(max_length=crypto.LOOKUP_LENGTH, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rate_limits = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_overrides],
        help_text=RATE_LIMITS_HELP + " A key's overrides come before its owner's.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def prefix(self) -> str:
        return f"{crypto.PREFIX}_{self.lookup}"

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired()
