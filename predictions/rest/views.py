"""Thin views of the prediction API: validate, call one service or selector, serialize."""

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication, BearerJWTAuthentication
from accounts.models import ApiKey
from accounts.permissions import scope_required
from mlplatform.api.parsers import ORJSONParser
from mlplatform.api.schema import ErrorSerializer
from mlplatform.errors import NotFound
from predictions.catalogue.registration import model_create, model_register
from predictions.catalogue.remote import Upstream, remote_version_register
from predictions.models import MLModel, ModelVersion
from predictions.pipeline import principal_id
from predictions.selectors import (
    live_metrics,
    prediction_get,
    predictions_filter,
    predictions_for,
)
from predictions.serializers import (
    FeedbackRequestSerializer,
    FeedbackSerializer,
    MLModelSerializer,
    ModelCreateSerializer,
    PredictionFilterSerializer,
    PredictionSerializer,
    PredictRequestSerializer,
    RemoteVersionSerializer,
    VersionUploadSerializer,
    prediction_payload,
)
from predictions.services import (
    feedback_submit,
    fingerprint,
    idempotent,
    prediction_create,
    prediction_create_in_parallel,
)

# Seconds ``/predict/cached`` keeps an answer of a model that has no cache time to live.
CACHED_ROUTE_TTL = 300


class PredictView(APIView):
    """Make one prediction; it is stored before the answer is sent."""

    permission_classes = [scope_required("predict")]
    ratelimit_group = "predict"
    split_only = False
    idempotency_endpoint: str | None = "predict"
    # What the tutorial's demonstration routes change (see ``tutorial_routes``).
    fixed_version: str | None = None
    cache_ttl: int | None = None
    in_parallel = False

    @extend_schema(
        request=PredictRequestSerializer,
        responses={
            200: PredictionSerializer,
            404: OpenApiResponse(ErrorSerializer, "Unknown model or version."),
            409: OpenApiResponse(ErrorSerializer, "The Idempotency-Key's first request runs."),
            422: OpenApiResponse(ErrorSerializer, "The Idempotency-Key came with another body."),
            504: OpenApiResponse(ErrorSerializer, "Inference took longer than the timeout."),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Replays the first answer for 24 h; another body with it is a 422.",
            )
        ],
    )
    def post(self, request):
        serializer = PredictRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        api_key = request.auth if isinstance(request.auth, ApiKey) else None

        def predict() -> tuple[int, dict]:
            arguments = {
                "user": request.user,
                "api_key": api_key,
                "input_data": data["input_data"],
                "model_name": data.get("model"),
                "version_label": None if self.split_only else data.get("model_version"),
                "timeout": data.get("timeout"),
                "request_id": request.request_id,
            }
            if self.fixed_version is not None:
                arguments["version_label"] = self.fixed_version
            if self.cache_ttl is not None:
                arguments["cache_ttl"] = self.cache_ttl
            if not self.in_parallel:
                return 200, prediction_payload(prediction_create(**arguments))
            prediction, answers = prediction_create_in_parallel(**arguments)
            return 200, prediction_payload(prediction) | {"parallel_predictions": answers}

        key = request.headers.get("Idempotency-Key")
        if key is None:
            return Response(predict()[1])
        status_code, body, replayed = idempotent(
            principal=principal_id(request.user, api_key),
            endpoint=self.idempotency_endpoint or request.path.strip("/"),
            key=key,
            request_fingerprint=fingerprint(request.data),
            run=predict,
        )
        response = Response(body, status=status_code)
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class AbTestPredictView(PredictView):
    """The tutorial's A/B endpoint: like /predict, always routed by the traffic split."""

    split_only = True
    idempotency_endpoint = "predict/ab-test"


def _alias(name: str, doc: str, **attributes) -> type[PredictView]:
    # Idempotency keys are scoped to the route's own path (``idempotency_endpoint`` None).
    attributes |= {"__doc__": doc, "idempotency_endpoint": None}
    return type(name, (PredictView,), attributes)


_CACHED = _alias(
    "PredictCachedView",
    "``/predict`` answered from the response cache: for the model's time to live, or "
    "CACHED_ROUTE_TTL seconds when it has none.",
    cache_ttl=CACHED_ROUTE_TTL,
)

# The tutorial's demonstration routes: each is ``/predict`` with one thing fixed (and so are
# their schema, rate limits and log lines).
tutorial_routes: dict[str, type[PredictView]] = {
    "predict/v1": _alias("PredictV1View", "``/predict`` served by version v1.", fixed_version="v1"),
    "predict/v2": _alias("PredictV2View", "``/predict`` served by version v2.", fixed_version="v2"),
    "predict/secure": _alias(
        "PredictSecureView",
        "``/predict`` for a JWT bearer token only.",
        authentication_classes=[BearerJWTAuthentication],
    ),
    "predict/api-key": _alias(
        "PredictApiKeyView",
        "``/predict`` for an API key only.",
        authentication_classes=[ApiKeyAuthentication],
    ),
    "predict/cached": _CACHED,
    "predict/lru-cached": _CACHED,
    "predict/async": _alias(
        "PredictAsyncView",
        "``/predict``, with the row also answered by every serving version of the model at once "
        "(``parallel_predictions``; only the routed answer is stored).",
        in_parallel=True,
    ),
    "predict/logged": _alias("PredictLoggedView", "``/predict`` (every request is logged)."),
}


class PredictionDetailView(APIView):
    """One stored prediction of yours."""

    permission_classes = [scope_required("read")]

    @extend_schema(responses=PredictionSerializer)
    def get(self, request, pk):
        return Response(prediction_payload(prediction_get(user=request.user, prediction_id=pk)))


