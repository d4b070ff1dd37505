"""Request and response shapes of the prediction API, shared by its faces (REST, streams,
GraphQL)."""

from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from mlplatform.conf import platform_setting
from predictions.models import Feedback, MLModel, ModelVersion, Prediction
from predictions.runtime.tables import FORMATS

# What the input parsers accept, so that a client (or a fuzzer) reading the schema knows it.
ROW_SCHEMA = {
    "oneOf": [
        {"type": "array", "items": {"type": "number"}, "minItems": 1},
        {"type": "object", "additionalProperties": {"type": "number"}, "minProperties": 1},
    ],
    "example": [5.1, 3.5, 1.4, 0.2],
}


@extend_schema_field(ROW_SCHEMA)
class RowField(serializers.JSONField):
    """One row of features: numbers in feature order, or an object by feature name."""


@extend_schema_field(
    {"type": "array", "items": ROW_SCHEMA, "minItems": 1, "example": [[5.1, 3.5, 1.4, 0.2]]}
)
class RowsField(serializers.JSONField):
    """Rows of features, each as ``RowField`` takes it."""


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}], "example": "setosa"})
class ActualField(serializers.JSONField):
    """A class label (classifiers) or a number (regressors)."""


class NullMeansAbsent:
    """A serializer mixin: an optional field sent as ``null`` is taken as absent (its default
    applies), as clients built on pydantic models send every field they do not set."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            fields = self.fields
            data = {
                name: value
                for name, value in data.items()
                if value is not None or name not in fields or fields[name].required
            }
        return super().to_internal_value(data)


# Swagger UI's "Try it out" and the browsable API's form start from this body.
@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "one iris row",
            value={"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris"},
            request_only=True,
        )
    ]
)
class PredictRequestSerializer(NullMeansAbsent, serializers.Serializer):
    input_data = RowField(
        help_text="One row: a list of numbers in feature order, or an object by feature name."
    )
    model = serializers.CharField(
        required=False, allow_null=True, help_text="Model name; default: the platform's."
    )
    model_version = serializers.CharField(
        required=False,
        allow_null=True,
        help_text='A version label, "latest", or absent for the model\'s traffic split.',
    )
    timeout = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0.000001,
        help_text="Seconds inference may take (504 beyond).",
    )

    def validate_timeout(self, value: float) -> float:
        limit = platform_setting("MAX_TIMEOUT")
        if value > limit:
            raise serializers.ValidationError(f"Ensure this value is at most {limit:g} seconds.")
        return value


def prediction_payload(prediction: Prediction) -> dict:
    """The JSON of a stored prediction (hand-built: this is on every predict response)."""
    model_name = getattr(prediction, "model_name", None)
    version_label = getattr(prediction, "version_label", None)
    if model_name is None:
        model_name = prediction.model_version.model.name
        version_label = prediction.model_version.label
    return {
        "prediction_id": str(prediction.id),
        "model": model_name,
        "model_version": version_label,
        "prediction": prediction.output,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "processing_time": prediction.processing_time,
        "timestamp": prediction.created_at,
        "cached": prediction.cached,
        "routing": prediction.routing,
        "input_data": prediction.input,
        "request_id": prediction.request_id,
    }


class PredictionSerializer(serializers.Serializer):
    """Documents ``prediction_payload``."""

    prediction_id = serializers.UUIDField()
    model = serializers.CharField()
    model_version = serializers.CharField()
    prediction = serializers.ListField(child=serializers.FloatField())
    label = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)
    processing_time = serializers.FloatField(help_text="Seconds spent on inference.")
    timestamp = serializers.DateTimeField()
    cached = serializers.BooleanField(help_text="Answered from the model's response cache.")
    routing = serializers.ChoiceField(
        choices=["explicit", "latest", "split", "default"],
        help_text="Why this version served: named, newest, the traffic split, or the default.",
    )
    input_data = serializers.JSONField()
    request_id = serializers.CharField()


class PredictionFilterSerializer(serializers.Serializer):
    model = serializers.CharField(required=False)
    version = serializers.CharField(required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


_NO_FEEDBACK = {"feedback_count": 0, "accuracy": None, "mean_absolute_error": None}


class LiveMetricsSerializer(serializers.Serializer):
    feedback_count = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    mean_absolute_error = serializers.FloatField(allow_null=True)


class RemoteUpstreamSerializer(serializers.Serializer):
    url = serializers.CharField()
    model = serializers.CharField()
    version = serializers.CharField()
    timeout = serializers.FloatField()
    output = serializers.CharField()
    credential_set = serializers.BooleanField(
        help_text="Whether a credential is sent (never shown)."
    )


class ModelVersionSerializer(serializers.ModelSerializer):
    is_default = serializers.SerializerMethodField()
    remote = serializers.SerializerMethodField(
        help_text="Runtime remote: the V2 server that answers for the version; else null."
    )
    live_metrics = serializers.SerializerMethodField(
        help_text="From feedback: accuracy (classifiers) or mean absolute error (regressors)."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "label",
            "description",
            "runtime",
            "status",
            "traffic_weight",
            "is_shadow",
            "shadow_share",
            "max_batch_size",
            "batch_wait_ms",
            "checksum",
            "metrics",
            "created_at",
            "is_default",
            "live_metrics",
            "remote",
        ]

    def get_is_default(self, version: ModelVersion) -> bool:
        return version.id == version.model.default_version_id

    @extend_schema_field(RemoteUpstreamSerializer(allow_null=True))
    def get_remote(self, version: ModelVersion) -> dict | None:
        if version.runtime != ModelVersion.Runtime.REMOTE:
            return None
        return {
            "url": version.remote_url,
            "model": version.remote_model,
            "version": version.remote_model_version,
            "timeout": version.remote_timeout,
            "output": (version.remote_signature or {}).get("output", ""),
            "credential_set": bool(version.remote_credential),
        }

    @extend_schema_field(LiveMetricsSerializer)
    def get_live_metrics(self, version: ModelVersion) -> dict:
        return self.context.get("live_metrics", {}).get(version.id, _NO_FEEDBACK)


class MLModelSerializer(serializers.ModelSerializer):
    n_features = serializers.IntegerField(read_only=True)
    default_version = serializers.SlugRelatedField(slug_field="label", read_only=True)
    latest_version = serializers.SerializerMethodField()
    versions = ModelVersionSerializer(many=True, read_only=True)
    input_schema = serializers.SerializerMethodField()

    class Meta:
        model = MLModel
        fields = [
            "name",
            "description",
            "task",
            "n_features",
            "feature_names",
            "labels",
            "input_schema",
            "default_version",
            "latest_version",
            "cache_ttl",
            "versions",
        ]

    def get_latest_version(self, model: MLModel) -> str | None:
        active = [v for v in model.versions.all() if v.status == ModelVersion.Status.ACTIVE]
        latest = max(active, key=lambda v: (v.created_at, v.id), default=None)
        return latest.label if latest else None

    def get_input_schema(self, model: MLModel) -> dict:
        """A JSON Schema of ``input_data`` for this model."""
        n = model.n_features
        return {
            "type": "array",
            "items": {"type": "number"},
            "minItems": n,
            "maxItems": n,
            "description": f"{n} finite numbers in the order of feature_names.",
        }


class FeedbackRequestSerializer(serializers.Serializer):
    actual = ActualField(help_text="The true class label (classifiers) or value (regressors).")


class FeedbackSerializer(serializers.ModelSerializer):
    prediction_id = serializers.UUIDField(source="prediction.id")
    predicted_label = serializers.CharField(source="prediction.label", allow_null=True)

    class Meta:
        model = Feedback
        fields = [
            "prediction_id",
            "predicted_label",
            "actual_label",
            "actual_value",
            "correct",
            "absolute_error",
            "created_at",
            "updated_at",
        ]


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


class ModelCreateSerializer(serializers.Serializer):
    """A new model; what is not given here comes from its first version's file."""

    name = serializers.SlugField(max_length=100)
    task = serializers.ChoiceField(choices=MLModel.Task.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    feature_names = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_empty=False,
        help_text="Input feature names in row order (default: the first file's, or x0..xN-1).",
    )
    labels = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_empty=False,
        help_text="Class names in output order (classifiers; default: the first file's).",
    )


