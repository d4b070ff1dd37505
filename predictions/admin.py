"""Admin: models, versions (artifact upload, activation, weights) and stored predictions."""

from dataclasses import replace

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html

from mlplatform.conf import platform_setting
from mlplatform.errors import PlatformError
from predictions.admin_views import model_add_from_file_view, model_comparison_view
from predictions.batch.jobs import batch_job_cancel, batch_job_retry, job_progress
from predictions.catalogue.artifacts import artifact_staged
from predictions.catalogue.remote import (
    Upstream,
    remote_health,
    remote_upstream_check,
    remote_version_configure,
    remote_version_register,
)
from predictions.catalogue.versions import (
    artifact_validate,
    model_save,
    model_version_create,
    model_version_replace_artifact,
    model_version_save,
    model_version_set_status,
    registry_touch,
)
from predictions.models import BatchJob, MLModel, ModelVersion, Prediction
from predictions.webhooks import admin as webhook_admin  # noqa: F401  (registers its admin)

_REMOTE_SETTINGS = (
    "remote_url",
    "remote_model",
    "remote_model_version",
    "remote_timeout",
    "remote_credential_header",
)


def progress_text(done: int, total: int, rate, end, terminal: bool) -> str:
    """``1,000 / 4,000 rows (25%), 52,000 rows/s, ends about 12:00:05 UTC``, as the script
    writes it too."""
    text = f"{done:,} / {total:,} rows ({done / total if total else 1:.0%})"
    if rate:
        text += f", {rate:,.0f} rows/s"
    if end is not None:
        text += f", {'ended' if terminal else 'ends about'} {end:%H:%M:%S} UTC"
    return text


def _accuracy(version: ModelVersion) -> str:
    value = version.holdout_accuracy
    return "—" if value is None else f"{value:.1%}"


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "label",
        "status",
        "traffic_weight",
        "is_shadow",
        "shadow_share",
        "holdout",
        "runtime",
        "checksum",
    ]
    readonly_fields = ["label", "holdout", "runtime", "checksum"]

    def has_add_permission(self, request, obj=None):
        return False  # a version needs an artifact: add it on the version page

    @admin.display(description="hold-out accuracy")
    def holdout(self, version: ModelVersion) -> str:
        return _accuracy(version)


