"""Services of the ML domain: the functions that write (views and admin call these)."""

from predictions.services.feedback import feedback_submit
from predictions.services.idempotency import fingerprint, idempotent
from predictions.services.predict import (
    PredictionRequest,
    aprediction_create,
    aprediction_request,
    prediction_create,
    prediction_create_in_parallel,
    prediction_request,
)
from predictions.services.registration import Registration, model_create, model_register
from predictions.services.versions import (
    artifact_validate,
    model_save,
    model_version_create,
    model_version_replace_artifact,
    model_version_save,
    model_version_set_status,
    registry_touch,
)

__all__ = [
    "PredictionRequest",
    "Registration",
    "aprediction_create",
    "aprediction_request",
    "artifact_validate",
    "feedback_submit",
    "fingerprint",
    "idempotent",
    "model_create",
    "model_register",
    "model_save",
    "model_version_create",
    "model_version_replace_artifact",
    "model_version_save",
    "model_version_set_status",
    "prediction_create",
    "prediction_create_in_parallel",
    "prediction_request",
    "registry_touch",
]