class VersionUploadSerializer(serializers.Serializer):
    """A new version from an artifact file: an ONNX graph or an .npz dense network."""

    artifact = serializers.FileField(
        help_text="An .onnx graph (one float input [batch, n_features]) or an .npz dense network. "
        "Files are never unpickled."
    )
    label = serializers.SlugField(
        max_length=50, required=False, help_text="Default: the first free v1, v2, ..."
    )
    status = serializers.ChoiceField(
        choices=ModelVersion.Status.choices, default=ModelVersion.Status.STAGED
    )
    traffic_weight = serializers.FloatField(min_value=0, max_value=1_000_000, default=0.0)
    default = serializers.BooleanField(
        default=False, help_text="Make it the model's default version (needs status active)."
    )
    labels = serializers.CharField(
        required=False,
        help_text="Class names in output order, comma-separated (a model's first classifier "
        "file that names no classes needs them).",
    )
    feature_names = serializers.CharField(
        required=False,
        help_text="Feature names in input order, comma-separated (a model's first file).",
    )
    task = serializers.ChoiceField(
        choices=MLModel.Task.choices,
        required=False,
        help_text="Must be the model's task when it has one.",
    )
    runtime = serializers.ChoiceField(
        choices=[ModelVersion.Runtime.ONNX, ModelVersion.Runtime.NUMPY],
        required=False,
        help_text="Default: from the file name (.onnx, .npz) or its first bytes.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")

    def validate_labels(self, value: str) -> list[str]:
        return _names(value)

    def validate_feature_names(self, value: str) -> list[str]:
        return _names(value)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "two iris rows",
            value={"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
            request_only=True,
            media_type="application/json",
        )
    ]
)
class BatchSubmitSerializer(NullMeansAbsent, serializers.Serializer):
    inputs = RowsField(required=False, help_text="Rows of numbers (JSON body).")
    file = serializers.FileField(
        required=False, help_text="CSV (header optional), NPY float array, or JSONL rows."
    )
    format = serializers.ChoiceField(
        choices=list(FORMATS), required=False, help_text="File format; default: by extension."
    )
    header = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="CSV: whether the first line names the columns; by default it does when "
        "every cell of it is a name, not a number.",
    )
    model = serializers.CharField(required=False, allow_null=True)
    model_version = serializers.CharField(required=False, allow_null=True)
    callback_url = serializers.URLField(
        required=False, allow_blank=True, allow_null=True, max_length=2000
    )

    def validate(self, data):
        if ("inputs" in data) == ("file" in data):
            raise serializers.ValidationError("Send either JSON 'inputs' or a 'file' upload.")
        return data


