"""Routes of the Open Inference Protocol (V2) REST API, included at the site root: /v2/...

The patterns carry their ``v2`` prefix themselves: ``/v2`` (server metadata) has no trailing
slash in the protocol, and an ``include("v2")`` would force every pattern to start with a
slash, which Django's URL checks warn about. Any other path under /v2 falls through to the
site's 404 handler (``mlplatform.views.not_found``), which answers in the protocol's shape.
``v2/models/stats`` comes before the model routes, as in Triton: it is never a model's metadata.
"""

from mlplatform.api.routes import route
from predictions.v2 import views

_MODEL = "v2/models/<str:name>"
_VERSION = "v2/models/<str:name>/versions/<str:version>"

urlpatterns = [
    *route("v2", views.ServerMetadataView.as_view(), "v2-server-metadata"),
    *route("v2/health/live", views.ServerLiveView.as_view(), "v2-live"),
    *route("v2/health/ready", views.ServerReadyView.as_view(), "v2-ready"),
    *route("v2/models", views.ModelListView.as_view(), "v2-models"),
    *route("v2/models/stats", views.AllStatsView.as_view(), "v2-stats"),
    *route("v2/repository/index", views.RepositoryIndexView.as_view(), "v2-repository-index"),
    *route(
        "v2/repository/models/<str:name>/load",
        views.RepositoryControlView.as_view(action="load"),
        "v2-repository-load",
    ),
    *route(
        "v2/repository/models/<str:name>/unload",
        views.RepositoryControlView.as_view(action="unload"),
        "v2-repository-unload",
    ),
    *route(_MODEL, views.ModelMetadataView.as_view(), "v2-model-metadata"),
    *route(_VERSION, views.ModelMetadataView.as_view(), "v2-version-metadata"),
    *route(f"{_MODEL}/config", views.ModelConfigView.as_view(), "v2-model-config"),
    *route(f"{_VERSION}/config", views.ModelConfigView.as_view(), "v2-version-config"),
    *route(f"{_MODEL}/ready", views.ModelReadyView.as_view(), "v2-model-ready"),
    *route(f"{_VERSION}/ready", views.ModelReadyView.as_view(), "v2-version-ready"),
    *route(f"{_MODEL}/stats", views.ModelStatsView.as_view(), "v2-model-stats"),
    *route(f"{_VERSION}/stats", views.ModelStatsView.as_view(), "v2-version-stats"),
    *route(f"{_MODEL}/infer", views.InferView.as_view(), "v2-infer"),
    *route(f"{_VERSION}/infer", views.InferView.as_view(), "v2-version-infer"),
]
