"""Routes of the prediction API (under /api/v1)."""

from mlplatform.api.routes import route
from predictions import batch_views, stats_views, stream_views, views

urlpatterns = [
    *route("predict", views.PredictView.as_view(), "predict"),
    *route("predict/stream", stream_views.PredictStreamView.as_view(), "predict-stream"),
    *route("predict/batch", batch_views.BatchSubmitView.as_view(), "batch-submit"),
    *route("predict/batch/<uuid:pk>", batch_views.BatchJobDetailView.as_view(), "batch-detail"),
    *route(
        "predict/batch/<uuid:pk>/results", batch_views.BatchResultsView.as_view(), "batch-results"
    ),
    *route("predict/batch/<uuid:pk>/events", batch_views.BatchEventsView.as_view(), "batch-events"),
    *route("predict/batch/<uuid:pk>/cancel", batch_views.BatchCancelView.as_view(), "batch-cancel"),
    *route("jobs", batch_views.JobListView.as_view(), "job-list"),
    *route("predict/ab-test", views.AbTestPredictView.as_view(), "predict-ab-test"),
    *(
        pattern
        for path, view in views.tutorial_routes.items()
        for pattern in route(path, view.as_view(), path.replace("/", "-"))
    ),
    *route(
        "predict/batch/api-key",
        batch_views.BatchSubmitApiKeyView.as_view(),
        "batch-submit-api-key",
    ),
    *route("predict/<uuid:pk>", views.PredictionDetailView.as_view(), "prediction-detail"),
    *route("predictions", views.PredictionListView.as_view(), "prediction-list"),
    *route("predictions/<uuid:pk>/feedback", views.FeedbackView.as_view(), "prediction-feedback"),
    *route("stats", stats_views.StatsView.as_view(), "stats"),
    *route("metrics", stats_views.MetricsSummaryView.as_view(), "metrics-summary"),
    *route("models", views.ModelListView.as_view(), "model-list"),
    *route("models/<str:name>", views.ModelDetailView.as_view(), "model-detail"),
    *route(
        "models/<str:name>/versions", views.ModelVersionCreateView.as_view(), "model-version-create"
    ),
    *route(
        "models/<str:name>/remote-versions",
        views.RemoteVersionCreateView.as_view(),
        "model-remote-version-create",
    ),
]
