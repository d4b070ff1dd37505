"""The platform's Prometheus metrics: values after known traffic, access to /metrics."""

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings as django_settings
from django.core.cache import cache
from prometheus_client import REGISTRY

from mlplatform import metrics
from mlplatform.conf import DEFAULTS
from predictions.batch.jobs import batch_job_process
from predictions.catalogue.registry import registry
from predictions.catalogue.versions import model_save
from predictions.models import MLModel, WebhookDelivery
from predictions.webhooks import Outcome, webhook_deliver

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]
OPS = Path(django_settings.BASE_DIR) / "ops"


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def predict(client, **body):
    return client.post(
        "/api/v1/predict", {"input_data": SETOSA, "model_version": "v1", **body}, format="json"
    )


OK_V1 = {"model": "iris", "version": "v1", "routing": "explicit", "cached": "false"}


def test_a_prediction_is_counted_with_its_model_version_routing_and_outcome(key_client):
    before = value("mlplatform_predictions_total", **OK_V1, outcome="ok")
    timed = value("mlplatform_inference_seconds_count", model="iris", version="v1")

    assert predict(key_client).status_code == 200
    assert predict(key_client).status_code == 200

    assert value("mlplatform_predictions_total", **OK_V1, outcome="ok") == before + 2
    assert value("mlplatform_inference_seconds_count", model="iris", version="v1") == timed + 2


def test_a_refused_prediction_is_counted_by_its_error_code(key_client):
    before = value("mlplatform_predictions_total", **OK_V1, outcome="invalid_input")

    assert predict(key_client, input_data=[1, 2, 3]).status_code == 400

    assert value("mlplatform_predictions_total", **OK_V1, outcome="invalid_input") == before + 1


def test_response_cache_hits_and_misses_are_counted(key_client):
    iris = MLModel.objects.get(name="iris")
    iris.cache_ttl = 60
    model_save(model=iris)
    hits = value("mlplatform_response_cache_total", model="iris", result="hit")
    misses = value("mlplatform_response_cache_total", model="iris", result="miss")
    cached = value("mlplatform_predictions_total", **{**OK_V1, "cached": "true"}, outcome="ok")

    predict(key_client)
    predict(key_client)
    predict(key_client)

    assert value("mlplatform_response_cache_total", model="iris", result="miss") == misses + 1
    assert value("mlplatform_response_cache_total", model="iris", result="hit") == hits + 2
    cached_after = value(
        "mlplatform_predictions_total", **{**OK_V1, "cached": "true"}, outcome="ok"
    )
    assert cached_after == cached + 2


def test_batch_jobs_and_rows_are_counted(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "BATCH_CHUNK_ROWS": 10}
    queued = value("mlplatform_batch_jobs_total", status="queued")
    rows = value("mlplatform_batch_rows_processed_total", model="iris", version="v1")
    chunks = value("mlplatform_batch_chunk_seconds_count")

    submitted = key_client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA] * 25, "model_version": "v1"}, format="json"
    )
    job_id = submitted.json()["job_id"]
    batch_job_process(job_id=job_id)

    assert value("mlplatform_batch_jobs_total", status="queued") == queued + 1
    assert value("mlplatform_batch_rows_processed_total", model="iris", version="v1") == rows + 25
    assert value("mlplatform_batch_chunk_seconds_count") == chunks + 3


def test_a_finished_job_is_counted_once_it_is_committed(
    key_client, django_capture_on_commit_callbacks
):
    completed = value("mlplatform_batch_jobs_total", status="completed")
    job_id = key_client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA] * 3}, format="json"
    ).json()["job_id"]

    with django_capture_on_commit_callbacks(execute=True):
        batch_job_process(job_id=job_id)
        batch_job_process(job_id=job_id)  # delivered twice: counted once

    assert value("mlplatform_batch_jobs_total", status="completed") == completed + 1


