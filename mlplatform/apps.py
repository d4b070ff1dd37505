"""The project package as an app: its commands, templates and system checks."""

from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "mlplatform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from mlplatform import (
            checks,  # noqa: F401  (registers the checks)
            tracing,
        )

        tracing.setup()  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
