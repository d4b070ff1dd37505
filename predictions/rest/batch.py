"""Thin views of batch jobs: submit, status, results and downloads, cancel, list."""

import hashlib

from django.http import StreamingHttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication
from accounts.models import ApiKey
from accounts.permissions import any_scope_required, scope_required
from mlplatform.api.parsers import ORJSONParser
from mlplatform.api.renderers import ORJSONRenderer
from mlplatform.api.schema import ErrorSerializer
from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput
from predictions.batch.jobs import batch_job_cancel, batch_job_submit
from predictions.batch.results import (
    DOWNLOADS,
    job_detail,
    job_payload,
    result_rows,
    submitted_rows,
)
from predictions.models import BatchJob
from predictions.pipeline import model_resolve, principal_id
from predictions.selectors import batch_job_get, batch_jobs_for
from predictions.serializers import BatchSubmitSerializer, RowsField
from predictions.services import fingerprint, idempotent

READ = any_scope_required("read", "batch")


# The two bodies of a submission, each documented with its own schema (the view reads both
# with BatchSubmitSerializer), so that a generated client can tell which encoding to send.
class BatchInputsSerializer(BatchSubmitSerializer):
    """A JSON submission: the rows in ``inputs``."""

    inputs = RowsField(help_text="Rows of numbers.")
    file = format = header = None


class BatchUploadSerializer(BatchSubmitSerializer):
    """A multipart submission: the rows in an uploaded ``file``."""

    inputs = None
    file = serializers.FileField(help_text="CSV (header optional), NPY float array, or JSONL rows.")


class BatchAcceptedSerializer(serializers.Serializer):
    job_id = serializers.UUIDField()
    status = serializers.CharField()
    total_inputs = serializers.IntegerField()
    estimated_completion = serializers.DateTimeField()
    model_version = serializers.CharField(help_text="The version resolved at submit.")
    links = serializers.DictField(child=serializers.CharField())


class BatchJobSerializer(serializers.Serializer):
    """Documents ``job_payload``."""

    job_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=BatchJob.Status.choices)
    model = serializers.CharField()
    model_version = serializers.CharField()
    routing = serializers.CharField()
    total_inputs = serializers.IntegerField()
    completed = serializers.IntegerField()
    progress = serializers.FloatField(help_text="completed / total_inputs, 0 to 1.")
    input_format = serializers.CharField()
    error = serializers.CharField(allow_null=True)
    cancel_requested = serializers.BooleanField()
    callback_url = serializers.URLField(allow_null=True)
    webhook = serializers.DictField(
        allow_null=True, help_text="Delivery of the job's webhook: status, event, attempts."
    )
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    processing_seconds = serializers.FloatField(allow_null=True)
    estimated_completion = serializers.DateTimeField(allow_null=True)
    request_id = serializers.CharField()
    links = serializers.DictField(child=serializers.CharField())


class BatchResultRowSerializer(serializers.Serializer):
    input_index = serializers.IntegerField()
    prediction = serializers.ListField(child=serializers.FloatField())
    label = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)


class BatchJobDetailSerializer(BatchJobSerializer):
    """Documents ``job_detail``."""

    results = BatchResultRowSerializer(
        many=True,
        allow_null=True,
        help_text="Once the job has ended: its result rows, at most MAX_PAGE_SIZE (500) of them.",
    )
    results_next = serializers.CharField(
        allow_null=True, help_text="The next page of /results when there are more rows."
    )


