"""Selector putting the versions of one model side by side: traffic, latency, quality."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Avg, Count, F, Q, Window
from django.db.models.functions import RowNumber

from predictions.models import MLModel, ModelVersion, Prediction, ShadowPrediction
from predictions.runtime.stats import TTest, ZTest, percentile, two_proportion_z_test, welch_t_test

LATENCY_SAMPLE = 10_000  # latest predictions per version behind the latency figures


@dataclass(frozen=True)
class VersionRow:
    """One version's figures over the comparison window; None where there is nothing to measure."""

    label: str
    status: str
    is_shadow: bool
    runtime: str
    traffic_weight: float
    configured_share: float | None  # of the split among active non-shadow versions
    observed_share: float | None  # of the model's stored predictions in the window
    predictions: int
    cached: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_mean_ms: float | None
    latency_sample: int
    feedback: int
    correct: int
    live_accuracy: float | None  # classifiers
    mean_absolute_error: float | None  # regressors
    absolute_error_variance: float | None  # regressors, sample variance
    shadow_comparisons: int
    shadow_agreement: float | None
    holdout_accuracy: float | None


@dataclass(frozen=True)
class Significance:
    """A test between the two non-shadow versions with the most feedback, the better one first."""

    metric: str  # "accuracy" or "mean_absolute_error"
    better: VersionRow
    worse: VersionRow
    test: ZTest | TTest

    @property
    def p_value(self) -> float:
        return self.test.p_value

    @property
    def tied(self) -> bool:
        return self.test.difference == 0


@dataclass(frozen=True)
class Comparison:
    model: MLModel
    since: datetime | None
    total_predictions: int
    rows: list[VersionRow]
    significance: Significance | None


def model_comparison(model: MLModel, *, since: datetime | None = None) -> Comparison:
    """Every version of ``model`` side by side, over predictions made at or after ``since``."""
    versions = list(
        ModelVersion.objects.filter(model=model)
        .only("id", "label", "status", "is_shadow", "runtime", "traffic_weight", "metrics")
        .order_by("label")
    )
    predictions = Prediction.objects.filter(model_version__model=model)
    shadows = ShadowPrediction.objects.filter(model_version__model=model, agrees__isnull=False)
    if since is not None:
        predictions = predictions.filter(created_at__gte=since)
        shadows = shadows.filter(created_at__gte=since)

    classifier = model.task == MLModel.Task.CLASSIFICATION
    # A feedback counts only when it carries the measure this task is judged by.
    measured = "feedback__correct" if classifier else "feedback__absolute_error"
    error = F("feedback__absolute_error")
    counts = {
        row.pop("model_version"): row
        for row in predictions.order_by()
        .values("model_version")
        .annotate(
            n=Count("pk"),
            cached_n=Count("pk", filter=Q(cached=True)),
            feedback_n=Count(measured),
            correct_n=Count("pk", filter=Q(feedback__correct=True)),
            mae=Avg(error),
            # Mean of squares rather than the database's VARIANCE: SQLite has none built in.
            mean_square_error=Avg(error * error),
        )
    }
    agreement = {
        row.pop("model_version"): row
        for row in shadows.order_by()
        .values("model_version")
        .annotate(n=Count("pk"), agree_n=Count("pk", filter=Q(agrees=True)))
    }
    latencies = _latest_latencies(predictions)

    total = sum(row["n"] for row in counts.values())
    routed = [v for v in versions if v.status == ModelVersion.Status.ACTIVE and not v.is_shadow]
    routed_weight = sum(v.traffic_weight for v in routed)
    rows = []
    for version in versions:
        seen = counts.get(version.pk, {})
        shadow = agreement.get(version.pk, {})
        seconds = latencies.get(version.pk, [])
        feedback = seen.get("feedback_n", 0)
        correct = seen.get("correct_n", 0)
        compared = shadow.get("n", 0)
        mean_seconds = sum(seconds) / len(seconds) if seconds else None
        rows.append(
            VersionRow(
                label=version.label,
                status=version.status,
                is_shadow=version.is_shadow,
                runtime=version.runtime,
                traffic_weight=version.traffic_weight,
                configured_share=(
                    version.traffic_weight / routed_weight
                    if version in routed and routed_weight > 0
                    else None
                ),
                observed_share=seen.get("n", 0) / total if total else None,
                predictions=seen.get("n", 0),
                cached=seen.get("cached_n", 0),
                latency_p50_ms=_ms(percentile(seconds, 50)),
                latency_p95_ms=_ms(percentile(seconds, 95)),
                latency_mean_ms=_ms(mean_seconds),
                latency_sample=len(seconds),
                feedback=feedback,
                correct=correct,
                live_accuracy=correct / feedback if classifier and feedback else None,
                mean_absolute_error=None if classifier else seen.get("mae"),
                absolute_error_variance=None
                if classifier
                else _sample_variance(seen.get("mae"), seen.get("mean_square_error"), feedback),
                shadow_comparisons=compared,
                shadow_agreement=shadow.get("agree_n", 0) / compared if compared else None,
                holdout_accuracy=version.holdout_accuracy,
            )
        )
    return Comparison(
        model=model,
        since=since,
        total_predictions=total,
        rows=rows,
        significance=_significance(rows, classifier=classifier),
    )


def _latest_latencies(predictions) -> dict[int, list[float]]:
    """Processing times of each version's latest predictions, at most LATENCY_SAMPLE each."""
    ranked = (
        predictions.order_by()
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=F("model_version"),
                order_by=[F("created_at").desc(), F("pk").desc()],
            )
        )
        .filter(rank__lte=LATENCY_SAMPLE)
        .values_list("model_version", "processing_time")
    )
    latencies: dict[int, list[float]] = defaultdict(list)
    for version_id, seconds in ranked:
        latencies[version_id].append(seconds)
    return latencies


def _sample_variance(mean: float | None, mean_square: float | None, n: int) -> float | None:
    if mean is None or mean_square is None or n < 2:
        return None
    # Rounding can push E[x^2] - E[x]^2 a hair below zero when every value is the same.
    return max(mean_square - mean * mean, 0.0) * n / (n - 1)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _significance(rows: list[VersionRow], *, classifier: bool) -> Significance | None:
    """Test the two non-shadow versions with the most feedback; None when they cannot be tested."""
    minimum = 1 if classifier else 2  # a variance needs two observations
    candidates = sorted(
        (row for row in rows if not row.is_shadow and row.feedback >= minimum),
        key=lambda row: (-row.feedback, -row.predictions, row.label),
    )
    if len(candidates) < 2:
        return None
    a, b = candidates[:2]
    test = _test(a, b, classifier=classifier)
    # Lower error is better for regressors, so their sign flips.
    if (test.difference < 0) if classifier else (test.difference > 0):
        a, b = b, a
        test = _test(a, b, classifier=classifier)
    metric = "accuracy" if classifier else "mean_absolute_error"
    return Significance(metric=metric, better=a, worse=b, test=test)


def _test(a: VersionRow, b: VersionRow, *, classifier: bool) -> ZTest | TTest:
    if classifier:
        return two_proportion_z_test(a.correct, a.feedback, b.correct, b.feedback)
    return welch_t_test(
        a.mean_absolute_error or 0.0,
        a.absolute_error_variance or 0.0,
        a.feedback,
        b.mean_absolute_error or 0.0,
        b.absolute_error_variance or 0.0,
        b.feedback,
    )
