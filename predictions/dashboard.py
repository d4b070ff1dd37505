"""The admin dashboard: traffic, latency, errors, batch throughput and A/B, as SVG charts.

Everything comes from the database (stored predictions, batch jobs, request tallies), so the
page shows every process and host alike, and survives restarts.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import admin
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.template.response import TemplateResponse
from django.utils import timezone

from mlplatform.charts import Series, bar_chart, line_chart
from predictions.admin_views import verdict
from predictions.catalogue.comparison import model_comparison
from predictions.models import BatchJob, MLModel, Prediction, RequestTally
from predictions.runtime.stats import percentile
from predictions.stats import usage_flush, usage_stats

LATENCY_SAMPLE = 20_000  # latest predictions of the window behind the latency chart


@dataclass(frozen=True)
class Window:
    """How far back the page looks and how wide one point of a chart is."""

    hours: int
    bucket_minutes: int
    label: str

    @property
    def truncate(self):
        return TruncMinute if self.bucket_minutes < 60 else TruncHour

    def buckets(self, now: datetime) -> list[datetime]:
        step = timedelta(minutes=self.bucket_minutes)
        last = self.floor(now)
        count = self.hours * 60 // self.bucket_minutes
        return [last - step * (count - 1 - i) for i in range(count)]

    def floor(self, moment: datetime) -> datetime:
        moment = moment.replace(second=0, microsecond=0)
        minutes = moment.hour * 60 + moment.minute
        floored = minutes - minutes % self.bucket_minutes
        return moment.replace(hour=floored // 60, minute=floored % 60)

    def tick(self, moment: datetime) -> str:
        return moment.strftime("%H:%M" if self.hours <= 24 else "%a %H:%M")


WINDOWS = {
    1: Window(1, 1, "last hour"),
    6: Window(6, 5, "last 6 hours"),
    24: Window(24, 60, "last 24 hours"),
    168: Window(168, 360, "last 7 days"),
}
DEFAULT_HOURS = 24


def _window(raw: str | None) -> Window:
    try:
        return WINDOWS[int(raw or DEFAULT_HOURS)]
    except (KeyError, ValueError):
        return WINDOWS[DEFAULT_HOURS]


def _bucketed(window: Window, rows, value_keys: tuple[str, ...]) -> dict:
    """Sum rows of (moment, *values) into the window's buckets: {bucket: [sums...]}."""
    sums: dict[datetime, list[float]] = defaultdict(lambda: [0.0] * len(value_keys))
    for row in rows:
        bucket = window.floor(row["t"])
        for i, key in enumerate(value_keys):
            sums[bucket][i] += row[key] or 0
    return sums


def traffic_charts(window: Window, since: datetime, buckets: list[datetime]) -> dict:
    """Requests, errors and the error rate per bucket, from the durable request tallies."""
    rows = (
        RequestTally.objects.filter(minute__gte=since)
        .order_by()
        .annotate(t=window.truncate("minute"))
        .values("t")
        .annotate(requests=Sum("requests"), errors=Sum("errors"))
    )
    sums = _bucketed(window, rows, ("requests", "errors"))
    labels = [window.tick(b) for b in buckets]
    requests = [sums[b][0] if b in sums else 0 for b in buckets]
    errors = [sums[b][1] if b in sums else 0 for b in buckets]
    rates = [100 * sums[b][1] / sums[b][0] if b in sums and sums[b][0] else None for b in buckets]
    return {
        "requests": line_chart(
            "chart-requests",
            "API requests",
            labels,
            [Series("requests", requests), Series("errors", errors)],
        ),
        "error_rate": line_chart(
            "chart-error-rate", "Error rate", labels, [Series("errors %", rates)], unit="%"
        ),
    }


