"""Routes of the prediction API (under /api/v1)."""

from mlplatform.api.routes import route
from predictions import views

urlpatterns = [
    *route("predict", views.PredictView.as_view(), "predict"),
    *route("predict/ab-test", views.AbTestPredictView.as_view(), "predict-ab-test"),
    *route("predict/<uuid:pk>", views.PredictionDetailView.as_view(), "prediction-detail"),
    *route("predictions", views.PredictionListView.as_view(), "prediction-list"),
    *route("predictions/<uuid:pk>/feedback", views.FeedbackView.as_view(), "prediction-feedback"),
    *route("models", views.ModelListView.as_view(), "model-list"),
    *route("models/<str:name>", views.ModelDetailView.as_view(), "model-detail"),
]
