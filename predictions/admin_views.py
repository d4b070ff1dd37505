"""Admin pages beyond the model admins: the per-model version comparison, add from file."""

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from mlplatform.errors import PlatformError
from predictions.catalogue.comparison import (
    LATENCY_SAMPLE,
    Comparison,
    Significance,
    VersionRow,
    model_comparison,
)
from predictions.catalogue.registration import model_register
from predictions.models import MLModel, ModelVersion
from predictions.runtime.stats import TTest

SIGNIFICANCE_LEVEL = 0.05
DEFAULT_DAYS = 30
MAX_DAYS = 3650
DAY_CHOICES = (1, 7, 30, 90, 365)
MISSING = "—"


def _names(value: str) -> list[str] | None:
    return [part.strip() for part in value.split(",")] if value.strip() else None


class AddFromFileForm(forms.Form):
    artifact = forms.FileField(help_text="An .onnx graph or an .npz dense network.")
    name = forms.SlugField(max_length=100, help_text="A new model's name, or an existing one's.")
    labels = forms.CharField(
        required=False,
        help_text="Class names in output order, comma-separated (when the file names none).",
    )
    task = forms.ChoiceField(
        required=False,
        choices=[("", "guess from the file"), *MLModel.Task.choices],
        help_text="Classification when the file gives probabilities or labels are given.",
    )
    feature_names = forms.CharField(
        required=False,
        help_text="Comma-separated (default: the file's, or x0..xN-1).",
    )
    label = forms.SlugField(
        max_length=50, required=False, help_text="The version's label (default: v1, v2, ...)."
    )
    status = forms.ChoiceField(
        choices=ModelVersion.Status.choices, initial=ModelVersion.Status.STAGED
    )
    traffic_weight = forms.FloatField(min_value=0, max_value=1_000_000, initial=0)
    default = forms.BooleanField(
        required=False, help_text="Make it the model's default version (needs status active)."
    )


def model_add_from_file_view(model_admin, request):
    """Register a model from an artifact file; the same service as REST and register_model."""
    if not (
        model_admin.has_add_permission(request)
        and request.user.has_perm("predictions.add_modelversion")
    ):
        raise PermissionDenied
    form = AddFromFileForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload = data["artifact"]
        try:
            registered = model_register(
                name=data["name"],
                artifact=upload,
                artifact_name=upload.name or "",
                label=data["label"] or None,
                task=data["task"] or None,
                feature_names=_names(data["feature_names"]),
                labels=_names(data["labels"]),
                status=data["status"],
                traffic_weight=data["traffic_weight"],
                make_default=data["default"],
            )
        except PlatformError as exc:
            form.add_error(None, exc.detail)
        else:
            model, version = registered.model, registered.version
            what = "Created model" if registered.model_created else "Added to model"
            model_admin.message_user(
                request,
                f"{what} {model.name!r}: version {version.label} ({version.runtime}, "
                f"{model.n_features} features, {model.task}).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                reverse("admin:predictions_mlmodel_change", args=[model.pk])
            )
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Add model from file",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "form": form,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/predictions/mlmodel/add_from_file.html", context)


def model_comparison_view(model_admin, request, object_id):
    """Versions of one model side by side, with a verdict on the top two in plain words."""
    model = model_admin.get_object(request, unquote(object_id))
    if model is None:
        raise Http404(f"No model with id {object_id!r}.")
    if not model_admin.has_view_permission(request, model):
        raise PermissionDenied
    days = _days(request.GET.get("days"))
    comparison = model_comparison(model, since=timezone.now() - timedelta(days=days))
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Compare versions of {model.name}",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "original": model,
        "has_view_permission": True,
        "days": days,
        "day_choices": DAY_CHOICES,
        "latency_sample": f"{LATENCY_SAMPLE:,}",
        "comparison": comparison,
        "labels": [row.label for row in comparison.rows],
        "table": _table(comparison),
        "verdict": verdict(comparison.significance),
        "test_details": test_details(comparison.significance),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/predictions/mlmodel/compare.html", context)


