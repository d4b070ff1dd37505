"""The ML domain: registry, runtime, stored predictions."""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from mlplatform import health, logging, metrics

        # Connect the receivers that delete files with their rows.
        from predictions.batch import files  # noqa: F401
        from predictions.catalogue import artifacts  # noqa: F401
        from predictions.catalogue.registry import check_models_ready
        from predictions.catalogue.remote import remote_versions_health
        from predictions.stats import BatchBacklogCollector, usage_record

        health.readiness_check("models", check_models_ready, needs_database=True)
        health.readiness_report("remote", remote_versions_health)
        metrics.scrape_collector(BatchBacklogCollector())
        logging.USER_REQUEST_OBSERVERS.append(usage_record)
