"""Routes of the streaming endpoints under /api/v1 (WebSockets are routed by the ASGI app)."""

from mlplatform.api.routes import route
from predictions.streams import sse

urlpatterns = [
    *route("predict/stream", sse.PredictStreamView.as_view(), "predict-stream"),
    *route("predict/batch/<uuid:pk>/events", sse.BatchEventsView.as_view(), "batch-events"),
]
