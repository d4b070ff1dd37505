"""The project package as an app: its commands, templates and system checks."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PlatformConfig(AppConfig):
    name = "mlplatform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from mlplatform import (
            checks,  # noqa: F401  (registers the checks)
            tracing,
        )

        tracing.setup()  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set


class PlatformAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` in INSTALLED_APPS, with the platform's site as ``admin.site``."""

    # Named by its path only: never the config Django picks for the ``mlplatform`` app itself.
    default = False
    default_site = "accounts.admin_site.PlatformAdminSite"