class RemoteVersionSerializer(serializers.Serializer):
    """A new version served by an Open Inference Protocol (V2) server: Triton, KServe, MLServer."""

    remote_url = serializers.CharField(
        max_length=500, help_text="The server's base URL, e.g. http://triton:8000."
    )
    remote_model = serializers.CharField(max_length=200, help_text="The model's name there.")
    remote_model_version = serializers.CharField(
        max_length=100,
        required=False,
        default="",
        allow_blank=True,
        help_text="The model's version there (default: the server's choice).",
    )
    remote_timeout = serializers.FloatField(
        min_value=0.01,
        max_value=300,
        default=10.0,
        help_text="Seconds one request to the server may take (504 beyond).",
    )
    remote_credential = serializers.CharField(
        max_length=4000,
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        write_only=True,
        help_text="Sent with every request to the server; never shown again.",
    )
    remote_credential_header = serializers.CharField(
        max_length=100,
        required=False,
        default="Authorization",
        help_text="The header the credential goes in (Authorization: as a Bearer token).",
    )
    remote_output = serializers.CharField(
        max_length=200,
        required=False,
        default="",
        allow_blank=True,
        help_text="The output that is the answer (default: from the server's metadata: class "
        "probabilities for a classifier).",
    )
    label = serializers.SlugField(
        max_length=50, required=False, help_text="Default: the first free v1, v2, ..."
    )
    status = serializers.ChoiceField(
        choices=ModelVersion.Status.choices, default=ModelVersion.Status.STAGED
    )
    traffic_weight = serializers.FloatField(min_value=0, max_value=1_000_000, default=0.0)
    default = serializers.BooleanField(
        default=False, help_text="Make it the model's default version (needs status active)."
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    max_batch_size = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    batch_wait_ms = serializers.FloatField(min_value=0, max_value=1000, required=False)
    feature_names = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_empty=False,
        help_text="A model's first version: its feature names in input order, when the server "
        "does not say how many features it takes.",
    )
    labels = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_empty=False,
        help_text="A model's first version: class names in output order (classifiers).",
    )
