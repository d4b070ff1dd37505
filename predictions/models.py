"""Registered models, their versions, and stored predictions."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from uuid_utils.compat import uuid7


class MLModel(models.Model):
    """A named model with a fixed input schema and outputs; it has one or more versions."""

    class Task(models.TextChoices):
        CLASSIFICATION = "classification"
        REGRESSION = "regression"

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CLASSIFICATION)
    feature_names = models.JSONField(
        default=list, help_text="Input feature names, in the order a row lists them."
    )
    labels = models.JSONField(
        default=list, blank=True, help_text="Class names in output order (classifiers)."
    )
    default_version = models.ForeignKey(
        "ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Served when a request names no version.",
    )
    cache_ttl = models.PositiveIntegerField(
        default=0, help_text="Seconds a response may be cached (0: never)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


class ModelVersion(models.Model):
    """One trained artifact of a model; its file lives in the storage every host shares."""

    class Status(models.TextChoices):
        STAGED = "staged"
        ACTIVE = "active"
        RETIRED = "retired"

    class Runtime(models.TextChoices):
        NUMPY = "numpy", "numpy (.npz dense network)"
        ENSEMBLE = "ensemble", "ensemble (weighted average of other versions)"
        ONNX = "onnx", "onnx (.onnx graph run by onnxruntime)"
        REMOTE = "remote", "remote (a V2 inference server: Triton, KServe, MLServer)"

    model = models.ForeignKey(MLModel, on_delete=models.CASCADE, related_name="versions")
    label = models.SlugField(max_length=50)
    description = models.TextField(blank=True)
    runtime = models.CharField(max_length=20, choices=Runtime.choices, default=Runtime.NUMPY)
    artifact = models.FileField(
        max_length=255,
        editable=False,
        blank=True,
        help_text="The artifact's file in the storage, named by its SHA-256.",
    )
    artifact_name = models.CharField(max_length=255, blank=True)
    checksum = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STAGED)
    traffic_weight = models.FloatField(
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(1_000_000)],
        help_text="Relative share of the model's traffic when no version is named.",
    )
    is_shadow = models.BooleanField(
        default=False, help_text="Receives a copy of live traffic; its answers are never returned."
    )
    shadow_share = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of the model's live requests copied to this shadow version (0 to 1).",
    )
    max_batch_size = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Most rows one call of the model answers: requests that queue while it is "
        "busy are answered together, up to this many rows (1: no batching).",
    )
    batch_wait_ms = models.FloatField(
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(1000)],
        help_text="Milliseconds a batch that is not full may wait for more rows after its "
        "first one (0: never wait; an idle model answers at once).",
    )
    metrics = models.JSONField(default=dict, blank=True, help_text="Metrics from training.")
    # Runtime "remote": the Open Inference Protocol (V2) server that answers for the version.
    remote_url = models.CharField(
        "upstream URL",
        max_length=500,
        blank=True,
        help_text="Base URL of the V2 server, e.g. http://triton:8000 (remote runtime).",
    )
    remote_model = models.CharField(
        "upstream model", max_length=200, blank=True, help_text="The model's name on that server."
    )
    remote_model_version = models.CharField(
        "upstream model version",
        max_length=100,
        blank=True,
        help_text="The model's version there (blank: the server's choice).",
    )
    remote_timeout = models.FloatField(
        "upstream timeout",
        default=10.0,
        validators=[MinValueValidator(0.01), MaxValueValidator(300)],
        help_text="Seconds one request to the server may take (504 beyond).",
    )
    remote_credential = models.CharField(
        max_length=4000,
        blank=True,
        editable=False,
        help_text="Sent to the server; never shown, logged or returned.",
    )
    remote_credential_header = models.CharField(
        "credential header",
        max_length=100,
        blank=True,
        default="Authorization",
        help_text="The header the credential goes in (Authorization: as a Bearer token).",
    )
    remote_signature = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="Input, output and output count read from the server at registration.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model version"
        ordering = ["model__name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["model", "label"], name="unique_version_label")
        ]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.label}"

    @property
    def holdout_accuracy(self) -> float | None:
        return self.metrics.get("holdout_accuracy")


class RegistryRevision(models.Model):
    """One row whose counter goes up on every registry change; processes poll it to reload."""

    revision = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"registry revision {self.revision}"


class Prediction(models.Model):
    """One answered prediction request, stored before the answer is sent."""

    # Time-ordered (UUIDv7): each new row's key lands at the end of the primary key's index,
    # where a random one (v4) would touch a page anywhere in it (3x the insert's cost).
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Looked up through the (owner, -created_at) index below, which serves owner alone too.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="predictions",
        db_index=False,
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="predictions"
    )
    input = models.JSONField()
    output = models.JSONField()
    # NULL, not "", for regressors: the API answers ``"label": null``.
    label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    confidence = models.FloatField(null=True, blank=True)
    processing_time = models.FloatField(help_text="Seconds spent on inference.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    routing = models.CharField(
        max_length=10, blank=True, help_text="How the version was chosen: explicit, latest, split."
    )
    cached = models.BooleanField(default=False, help_text="Answered from the response cache.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return str(self.id)


class ShadowPrediction(models.Model):
    """What a shadow version answered to a copy of a live request; never shown to the caller."""

    # Rows come in bursts, from copies of requests already committed, and cost the database
    # time that the requests themselves wait for (python -m bench traffic). So the
    # link to the primary has no index of its own (the unique constraint's, on primary and
    # model_version, serves lookups by primary) and no constraint in the database, whose
    # check locked each primary row again; deleting a prediction still deletes its shadow
    # rows (Django's CASCADE).
    primary = models.ForeignKey(
        Prediction,
        on_delete=models.CASCADE,
        related_name="shadows",
        db_index=False,
        db_constraint=False,
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="shadow_predictions"
    )
    output = models.JSONField(null=True)
    label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    confidence = models.FloatField(null=True, blank=True)
    processing_time = models.FloatField(null=True)
    agrees = models.BooleanField(
        null=True, help_text="Same label as the primary (classifiers); null when it failed."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["primary", "model_version"], name="one_shadow_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"shadow of {self.primary_id} by {self.model_version_id}"


class Feedback(models.Model):
    """The ground truth for a prediction, sent by its owner."""

    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="feedback")
    actual_label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    actual_value = models.FloatField(null=True, blank=True)
    correct = models.BooleanField(null=True, help_text="Classifiers: the label was right.")
    absolute_error = models.FloatField(null=True, help_text="Regressors: |predicted - actual|.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"feedback on {self.prediction_id}"


class IdempotencyRecord(models.Model):
    """The first answer to a request sent with an ``Idempotency-Key``, replayed for 24 hours."""

    principal = models.CharField(max_length=64, help_text="key:<id> or user:<id>")
    endpoint = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["principal", "endpoint", "key"], name="one_answer_per_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.principal} {self.endpoint} {self.key}"


class BatchJob(models.Model):
    """A batch of rows predicted in the background by django-q2 workers, chunk by chunk."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    class InputFormat(models.TextChoices):
        JSON = "json"
        CSV = "csv"
        NPY = "npy"
        JSONL = "jsonl"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batch_jobs"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="batch_jobs"
    )
    routing = models.CharField(max_length=10, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    cancel_requested = models.BooleanField(default=False)
    total_inputs = models.PositiveBigIntegerField()
    completed_inputs = models.PositiveBigIntegerField(default=0)
    chunk_size = models.PositiveIntegerField()
    input_format = models.CharField(max_length=5, choices=InputFormat.choices)
    input_name = models.CharField(max_length=255, blank=True)
    input_file = models.FileField(
        max_length=255, editable=False, help_text="The rows: a float32 .npy file in the storage."
    )
    input_sha256 = models.CharField(max_length=64, editable=False)
    error = models.TextField(blank=True)
    callback_url = models.URLField(max_length=2000, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker picked it up.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class BatchChunk(models.Model):
    """The outputs of one chunk of a job's rows, written once however often it is computed."""

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start = models.PositiveBigIntegerField()
    stop = models.PositiveBigIntegerField()
    outputs_file = models.FileField(
        max_length=255, help_text="float32 .npy array in the storage, one row of outputs per input."
    )
    outputs_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="one_result_per_chunk")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} rows {self.start}-{self.stop}"


class WebhookDelivery(models.Model):
    """One event to POST to a job's callback URL; its id is the ``webhook-id`` header."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="deliveries")
    url = models.URLField(max_length=2000)
    event_type = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.url}"


class WebhookAttempt(models.Model):
    """One try at delivering a webhook, as the receiver answered it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration = models.FloatField(null=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"


class RequestTally(models.Model):
    """A user's API requests in one minute: count, errors and time, summed over processes.

    Each process adds up its requests in memory and writes them every few seconds, so the
    stats and the dashboard read durable totals without a row per request.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="request_tallies"
    )
    minute = models.DateTimeField(db_index=True, help_text="Start of the minute (UTC).")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Answers with status >= 400.")
    duration = models.FloatField(default=0, help_text="Seconds spent answering, summed.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "minute"], name="one_tally_per_minute")
        ]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.minute:%Y-%m-%d %H:%M}"