def prediction_charts(window: Window, since: datetime, buckets: list[datetime]) -> dict:
    """Predictions per model version, and latency p50/p95, per bucket."""
    rows = (
        Prediction.objects.filter(created_at__gte=since)
        .order_by()
        .annotate(t=window.truncate("created_at"))
        .values("t", "model_version__model__name", "model_version__label")
        .annotate(n=Count("pk"))
    )
    per_version: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        name = f"{row['model_version__model__name']}:{row['model_version__label']}"
        per_version[name][window.floor(row["t"])] += row["n"]
    labels = [window.tick(b) for b in buckets]
    series = [
        Series(name, [counts.get(b, 0) for b in buckets])
        for name, counts in sorted(per_version.items())
    ]
    sample = (
        Prediction.objects.filter(created_at__gte=since, cached=False)
        .order_by("-created_at")
        .values_list("created_at", "processing_time")[:LATENCY_SAMPLE]
    )
    seconds: dict[datetime, list[float]] = defaultdict(list)
    for created_at, processing_time in sample:
        seconds[window.floor(created_at)].append(processing_time)

    def ms(bucket: datetime, q: float) -> float | None:
        value = percentile(seconds[bucket], q) if seconds.get(bucket) else None
        return None if value is None else round(value * 1000, 4)

    return {
        "predictions": line_chart(
            "chart-predictions", "Predictions per model version", labels, series
        ),
        "latency": line_chart(
            "chart-latency",
            "Inference latency",
            labels,
            [
                Series("p50", [ms(b, 50) for b in buckets]),
                Series("p95", [ms(b, 95) for b in buckets]),
            ],
            unit=" ms",
        ),
    }


def batch_chart(window: Window, since: datetime, buckets: list[datetime]) -> dict:
    """Batch rows completed per bucket, and the finished jobs' processing speed."""
    jobs = BatchJob.objects.filter(
        status=BatchJob.Status.COMPLETED, finished_at__gte=since, started_at__isnull=False
    ).values_list("finished_at", "started_at", "total_inputs")
    rows: dict[datetime, float] = defaultdict(float)
    total_rows, total_seconds = 0, 0.0
    for finished_at, started_at, count in jobs.order_by()[:10_000]:
        rows[window.floor(finished_at)] += count
        total_rows += count
        total_seconds += max((finished_at - started_at).total_seconds(), 0.001)
    labels = [window.tick(b) for b in buckets]
    return {
        "batch": line_chart(
            "chart-batch",
            "Batch rows completed",
            labels,
            [Series("rows completed", [rows.get(b, 0) for b in buckets])],
        ),
        "batch_rows_per_second": total_rows / total_seconds if total_seconds else None,
    }


def ab_sections(since: datetime) -> list[dict]:
    """Per model with two versions or more: traffic share and latency of each version."""
    sections = []
    for model in MLModel.objects.all():
        comparison = model_comparison(model, since=since)
        rows = [r for r in comparison.rows if r.status != "retired" or r.predictions]
        if len(rows) < 2:
            continue
        labels = [r.label for r in rows]

        def pct(value: float | None) -> float | None:
            return None if value is None else round(100 * value, 2)

        sections.append(
            {
                "model": model,
                "comparison": comparison,
                "share": bar_chart(
                    f"chart-ab-share-{model.name}",
                    f"{model.name}: traffic share",
                    labels,
                    [
                        Series("configured %", [pct(r.configured_share) for r in rows]),
                        Series("observed %", [pct(r.observed_share) for r in rows]),
                    ],
                    unit="%",
                ),
                "latency": bar_chart(
                    f"chart-ab-latency-{model.name}",
                    f"{model.name}: latency",
                    labels,
                    [
                        Series("p50", [r.latency_p50_ms for r in rows]),
                        Series("p95", [r.latency_p95_ms for r in rows]),
                    ],
                    unit=" ms",
                ),
                "rows": rows,
                "verdict": verdict(comparison.significance),
            }
        )
    return sections


def dashboard_view(request):
    """The dashboard page (staff only: ``admin.site.admin_view`` wraps it)."""
    usage_flush()
    window = _window(request.GET.get("hours"))
    now = timezone.now()
    buckets = window.buckets(now)
    since = buckets[0]
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "window": window,
        "windows": WINDOWS.values(),
        "since": since,
        "stats": usage_stats(user=request.user),
        "charts": {
            **traffic_charts(window, since, buckets),
            **prediction_charts(window, since, buckets),
            **batch_chart(window, since, buckets),
        },
        "ab": ab_sections(since),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