class BatchResultsSerializer(serializers.Serializer):
    job_id = serializers.UUIDField()
    status = serializers.CharField()
    count = serializers.IntegerField(help_text="Rows with results so far.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = BatchResultRowSerializer(many=True)


class BatchSubmitView(APIView):
    """Submit rows (JSON ``inputs`` or an uploaded file) for prediction in the background."""

    permission_classes = [scope_required("batch")]
    parser_classes = [ORJSONParser, MultiPartParser]
    ratelimit_group = "batch"

    @extend_schema(
        request={
            "application/json": BatchInputsSerializer,
            "multipart/form-data": BatchUploadSerializer,
        },
        responses={
            202: BatchAcceptedSerializer,
            404: OpenApiResponse(ErrorSerializer, "Unknown model or version."),
            409: OpenApiResponse(ErrorSerializer, "The Idempotency-Key's first request runs."),
            422: OpenApiResponse(ErrorSerializer, "The Idempotency-Key came with another body."),
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request):
        serializer = BatchSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        model = model_resolve(data.get("model"))
        table, input_format, input_name = submitted_rows(
            data, len(model.feature_names), model.feature_names
        )

        def submit() -> tuple[int, dict]:
            job = batch_job_submit(
                user=request.user,
                api_key=api_key,
                table=table,
                input_format=input_format,
                input_name=input_name,
                model_name=model.name,
                version_label=data.get("model_version"),
                callback_url=data.get("callback_url", ""),
                request_id=request.request_id,
            )
            body = job_payload(job)
            keys = ("job_id", "status", "total_inputs", "estimated_completion", "links")
            return 202, {k: body[k] for k in keys} | {"model_version": body["model_version"]}

        key = request.headers.get("Idempotency-Key")
        if key is None:
            status_code, body = submit()
            return Response(body, status=status_code)
        described = {k: v for k, v in data.items() if k not in ("file", "inputs", "header")}
        described["rows_sha256"] = hashlib.sha256(table.rows).hexdigest()
        status_code, body, replayed = idempotent(
            principal=principal_id(request.user, api_key),
            endpoint="predict/batch",
            key=key,
            request_fingerprint=fingerprint(described),
            run=submit,
        )
        response = Response(body, status=status_code)
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class BatchSubmitApiKeyView(BatchSubmitView):
    """The tutorial's ``/predict/batch/api-key``: ``/predict/batch`` for an API key only."""

    authentication_classes = [ApiKeyAuthentication]


class BatchJobDetailView(APIView):
    """A batch job's status, progress and timings, and its results once it has ended."""

    permission_classes = [READ]

    @extend_schema(responses=BatchJobDetailSerializer)
    def get(self, request, pk):
        return Response(job_detail(batch_job_get(user=request.user, job_id=pk)))


class DownloadRenderer(BaseRenderer):
    """Lets ``Accept`` choose a download of results, as ``?format=`` does; the view streams the
    download itself, so this renderer never renders."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise NotImplementedError("a download is streamed by its view")


def _download_renderer(fmt: str, media_type: str) -> type[DownloadRenderer]:
    attributes = {"media_type": media_type, "format": fmt}
    return type(f"{fmt.title()}DownloadRenderer", (DownloadRenderer,), attributes)


_DOWNLOAD_RENDERERS = [_download_renderer(fmt, media) for fmt, (media, _) in DOWNLOADS.items()]


class BatchResultsView(APIView):
    """Result rows, paginated as JSON, or the whole download with ?format=csv|jsonl|npy (or
    ``Accept: text/csv``, ``application/x-ndjson``, ``application/octet-stream``)."""

    permission_classes = [READ]
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, *_DOWNLOAD_RENDERERS]

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
            OpenApiParameter("format", str, enum=["json", *DOWNLOADS]),
        ],
        responses={
            (200, "application/json"): BatchResultsSerializer,
            (200, "text/csv"): str,
            (200, "application/x-ndjson"): str,
            (200, "application/octet-stream"): bytes,
        },
    )
    def get(self, request, pk):
        job = batch_job_get(user=request.user, job_id=pk)
        fmt = request.query_params.get("format") or request.accepted_renderer.format
        if fmt in DOWNLOADS:
            content_type, stream = DOWNLOADS[fmt]
            response = StreamingHttpResponse(stream(job), content_type=content_type)
            response["Content-Disposition"] = f'attachment; filename="{job.pk}.{fmt}"'
            return response
        if fmt not in ("json", "api"):
            raise InvalidInput(f"format: choose json, {', '.join(DOWNLOADS)}.")
        page, size = _page(request)
        start = (page - 1) * size
        stop = min(start + size, job.completed_inputs)
        base = request.build_absolute_uri(request.path)
        return Response(
            {
                "job_id": str(job.pk),
                "status": job.status,
                "count": job.completed_inputs,
                "next": f"{base}?page={page + 1}&page_size={size}"
                if stop < job.completed_inputs
                else None,
                "previous": f"{base}?page={page - 1}&page_size={size}" if page > 1 else None,
                "results": result_rows(job, start, stop) if start < stop else [],
            }
        )

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(getattr(request, "accepted_renderer", None), DownloadRenderer):
            # A download streams itself; anything else asked with a download's Accept (an
            # error, ``?format=json``) is JSON, in the API's one error shape for errors.
            request.accepted_renderer = ORJSONRenderer()
            request.accepted_media_type = ORJSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


def _page(request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", 1))
        size = int(request.query_params.get("page_size", platform_setting("PAGE_SIZE")))
    except ValueError:
        raise InvalidInput("page and page_size must be whole numbers.") from None
    if page < 1 or size < 1:
        raise InvalidInput("page and page_size must be at least 1.")
    return page, min(size, platform_setting("MAX_PAGE_SIZE"))


class BatchCancelView(APIView):
    """Cancel a job; a running one stops at the next chunk boundary."""

    permission_classes = [scope_required("batch")]

    @extend_schema(request=None, responses={202: BatchJobSerializer})
    def post(self, request, pk):
        job = batch_job_cancel(job=batch_job_get(user=request.user, job_id=pk))
        return Response(job_payload(job), status=status.HTTP_202_ACCEPTED)


class JobListView(APIView):
    """Your batch jobs, newest first; filter by ``status`` and ``model``."""

    permission_classes = [READ]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS  # documents the paginated list

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=list(BatchJob.Status.values)),
            OpenApiParameter("model", str),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses=BatchJobSerializer(many=True),
    )
    def get(self, request):
        jobs = batch_jobs_for(request.user)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in BatchJob.Status.values:
                raise InvalidInput(f"status: choose from {', '.join(BatchJob.Status.values)}.")
            jobs = jobs.filter(status=wanted)
        if request.query_params.get("model"):
            jobs = jobs.filter(model_version__model__name=request.query_params["model"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response([job_payload(job) for job in page])