def _days(raw: str | None) -> int:
    """The window in days from the query string; anything but a sensible whole number: 30."""
    try:
        days = int(raw or "")
    except ValueError:
        return DEFAULT_DAYS
    return days if 1 <= days <= MAX_DAYS else DEFAULT_DAYS


def verdict(significance: Significance | None) -> str:
    """What the test between the top two versions means, for a staff member deciding on traffic."""
    if significance is None:
        return "Not enough feedback to compare: at least two versions need feedback."
    better, worse = significance.better, significance.worse
    if significance.metric == "accuracy":
        measure = f"{percent(better.live_accuracy)} vs {percent(worse.live_accuracy)}"
        ahead = f"{better.label} is more accurate than {worse.label}"
        level = f"{better.label} and {worse.label} are equally accurate"
    else:
        measure = (
            f"mean absolute error {number(better.mean_absolute_error)} "
            f"vs {number(worse.mean_absolute_error)}"
        )
        ahead = f"{better.label} makes smaller errors than {worse.label}"
        level = f"{better.label} and {worse.label} make errors of the same size"
    figures = f"({measure} on {better.feedback} and {worse.feedback} answers with feedback)"
    if significance.tied:
        return f"{level} {figures}. Collect more feedback before deciding."
    p = p_value(significance.p_value)
    if significance.p_value < SIGNIFICANCE_LEVEL:
        return (
            f"{ahead} {figures}. The difference is statistically significant ({p}): "
            "it is unlikely to be chance."
        )
    return (
        f"{ahead} {figures}. The difference is not statistically significant yet ({p}): "
        "collect more feedback before deciding."
    )


def test_details(significance: Significance | None) -> str:
    """The test behind the verdict, with its statistic, for those who want the numbers."""
    if significance is None:
        return ""
    test = significance.test
    if isinstance(test, TTest):
        statistic = f"Welch's t-test on absolute errors: t = {test.t:.2f}, df = {test.df:.1f}"
    else:
        statistic = f"Two-proportion z-test on answers with feedback: z = {test.z:.2f}"
    level = f"significant when p < {SIGNIFICANCE_LEVEL:g} (the {SIGNIFICANCE_LEVEL:.0%} level)"
    return f"{statistic}, {p_value(test.p_value)}; {level}."


def p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def milliseconds(value: float | None) -> str:
    if value is None:
        return MISSING
    digits = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{digits}f} ms"


def _table(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """One line per measure, one cell per version: the transposed rows, formatted for display."""
    classifier = comparison.model.task == MLModel.Task.CLASSIFICATION

    def line(heading: str, cell) -> tuple[str, list[str]]:
        return heading, [cell(row) for row in comparison.rows]

    def role(row: VersionRow) -> str:
        return f"{row.status}, shadow" if row.is_shadow else row.status

    def agreement(row: VersionRow) -> str:
        if not row.is_shadow and not row.shadow_comparisons:
            return MISSING
        return f"{percent(row.shadow_agreement)} of {row.shadow_comparisons}"

    quality = (
        line("Live accuracy", lambda r: percent(r.live_accuracy))
        if classifier
        else line("Mean absolute error", lambda r: number(r.mean_absolute_error))
    )
    return [
        line("Status", role),
        line("Runtime", lambda r: r.runtime),
        line("Traffic weight", lambda r: f"{r.traffic_weight:g}"),
        line("Configured share", lambda r: percent(r.configured_share)),
        line("Observed share", lambda r: percent(r.observed_share)),
        line("Predictions", lambda r: str(r.predictions)),
        line("Answered from cache", lambda r: str(r.cached)),
        line("Latency p50", lambda r: milliseconds(r.latency_p50_ms)),
        line("Latency p95", lambda r: milliseconds(r.latency_p95_ms)),
        line("Latency mean", lambda r: milliseconds(r.latency_mean_ms)),
        line("Answers with feedback", lambda r: str(r.feedback)),
        quality,
        line("Shadow agreement", agreement),
        line("Hold-out accuracy", lambda r: percent(r.holdout_accuracy)),
    ]
