"""The ML domain: registry, runtime, stored predictions."""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from predictions import batch_files  # noqa: F401 - connects the file deletion receivers