def test_authentication_failures_are_counted_by_reason(client_for):
    invalid = value("mlplatform_auth_failures_total", reason="malformed_api_key")
    missing = value("mlplatform_auth_failures_total", reason="not_authenticated")

    assert client_for("not-a-key").get("/api/v1/models").status_code == 401
    assert client_for().get("/api/v1/models").status_code == 401

    assert value("mlplatform_auth_failures_total", reason="malformed_api_key") == invalid + 1
    assert value("mlplatform_auth_failures_total", reason="not_authenticated") == missing + 1


def test_rate_limited_requests_are_counted_by_group(key_client, settings):
    settings.PLATFORM = {
        **settings.PLATFORM,
        "RATE_LIMITS": {**DEFAULTS["RATE_LIMITS"], "predict": "1/h"},
    }
    before = value("mlplatform_rate_limited_total", group="predict")

    assert predict(key_client).status_code == 200
    assert predict(key_client).status_code == 429

    assert value("mlplatform_rate_limited_total", group="predict") == before + 1


def test_model_loads_are_timed(key_client):
    registry.clear()
    before = value("mlplatform_model_load_seconds_count", model="iris", version="v1")

    predict(key_client)
    predict(key_client)

    assert value("mlplatform_model_load_seconds_count", model="iris", version="v1") == before + 1


def test_webhook_attempts_are_counted_by_result(key_client, monkeypatch):
    job_id = key_client.post("/api/v1/predict/batch", {"inputs": [SETOSA]}, format="json").json()
    delivery = WebhookDelivery.objects.create(
        job_id=job_id["job_id"],
        url="https://hooks.example.com/ml",
        event_type="batch_job.completed",
        payload={"data": {"request_id": "r-1"}},
    )
    results = iter([Outcome(status_code=503, retryable=True), Outcome(status_code=200)])
    monkeypatch.setattr("predictions.webhooks._send", lambda delivery: next(results))
    retrying = value("mlplatform_webhook_deliveries_total", result="retrying")
    delivered = value("mlplatform_webhook_deliveries_total", result="delivered")

    webhook_deliver(str(delivery.id), attempt=1)
    webhook_deliver(str(delivery.id), attempt=2)

    assert value("mlplatform_webhook_deliveries_total", result="retrying") == retrying + 1
    assert value("mlplatform_webhook_deliveries_total", result="delivered") == delivered + 1


def test_metrics_page_has_request_database_batch_and_process_metrics(key_client, client):
    predict(key_client)
    key_client.post("/api/v1/predict/batch", {"inputs": [SETOSA]}, format="json")

    text = client.get("/metrics").content.decode()

    assert "django_http_requests_latency_seconds_by_view_method_bucket" in text
    assert re.search(r"^django_db_execute_total\{", text, re.M)
    assert 'mlplatform_batch_jobs{status="queued"} 1.0' in text
    assert re.search(r"^mlplatform_batch_oldest_queued_seconds \d", text, re.M)
    assert re.search(r'^mlplatform_process_cpu_seconds_total\{pid="\d+"', text, re.M)
    assert re.search(r"^mlplatform_process_resident_memory_bytes\{.*\} [1-9]", text, re.M)


def test_database_metrics_count_statements_errors_and_their_duration(db):
    from django.db import DatabaseError, connection

    labels = {"alias": "default", "vendor": connection.vendor}
    # Errors are counted by the driver's exception type, which Django then wraps.
    driver_error = "OperationalError" if connection.vendor == "sqlite" else "UndefinedTable"
    failed = {**labels, "type": driver_error}
    before = {
        name: value(name, **(failed if "errors" in name else labels))
        for name in (
            "django_db_execute_total",
            "django_db_query_duration_seconds_count",
            "django_db_errors_total",
        )
    }

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        with pytest.raises(DatabaseError) as raised:
            cursor.execute("SELECT * FROM no_such_table")
    assert type(raised.value.__cause__).__name__ == failed["type"]

    assert value("django_db_execute_total", **labels) == before["django_db_execute_total"] + 2
    assert (
        value("django_db_query_duration_seconds_count", **labels)
        == before["django_db_query_duration_seconds_count"] + 2
    )
    assert value("django_db_errors_total", **failed) == before["django_db_errors_total"] + 1


