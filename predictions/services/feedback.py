"""Ground truth sent back for predictions, and what it says about each version."""

import math
from typing import Any

from accounts.models import User
from mlplatform.errors import InvalidInput, NotFound
from predictions.models import Feedback, MLModel, Prediction


def feedback_submit(*, user: User, prediction_id, actual: Any) -> Feedback:
    """Record (or correct) the actual label or value of one of the user's own predictions."""
    prediction = (
        Prediction.objects.select_related("model_version__model")
        .filter(pk=prediction_id, owner=user)
        .first()
    )
    if prediction is None:
        raise NotFound(f"No prediction {prediction_id}.", code="prediction_not_found")
    model = prediction.model_version.model
    fields: dict[str, Any]
    if model.task == MLModel.Task.CLASSIFICATION:
        if not isinstance(actual, str) or actual not in model.labels:
            raise InvalidInput(
                f"actual: must be one of the labels of {model.name!r}: {', '.join(model.labels)}."
            )
        fields = {"actual_label": actual, "correct": actual == prediction.label}
    else:
        if (
            isinstance(actual, bool)
            or not isinstance(actual, int | float)
            or not math.isfinite(actual)
        ):
            raise InvalidInput("actual: must be a finite number for a regression model.")
        predicted = prediction.output[0] if prediction.output else None
        fields = {
            "actual_value": float(actual),
            "absolute_error": abs(float(actual) - predicted) if predicted is not None else None,
        }
    feedback, _ = Feedback.objects.update_or_create(prediction=prediction, defaults=fields)
    return feedback
