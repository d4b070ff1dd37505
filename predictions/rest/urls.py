"""Routes of the prediction API (under /api/v1)."""

from mlplatform.api.routes import route
from predictions.rest import batch, stats, views

urlpatterns = [
    *route("predict", views.PredictView.as_view(), "predict"),
    *route("predict/batch", batch.BatchSubmitView.as_view(), "batch-submit"),
    *route("predict/batch/<uuid:pk>", batch.BatchJobDetailView.as_view(), "batch-detail"),
    *route("predict/batch/<uuid:pk>/results", batch.BatchResultsView.as_view(), "batch-results"),
    *route("predict/batch/<uuid:pk>/cancel", batch.BatchCancelView.as_view(), "batch-cancel"),
    *route("jobs", batch.JobListView.as_view(), "job-list"),
    *route("predict/ab-test", views.AbTestPredictView.as_view(), "predict-ab-test"),
    *(
        pattern
        for path, view in views.tutorial_routes.items()
        for pattern in route(path, view.as_view(), path.replace("/", "-"))
    ),
    *route(
        "predict/batch/api-key",
        batch.BatchSubmitApiKeyView.as_view(),
        "batch-submit-api-key",
    ),
    *route("predict/<uuid:pk>", views.PredictionDetailView.as_view(), "prediction-detail"),
    *route("predictions", views.PredictionListView.as_view(), "prediction-list"),
    *route("predictions/<uuid:pk>/feedback", views.FeedbackView.as_view(), "prediction-feedback"),
    *route("stats", stats.StatsView.as_view(), "stats"),
    *route("metrics", stats.MetricsSummaryView.as_view(), "metrics-summary"),
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
