"""Services of predictions: the functions that answer, store and annotate them (the faces call
these; the catalogue's own services are in ``predictions.catalogue``)."""

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

__all__ = [
    "PredictionRequest",
    "aprediction_create",
    "aprediction_request",
    "feedback_submit",
    "fingerprint",
    "idempotent",
    "prediction_create",
    "prediction_create_in_parallel",
    "prediction_request",
]
