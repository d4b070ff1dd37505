"""Users, API keys, JWT wiring and scopes."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import (  # noqa: F401  (registered on import)
            checks,  # the rate-limit tiers' system checks
            schema,  # the OpenAPI security schemes
        )
