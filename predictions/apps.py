"""The ML domain: registry, runtime, stored predictions."""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the receivers that delete files with their rows.
        from predictions import artifact_files, batch_files  # noqa: F401