class FeedbackView(APIView):
    """Send the actual label (classifiers) or value (regressors) for one of your predictions."""

    permission_classes = [scope_required("predict")]

    @extend_schema(request=FeedbackRequestSerializer, responses={201: FeedbackSerializer})
    def post(self, request, pk):
        serializer = FeedbackRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback = feedback_submit(
            user=request.user, prediction_id=pk, actual=serializer.validated_data["actual"]
        )
        return Response(FeedbackSerializer(feedback).data, status=201)


class PredictionListView(APIView):
    """Your stored predictions, newest first, filtered and paginated."""

    permission_classes = [scope_required("read")]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS  # documents the paginated list

    @extend_schema(
        parameters=[
            PredictionFilterSerializer,
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses=PredictionSerializer(many=True),
    )
    def get(self, request):
        filters = PredictionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = predictions_filter(predictions_for(request.user), **filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([prediction_payload(p) for p in page])


def _models():
    versions = ModelVersion.objects.select_related("model")
    return MLModel.objects.prefetch_related(Prefetch("versions", queryset=versions))


def _model_body(name: str) -> dict:
    model = _models().get(name=name)
    context = {"live_metrics": live_metrics(v.id for v in model.versions.all())}
    return MLModelSerializer(model, context=context).data


MODELS_SCOPE = scope_required("models")
_REGISTRATION_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Bad input, or a file that does not fit the model."),
    403: OpenApiResponse(ErrorSerializer, "The credential lacks the 'models' scope."),
    409: OpenApiResponse(ErrorSerializer, "The name or label is taken, or another task."),
}


class ModelListView(APIView):
    """Registered models with their versions, input schema, labels and traffic weights."""

    parser_classes = [ORJSONParser]

    def get_permissions(self):
        return [MODELS_SCOPE() if self.request.method == "POST" else IsAuthenticated()]

    @extend_schema(responses=MLModelSerializer(many=True))
    def get(self, request):
        models = list(_models())
        context = {"live_metrics": live_metrics(v.id for m in models for v in m.versions.all())}
        return Response(MLModelSerializer(models, many=True, context=context).data)

    @extend_schema(
        request=ModelCreateSerializer,
        responses={201: MLModelSerializer, **_REGISTRATION_ERRORS},
    )
    def post(self, request):
        """Create a model (scope ``models``, or staff); its first version's file completes it."""
        serializer = ModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model = model_create(**serializer.validated_data)
        return Response(_model_body(model.name), status=201)


class ModelDetailView(APIView):
    """One registered model."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=MLModelSerializer)
    def get(self, request, name: str):
        model = _models().filter(name=name).first()
        if model is None:
            raise NotFound(f"Unknown model {name!r}.", code="model_not_found")
        context = {"live_metrics": live_metrics(v.id for v in model.versions.all())}
        return Response(MLModelSerializer(model, context=context).data)


class ModelVersionCreateView(APIView):
    """Register a new version of a model from an artifact file (multipart), whose signature is
    read from it."""

    parser_classes = [MultiPartParser]

    def get_permissions(self):
        # Only POST is offered: other methods answer 405 to any signed-in caller.
        return [MODELS_SCOPE() if self.request.method == "POST" else IsAuthenticated()]

    @extend_schema(
        request={"multipart/form-data": VersionUploadSerializer},
        responses={
            201: MLModelSerializer,
            404: OpenApiResponse(ErrorSerializer, "Unknown model."),
            413: OpenApiResponse(ErrorSerializer, "The file is larger than MAX_ARTIFACT_BYTES."),
            **_REGISTRATION_ERRORS,
        },
    )
    def post(self, request, name: str):
        serializer = VersionUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data["artifact"]
        registered = model_register(
            name=name,
            artifact=upload,
            artifact_name=upload.name or "",
            label=data.get("label"),
            runtime=data.get("runtime"),
            task=data.get("task"),
            description=data["description"],
            feature_names=data.get("feature_names"),
            labels=data.get("labels"),
            status=data["status"],
            traffic_weight=data["traffic_weight"],
            make_default=data["default"],
            create_model=False,
        )
        return Response(_model_body(registered.model.name), status=201)


class RemoteVersionCreateView(APIView):
    """Register a new version of a model served by an Open Inference Protocol (V2) server:
    Triton, KServe, MLServer. Its signature is read from that server."""

    def get_permissions(self):
        return [MODELS_SCOPE() if self.request.method == "POST" else IsAuthenticated()]

    @extend_schema(
        request=RemoteVersionSerializer,
        responses={
            201: MLModelSerializer,
            404: OpenApiResponse(ErrorSerializer, "Unknown model."),
            502: OpenApiResponse(ErrorSerializer, "The V2 server failed to answer."),
            504: OpenApiResponse(ErrorSerializer, "The V2 server did not answer in time."),
            **_REGISTRATION_ERRORS,
        },
    )
    def post(self, request, name: str):
        serializer = RemoteVersionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        registered = remote_version_register(
            name=name,
            upstream=Upstream(
                url=data["remote_url"],
                model=data["remote_model"],
                version=data["remote_model_version"],
                timeout=data["remote_timeout"],
                credential=data["remote_credential"],
                credential_header=data["remote_credential_header"],
                output=data["remote_output"],
            ),
            label=data.get("label"),
            description=data["description"],
            status=data["status"],
            traffic_weight=data["traffic_weight"],
            make_default=data["default"],
            max_batch_size=data.get("max_batch_size"),
            batch_wait_ms=data.get("batch_wait_ms"),
            feature_names=data.get("feature_names"),
            labels=data.get("labels"),
        )
        return Response(_model_body(registered.model.name), status=201)