class MLModelForm(forms.ModelForm):
    class Meta:
        model = MLModel
        fields = [
            "name",
            "description",
            "task",
            "feature_names",
            "labels",
            "default_version",
            "cache_ttl",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = ModelVersion.objects.all()
        self.fields["default_version"].queryset = (
            versions.filter(model=self.instance) if self.instance.pk else versions.none()
        )

    def clean_feature_names(self):
        names = self.cleaned_data["feature_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValidationError('Give a JSON list of feature names, e.g. ["a", "b"].')
        if len(set(names)) != len(names):
            raise ValidationError("Feature names must be unique.")
        if len(names) > (most := platform_setting("MAX_FEATURES")):
            raise ValidationError(
                f"{len(names)} features; at most {most} are allowed (PLATFORM['MAX_FEATURES'])."
            )
        if (
            self.instance.pk
            and names != self.instance.feature_names
            and (self.instance.versions.exists())
        ):
            raise ValidationError("The features of a model with versions cannot change.")
        return names

    def clean_labels(self):
        labels = self.cleaned_data["labels"]
        if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
            raise ValidationError('Give a JSON list of class names, e.g. ["cat", "dog"].')
        return labels


@admin.register(MLModel)
class MLModelAdmin(admin.ModelAdmin):
    form = MLModelForm
    list_display = ["name", "task", "n_features", "default_version", "version_count", "cache_ttl"]
    search_fields = ["name", "description"]
    inlines = [ModelVersionInline]

    @admin.display(description="versions")
    def version_count(self, model: MLModel) -> int:
        return model.versions.count()

    def get_urls(self):
        compare = path(
            "<path:object_id>/compare/",
            self.admin_site.admin_view(self.compare_view),
            name="predictions_mlmodel_compare",
        )
        from_file = path(
            "add-from-file/",
            self.admin_site.admin_view(self.add_from_file_view),
            name="predictions_mlmodel_add_from_file",
        )
        return [compare, from_file, *super().get_urls()]

    def add_from_file_view(self, request):
        """A model and its first version (or a new version) from one artifact file."""
        return model_add_from_file_view(self, request)

    def compare_view(self, request, object_id):
        """Versions side by side: traffic, latency, live accuracy, shadow agreement."""
        return model_comparison_view(self, request, object_id)

    def save_model(self, request, obj, form, change):
        model_save(model=obj)

    def save_related(self, request, form, formsets, change):
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            registry_touch()


class ModelVersionForm(forms.ModelForm):
    artifact_file = forms.FileField(
        required=False,
        help_text="numpy runtime: a .npz dense network (its format: docs/models.md); "
        'ensemble runtime: a JSON file {"members": [{"version": "v1", "weight": 1}, ...]}. '
        "It is validated against the model's features and labels before it is saved. "
        "A remote version has none: fill in its upstream below.",
    )
    credential = forms.CharField(
        required=False,
        strip=False,
        max_length=4000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Remote runtime: sent to the server in the credential header; never shown "
        "again. Leave empty to keep the one stored.",
    )
    clear_credential = forms.BooleanField(
        required=False, help_text="Remote runtime: send no credential from now on."
    )
    remote_output = forms.CharField(
        required=False,
        max_length=200,
        help_text="Remote runtime: the output that is the answer (empty: from the server's "
        "metadata, class probabilities for a classifier).",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "label",
            "description",
            "runtime",
            "status",
            "traffic_weight",
            "is_shadow",
            "shadow_share",
            "max_batch_size",
            "batch_wait_ms",
            *_REMOTE_SETTINGS,
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["remote_timeout"].required = False  # only remote versions need one
        if self.instance.pk and self.instance.runtime == ModelVersion.Runtime.REMOTE:
            self.fields["remote_output"].initial = (self.instance.remote_signature or {}).get(
                "output", ""
            )

    def clean_remote_timeout(self):
        value = self.cleaned_data.get("remote_timeout")
        return self.instance.remote_timeout if value is None else value

    def upstream(self) -> Upstream:
        cleaned = self.cleaned_data
        return Upstream(
            url=cleaned.get("remote_url") or "",
            model=cleaned.get("remote_model") or "",
            version=cleaned.get("remote_model_version") or "",
            timeout=cleaned.get("remote_timeout") or 10.0,
            credential=cleaned.get("credential") or "",
            credential_header=cleaned.get("remote_credential_header") or "Authorization",
            output=cleaned.get("remote_output") or "",
        )

    def upstream_changed(self) -> bool:
        return bool(
            {*_REMOTE_SETTINGS, "remote_output"} & set(self.changed_data)
            or self.cleaned_data.get("credential")
            or self.cleaned_data.get("clear_credential")
        )

    def clean(self):
        cleaned = super().clean()
        runtime = cleaned.get("runtime") or self.instance.runtime
        model = cleaned.get("model") or getattr(self.instance, "model", None)
        upload = cleaned.get("artifact_file")
        if runtime == ModelVersion.Runtime.REMOTE:
            if upload is not None:
                self.add_error("artifact_file", "A remote version has no artifact file.")
            elif model is not None and (not self.instance.pk or self.upstream_changed()):
                upstream = self.upstream()
                if (
                    self.instance.pk
                    and not upstream.credential
                    and not cleaned.get("clear_credential")
                ):
                    upstream = replace(upstream, credential=self.instance.remote_credential)
                try:
                    remote_upstream_check(model=model, upstream=upstream)
                except PlatformError as exc:
                    self.add_error(None, exc.detail)
            return cleaned
        if upload is None:
            if not self.instance.pk:
                self.add_error("artifact_file", "Upload the version's artifact.")
            return cleaned
        if model is None:
            return cleaned
        try:
            with artifact_staged(upload) as staged:
                artifact_validate(model=model, runtime=cleaned.get("runtime"), data=staged.source)
        except PlatformError as exc:
            self.add_error("artifact_file", exc.detail)
        return cleaned


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    form = ModelVersionForm
    list_display = [
        "__str__",
        "status",
        "traffic_weight",
        "is_shadow",
        "max_batch_size",
        "holdout",
        "runtime",
        "upstream",
        "created_at",
    ]
    list_filter = ["model", "status", "runtime", "is_shadow"]
    list_editable = ["traffic_weight"]
    readonly_fields = [
        "checksum",
        "artifact_name",
        "metrics",
        "upstream_health",
        "credential_stored",
        "remote_signature",
        "created_at",
        "updated_at",
    ]
    actions = ["activate", "retire", "make_default"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("model")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "model", "label", "runtime"]
        return self.readonly_fields

    @admin.display(description="hold-out accuracy")
    def holdout(self, version: ModelVersion) -> str:
        return _accuracy(version)

    @admin.display(description="upstream")
    def upstream(self, version: ModelVersion) -> str:
        """A remote version's server: ready or not, asked now (the list's column)."""
        if version.runtime != ModelVersion.Runtime.REMOTE:
            return "—"
        health = remote_health(version)
        if health["status"] == "ok":
            return format_html('<span title="{}">✔ ready</span>', health["upstream"])
        return format_html('<span title="{}">✘ {}</span>', health["upstream"], health["error"])

    @admin.display(description="upstream health")
    def upstream_health(self, version: ModelVersion) -> str:
        if version.runtime != ModelVersion.Runtime.REMOTE:
            return "—"
        health = remote_health(version)
        if health["status"] == "ok":
            return f"ready: {health['upstream']}"
        return f"not ready: {health['error']}"

    @admin.display(description="credential")
    def credential_stored(self, version: ModelVersion) -> str:
        if version.runtime != ModelVersion.Runtime.REMOTE:
            return "—"
        return "stored (never shown)" if version.remote_credential else "none"

    def save_model(self, request, obj, form, change):
        if obj.runtime == ModelVersion.Runtime.REMOTE:
            self._save_remote(obj, form, change)
            return
        upload = form.cleaned_data.get("artifact_file")
        name = getattr(upload, "name", "")
        if not change:
            created = model_version_create(
                model=obj.model,
                label=obj.label,
                artifact=upload,
                runtime=obj.runtime,
                artifact_name=name,
                status=obj.status,
                traffic_weight=obj.traffic_weight,
                description=obj.description,
                max_batch_size=obj.max_batch_size,
                batch_wait_ms=obj.batch_wait_ms,
            )
            obj.pk = created.pk
            return
        model_version_save(version=obj)
        if upload is not None:
            model_version_replace_artifact(version=obj, artifact=upload, artifact_name=name)

    def _save_remote(self, obj, form, change):
        upstream = form.upstream()
        if not change:
            created = remote_version_register(
                name=obj.model.name,
                upstream=upstream,
                label=obj.label,
                description=obj.description,
                status=obj.status,
                traffic_weight=obj.traffic_weight,
                max_batch_size=obj.max_batch_size,
                batch_wait_ms=obj.batch_wait_ms,
            )
            if obj.is_shadow:
                created.version.is_shadow, created.version.shadow_share = True, obj.shadow_share
                model_version_save(version=created.version)
            obj.pk = created.version.pk
            return
        model_version_save(version=obj)
        if form.upstream_changed():
            remote_version_configure(
                version=obj,
                upstream=upstream,
                keep_credential=not form.cleaned_data.get("clear_credential"),
            )

    @admin.action(description="Activate selected versions")
    def activate(self, request, queryset):
        for version in queryset:
            model_version_set_status(version=version, status=ModelVersion.Status.ACTIVE)
        self.message_user(request, f"Activated {queryset.count()} version(s).", messages.SUCCESS)

    @admin.action(description="Retire selected versions")
    def retire(self, request, queryset):
        for version in queryset:
            model_version_set_status(version=version, status=ModelVersion.Status.RETIRED)
        self.message_user(request, f"Retired {queryset.count()} version(s).", messages.SUCCESS)

    @admin.action(description="Make the selected version its model's default")
    def make_default(self, request, queryset):
        for version in queryset:
            model = version.model
            model.default_version = version
            model_save(model=model)
        self.message_user(request, "Default version updated.", messages.SUCCESS)


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "model_version",
        "label",
        "confidence",
        "processing_time",
        "created_at",
    ]
    list_filter = ["model_version__model", "model_version", "created_at", "owner"]
    search_fields = ["id", "request_id", "owner__username"]
    date_hierarchy = "created_at"
    list_select_related = ["owner", "model_version__model"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "model_version",
        "status",
        "progress",
        "total_inputs",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "model_version__model", "input_format", "created_at"]
    search_fields = ["id", "owner__username", "request_id"]
    date_hierarchy = "created_at"
    list_select_related = ["owner", "model_version__model"]
    actions = ["cancel", "retry"]
    # The rows' file is named, not linked: the storage is not served over HTTP.
    exclude = ["input_file"]
    readonly_fields = [f.name for f in BatchJob._meta.fields if f.name != "input_file"]

    class Media:
        js = ["predictions/job_progress.js"]

    def get_readonly_fields(self, request, obj=None):
        return ["progress_bar", *self.readonly_fields]

    def get_urls(self):
        progress = path(
            "<path:object_id>/progress/",
            self.admin_site.admin_view(self.progress_view),
            name="predictions_batchjob_progress",
        )
        return [progress, *super().get_urls()]

    def progress_view(self, request, object_id):
        """The job's progress as JSON, which its page reads while the job runs."""
        job = self.get_object(request, unquote(object_id))
        if job is None or not self.has_view_permission(request, job):
            raise Http404(f"No batch job {object_id!r}.")
        figures = job_progress(job)
        return JsonResponse(figures | {"terminal": job.is_terminal})

    @admin.display(description="progress")
    def progress_bar(self, job: BatchJob) -> str:
        """A bar with rows per second and the expected end, kept current by job_progress.js."""
        figures = job_progress(job)
        rate = figures["rows_per_second"]
        end = figures["estimated_completion"]
        return format_html(
            '<div class="job-progress" data-url="{}" data-terminal="{}">'
            '<progress max="{}" value="{}" style="width: 24em"></progress> '
            '<span class="job-progress-text">{}</span></div>',
            reverse("admin:predictions_batchjob_progress", args=[job.pk]),
            "true" if job.is_terminal else "false",
            job.total_inputs,
            job.completed_inputs,
            progress_text(job.completed_inputs, job.total_inputs, rate, end, job.is_terminal),
        )

    @admin.display(description="progress")
    def progress(self, job: BatchJob) -> str:
        share = job.completed_inputs / job.total_inputs if job.total_inputs else 1
        return f"{job.completed_inputs:,} / {job.total_inputs:,} ({share:.0%})"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request) -> bool:
        """Cancelling and retrying need the change permission, though no field is editable."""
        return request.user.has_perm("predictions.change_batchjob")

    @admin.action(description="Cancel selected jobs", permissions=["operate"])
    def cancel(self, request, queryset):
        for job in queryset.exclude(status__in=BatchJob.TERMINAL):
            batch_job_cancel(job=job)
        self.message_user(request, "Cancel requested.", messages.SUCCESS)

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["operate"])
    def retry(self, request, queryset):
        retried = 0
        for job in queryset.filter(status__in=[BatchJob.Status.FAILED, BatchJob.Status.CANCELLED]):
            batch_job_retry(job=job)
            retried += 1
        self.message_user(request, f"Queued {retried} job(s) again.", messages.SUCCESS)