def set_access(settings, **knobs):
    settings.PLATFORM = {**settings.PLATFORM, **knobs}


def test_metrics_in_network_mode_are_refused_outside_the_allowed_networks(client, settings):
    set_access(settings, METRICS_ACCESS="network", METRICS_ALLOWED_NETWORKS=("10.0.0.0/8",))

    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_metrics_forwarded_by_a_proxy_that_is_not_trusted_are_refused(client, settings):
    """A reverse proxy on the same host makes every client's request come from 127.0.0.1."""
    set_access(settings, METRICS_ACCESS="network", METRICS_ALLOWED_NETWORKS=("127.0.0.0/8",))
    settings.TRUSTED_PROXY_COUNT = 0

    through_proxy = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert through_proxy.status_code == 403
    assert b"TRUSTED_PROXY_COUNT" in through_proxy.content
    assert client.get("/metrics").status_code == 200  # a scraper on this host, directly


def test_metrics_through_a_trusted_proxy_are_judged_by_the_client_address(client, settings):
    set_access(settings, METRICS_ACCESS="network", METRICS_ALLOWED_NETWORKS=("10.0.0.0/8",))
    settings.TRUSTED_PROXY_COUNT = 1

    outsider = client.get("/metrics", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.9")
    scraper = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.1.2.3")

    assert outsider.status_code == 403  # the proxy says it received it from 203.0.113.9
    assert scraper.status_code == 200


def test_metrics_in_token_mode_need_the_bearer_token(client, settings):
    set_access(settings, METRICS_ACCESS="token", METRICS_TOKEN="s3cret-token-for-prometheus")

    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token-for-prometheus")

    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200 and b"mlplatform_predictions" in right.content


def test_metrics_in_open_mode_answer_anyone(client, settings):
    set_access(settings, METRICS_ACCESS="open")

    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_with_instrumentation_off_nothing_is_counted(key_client, settings):
    set_access(settings, INSTRUMENTATION=False)
    before = value("mlplatform_predictions_total", **OK_V1, outcome="ok")

    assert predict(key_client).status_code == 200

    assert value("mlplatform_predictions_total", **OK_V1, outcome="ok") == before


# --- The operators' files use exactly the names /metrics exposes ------------------------

_NAME = re.compile(r"\b((?:mlplatform|django)_[a-zA-Z0-9_]+)\b")


def exposed_names(text: str) -> set[str]:
    """Sample names on the page, plus every name a declared family can expose."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            family = family.removesuffix("_total") if kind == "counter" else family
            suffixes = {
                "counter": ("_total", "_created"),
                "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",),
            }.get(kind, ("",))
            names.update(family + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def referenced_names() -> dict[str, set[str]]:
    dashboard = (OPS / "grafana-dashboard.json").read_text()
    rules = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {
        "grafana-dashboard.json": set(_NAME.findall(dashboard)),
        "prometheus-alerts.yml": set(_NAME.findall("\n".join(exprs))),
    }


def test_grafana_dashboard_and_alert_rules_use_only_exposed_metric_names(client):
    exposed = exposed_names(client.get("/metrics").content.decode())
    references = referenced_names()

    assert all(references.values()), references
    for file, names in references.items():
        assert names <= exposed, f"{file} names unknown metrics: {sorted(names - exposed)}"


def test_alert_rules_cover_errors_latency_backlog_and_webhooks():
    rules = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    text = (OPS / "prometheus-alerts.yml").read_text()

    assert len(names) >= 4
    for metric in (
        "django_http_responses_total_by_status_view_method_total",
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "mlplatform_batch_oldest_queued_seconds",
        "mlplatform_webhook_deliveries_total",
    ):
        assert metric in text


def test_label_values_never_come_from_the_client(key_client):
    predict(key_client, model="no-such-model")

    text = "\n".join(
        line for line in metrics.prometheus_client.generate_latest(REGISTRY).decode().splitlines()
    )
    assert "no-such-model" not in text
