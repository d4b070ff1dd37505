"""The platform's own Prometheus metrics, the helpers that record them, and ``/metrics``.

Every web and worker process of a host writes its samples to files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, which ``manage.py serve``
sets up), and ``/metrics`` adds them up, so totals are right whichever web or qcluster process
did the work. Without that directory (``runserver``, tests)
a process reports its own samples.

Gauges that describe shared state (batch jobs by status, the oldest queued job) are read from
the database at scrape time: they are the same whichever process or host answers the scrape.
Label values are bounded sets (registered model and version names, fixed codes), never
anything a client typed.
"""

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import prometheus_client
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django_prometheus.middleware import Metrics as DjangoMetrics
from django_prometheus.middleware import PrometheusAfterMiddleware
from django_prometheus.utils import Time, TimeSince
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlplatform.clients import client_ip, forwarded_by_an_unknown_proxy
from mlplatform.conf import env, platform_setting

logger = logging.getLogger(__name__)

ACCESS_MODES = ("open", "token", "network")


def instrumented() -> bool:
    return bool(platform_setting("INSTRUMENTATION"))


# --- Metrics ----------------------------------------------------------------------------

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

PREDICTIONS = Counter(
    "mlplatform_predictions_total",
    "Predictions answered (outcome=ok) or refused after the version was chosen.",
    ["model", "version", "routing", "cached", "outcome"],
)
INFERENCE_SECONDS = Histogram(
    "mlplatform_inference_seconds",
    "Seconds spent in the model for one prediction (cache hits excluded).",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_BATCH_ROWS = Histogram(
    "mlplatform_inference_batch_rows",
    "Rows answered by one call of a model version: requests micro-batched together.",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536),
)
RESPONSE_CACHE = Counter(
    "mlplatform_response_cache_total",
    "Lookups in the prediction response cache, by result (hit or miss).",
    ["model", "result"],
)
BATCH_JOBS = Counter(
    "mlplatform_batch_jobs_total",
    "Batch jobs reaching a status: queued at submit, then completed, failed or cancelled.",
    ["status"],
)
BATCH_ROWS = Counter(
    "mlplatform_batch_rows_processed_total",
    "Batch rows predicted and stored by workers.",
    ["model", "version"],
)
BATCH_CHUNK_SECONDS = Histogram(
    "mlplatform_batch_chunk_seconds",
    "Seconds to predict and store one chunk of a batch job.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
SHADOW_COPIES = Counter(
    "mlplatform_shadow_copies_total",
    "Copies of live requests for shadow versions: answered, failed (stored with the error), or"
    " dropped because the process's queue of copies was full.",
    ["model", "version", "result"],
)
WEBHOOK_DELIVERIES = Counter(
    "mlplatform_webhook_deliveries_total",
    "Webhook delivery attempts by result: delivered, retrying (will try again) or failed.",
    ["result"],
)
LEAN_REQUESTS = Counter(
    "mlplatform_lean_requests_total",
    "Requests to an endpoint with a lean handler: served by it (served), or handed to the"
    " endpoint's DRF view (handed_over) because they were not its plain case.",
    ["view", "result"],
)
RATE_LIMITED = Counter(
    "mlplatform_rate_limited_total",
    "Requests refused with 429 by a rate limit, by limit group.",
    ["group"],
)
AUTH_FAILURES = Counter(
    "mlplatform_auth_failures_total",
    "Requests refused for missing or bad credentials, by reason (the error code).",
    ["reason"],
)
MODEL_LOAD_SECONDS = Histogram(
    "mlplatform_model_load_seconds",
    "Seconds to load a model version's artifact into a process.",
    ["model", "version"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0),
)


_children: dict[tuple, object] = {}


def _child(metric, *values: str):
    """``metric.labels(*values)``, remembered.

    ``labels()`` takes the metric's lock and checks the label names on every call; a child
    never changes once made and label values are bounded sets, so each is looked up once.
    """
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


class RequestMetricsMiddleware(PrometheusAfterMiddleware):
    """django-prometheus's request metrics, with the updates that only repeat others left out.

    In multiprocess mode every sample update takes one lock shared by all threads of the
    process and writes to a memory-mapped file; django-prometheus's two middlewares make about
    17 updates per request. This one keeps the ones that carry information of their own,
    under django-prometheus's names: requests by view, transport and method; responses by
    status, view and method; latency by view and method; exceptions by type and view (its
    ``process_exception``). Left out: totals before the middlewares, by method, by transport,
    by status alone and by charset, and body sizes. The lean handlers record the same
    (``request_observed``).
    """

    def process_request(self, request):
        request.prometheus_after_middleware_event = Time()

    def process_view(self, request, view_func, *view_args, **view_kwargs):
        transport = "https" if request.is_secure() else "http"
        _child(
            self.metrics.requests_by_view_transport_method,
            self._get_view_name(request),
            transport,
            self._method(request),
        ).inc()

    def process_template_response(self, request, response):
        return response

    def process_response(self, request, response):
        method, name = self._method(request), self._get_view_name(request)
        _child(
            self.metrics.responses_by_status_view_method, str(response.status_code), name, method
        ).inc()
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is not None:
            _child(self.metrics.requests_latency_by_view_method, name, method).observe(
                TimeSince(started)
            )
        return response


def request_observed(*, view: str, method: str, secure: bool, status: int, seconds: float) -> None:
    """What ``RequestMetricsMiddleware`` records of a request, for one served without it."""
    if not instrumented():
        return
    django_metrics = DjangoMetrics.get_instance()
    transport = "https" if secure else "http"
    _child(django_metrics.requests_by_view_transport_method, view, transport, method).inc()
    _child(django_metrics.responses_by_status_view_method, str(status), view, method).inc()
    _child(django_metrics.requests_latency_by_view_method, view, method).observe(seconds)


def prediction_observed(
    *, model: str, version: str, routing: str, cached: bool, seconds: float
) -> None:
    """A prediction answered: count it, and time the model when it ran."""
    if not instrumented():
        return
    _child(PREDICTIONS, model, version, routing, "true" if cached else "false", "ok").inc()
    if not cached:
        _child(INFERENCE_SECONDS, model, version).observe(seconds)


def prediction_refused(*, model: str, version: str, routing: str, code: str) -> None:
    """A prediction refused once its version was chosen (bad input, timeout, overflow)."""
    if instrumented():
        PREDICTIONS.labels(model, version, routing, "false", code).inc()


def inference_batch(*, model: str, version: str, rows: int) -> None:
    """One call of a model answered ``rows`` rows (of one request or of several batched)."""
    if instrumented():
        _child(INFERENCE_BATCH_ROWS, model, version).observe(rows)


def response_cache_lookup(*, model: str, hit: bool) -> None:
    if instrumented():
        _child(RESPONSE_CACHE, model, "hit" if hit else "miss").inc()


def batch_job_status(status: str) -> None:
    if instrumented():
        BATCH_JOBS.labels(status).inc()


def batch_chunk_stored(*, model: str, version: str, rows: int, seconds: float) -> None:
    if instrumented():
        BATCH_ROWS.labels(model, version).inc(rows)
        BATCH_CHUNK_SECONDS.observe(seconds)


def shadow_copies(*, model: str, version: str, result: str, count: int = 1) -> None:
    """Copies for a shadow version: ``answered``, ``failed`` (error stored) or ``dropped``."""
    if instrumented():
        _child(SHADOW_COPIES, model, version, result).inc(count)


def webhook_attempted(status: str) -> None:
    """One attempt ended, leaving its delivery ``delivered``, ``pending`` or ``failed``."""
    if instrumented():
        WEBHOOK_DELIVERIES.labels("retrying" if status == "pending" else status).inc()


def lean_request(*, view: str, served: bool) -> None:
    if instrumented():
        _child(LEAN_REQUESTS, view, "served" if served else "handed_over").inc()


def rate_limited(group: str) -> None:
    if instrumented():
        RATE_LIMITED.labels(group or "unknown").inc()


def auth_failed(reason: str) -> None:
    if instrumented():
        AUTH_FAILURES.labels(reason or "unknown").inc()


def model_loaded(*, model: str, version: str, seconds: float) -> None:
    if instrumented():
        MODEL_LOAD_SECONDS.labels(model, version).observe(seconds)


# --- Collectors read at scrape time -----------------------------------------------------


# Apps' collectors, each read at every scrape (``scrape_collector``).
SCRAPE_COLLECTORS: list = []


def scrape_collector(collector) -> None:
    """Add an object whose ``collect()`` yields metric families, read at every scrape."""
    SCRAPE_COLLECTORS.append(collector)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _process_role(pid: int) -> str:
    """``web`` for uvicorn's processes (itself, or the workers its supervisor starts),
    ``worker`` for django-q2's, else ``other``."""
    cmdline = _command_line(pid)
    if b"qcluster" in cmdline:
        return "worker"
    if b"uvicorn" in cmdline:
        return "web"
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return "other"
    return "web" if b"uvicorn" in _command_line(parent) else "other"


def _process_sample(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and resident bytes of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return cpu, int(statm.split()[1]) * _PAGE_SIZE


def _metric_pids(directory: str | None) -> list[int]:
    """The processes that wrote samples to the multiprocess directory (else this one)."""
    if not directory:
        return [os.getpid()]
    pids = set()
    for path in Path(directory).glob("*.db"):
        tail = path.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    pids.add(os.getpid())
    return sorted(pids)


class ProcessCollector:
    """CPU and memory of every live process of this host that records metrics."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    def collect(self) -> Iterator:
        cpu = CounterMetricFamily(
            "mlplatform_process_cpu_seconds",
            "CPU seconds (user + system) used by a web or worker process.",
            labels=["pid", "role"],
        )
        memory = GaugeMetricFamily(
            "mlplatform_process_resident_memory_bytes",
            "Resident memory of a web or worker process.",
            labels=["pid", "role"],
        )
        for pid in _metric_pids(self.directory):
            sample = _process_sample(pid)
            if sample is None:
                continue
            labels = [str(pid), _process_role(pid)]
            cpu.add_metric(labels, sample[0])
            memory.add_metric(labels, sample[1])
        yield cpu
        yield memory


class _Registry:
    """What one scrape reports: recorded samples plus the collectors read at scrape time."""

    def __init__(self, parts: Iterable) -> None:
        self.parts = list(parts)

    def collect(self) -> Iterator:
        for part in self.parts:
            yield from part.collect()


def scrape_registry() -> _Registry:
    directory = env("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        recorded = CollectorRegistry()
        multiprocess.MultiProcessCollector(recorded, path=directory)
    else:
        recorded = prometheus_client.REGISTRY
    return _Registry([recorded, *SCRAPE_COLLECTORS, ProcessCollector(directory)])


# --- /metrics ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in spec)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PLATFORM['METRICS_ALLOWED_NETWORKS']: {exc}") from exc


def metrics_access_denied(request) -> HttpResponse | None:
    """The answer refusing this scrape, or None when the configured access allows it.

    ``network``: the client's address (through trusted proxies, ``mlplatform.clients``) must be
    in ``METRICS_ALLOWED_NETWORKS``; a request forwarded by a proxy that is not trusted is
    refused, as its peer address is the proxy's.
    """
    mode = platform_setting("METRICS_ACCESS")
    if mode == "open":
        return None
    if mode == "token":
        token = str(platform_setting("METRICS_TOKEN"))
        sent = request.headers.get("Authorization", "")
        if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return None
        response = HttpResponse("Metrics need a bearer token.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if mode == "network":
        if forwarded_by_an_unknown_proxy(request):
            # A reverse proxy on this host would make every client look local.
            return HttpResponse(
                "Metrics are not served through a proxy the platform does not trust "
                "(TRUSTED_PROXY_COUNT).\n",
                status=403,
            )
        try:
            address = ipaddress.ip_address(client_ip(request))
        except ValueError:
            address = None
        allowed = _networks(tuple(platform_setting("METRICS_ALLOWED_NETWORKS")))
        if address is not None and any(address in network for network in allowed):
            return None
        return HttpResponse("Metrics are not served to this address.\n", status=403)
    raise ImproperlyConfigured(
        f"PLATFORM['METRICS_ACCESS'] must be one of {', '.join(ACCESS_MODES)}, got {mode!r}"
    )


def metrics_view(request):
    """Prometheus text format, summed over every process of this host."""
    refused = metrics_access_denied(request)
    if refused is not None:
        return refused
    started = time.perf_counter()
    body = prometheus_client.generate_latest(scrape_registry())
    logger.debug("metrics: scrape took %.1f ms", (time.perf_counter() - started) * 1000)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)
