"""compose.yaml and the files it mounts, checked without a container engine: the Compose
specification's JSON schema (ops/compose-spec.json, from github.com/compose-spec/compose-spec,
schema/compose-spec.json at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6), then what the
topology needs."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
SCHEMA = json.loads((ROOT / "ops" / "compose-spec.json").read_text())


def test_compose_yaml_follows_the_compose_specification():
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []
    # The schema refuses what is not Compose (so the check above can fail).
    assert not validator.is_valid({**COMPOSE, "sevices": {}})
    assert not validator.is_valid({"services": {"web": {"imgae": "mlplatform"}}})


def test_the_topology_has_its_services_and_workers_scale():
    expected = {"haproxy", "web1", "web2", "worker", "migrate", "postgres", "redis"}
    assert expected | {"prometheus", "grafana"} == set(SERVICES)
    for name in ("web1", "web2", "worker", "migrate"):
        assert SERVICES[name]["image"] == SERVICES["web1"]["image"]  # one image, by command
    # --scale worker=N: no fixed name, no published port.
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"]
    assert SERVICES["worker"]["command"][-1] == "qcluster"
    assert SERVICES["postgres"]["volumes"][0].endswith(":/var/lib/postgresql/data")


def test_web_and_worker_containers_share_the_storage_of_artifacts_and_batch_files():
    # MEDIA_ROOT is MLPLATFORM_VAR_DIR/media; the image creates it owned by its user.
    image_var_dir = "/var/lib/mlplatform"
    assert f"MLPLATFORM_VAR_DIR={image_var_dir}" in (ROOT / "Dockerfile").read_text()
    for name in ("web1", "web2", "worker", "migrate"):
        assert f"media:{image_var_dir}/media" in SERVICES[name]["volumes"], name
    assert "media" in COMPOSE["volumes"]


def test_every_file_compose_mounts_is_in_the_repository():
    mounted = [
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    assert mounted
    assert [path for path in mounted if not (ROOT / path).exists()] == []


def test_no_secret_is_committed_and_the_guide_creates_every_one():
    environment = {
        key: value
        for service in SERVICES.values()
        for key, value in (service.get("environment") or {}).items()
    }
    for name in ("SECRET_KEY", "JWT_SIGNING_KEY", "MLPLATFORM_METRICS_TOKEN"):
        assert environment[name] == f"${{{name}:?set in .env}}"
    assert environment["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set in .env}"
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "compose.yaml").read_text()))
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert sorted(name for name in required if f"\n{name}=" not in guide) == []


def test_prometheus_scrapes_both_web_services_with_the_token():
    config = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["web1:8000", "web2:8000"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "MLPLATFORM_METRICS_TOKEN"}
    assert SERVICES["web1"]["environment"]["MLPLATFORM_METRICS_ACCESS"] == "token"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert (
        "./ops/prometheus-alerts.yml:/etc/prometheus/alerts.yml:ro"
        in (SERVICES["prometheus"]["volumes"])
    )


def test_the_drain_outlasts_the_balancers_health_checks():
    haproxy = (ROOT / "ops" / "haproxy.cfg").read_text()
    fall = int(re.search(r'fall "\$\{CHECK_FALL-(\d+)\}"', haproxy).group(1))
    inter = SERVICES["haproxy"]["environment"]["CHECK_INTER"]
    assert inter.endswith("s") and not inter.endswith("ms")
    drain = float(SERVICES["web1"]["environment"]["MLPLATFORM_DRAIN_SECONDS"])
    assert drain >= float(inter[:-1]) * (fall + 1)
    grace = int(SERVICES["web1"]["stop_grace_period"].rstrip("s"))
    assert grace > drain + 10  # then uvicorn's graceful shutdown (serve: 10 s)
    assert "uri /ready" in haproxy


@pytest.mark.skipif(not shutil.which("haproxy"), reason="needs haproxy (.ci/run installs it)")
def test_haproxy_accepts_its_configuration():
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(ROOT / "ops" / "haproxy.cfg")],
        env={**os.environ, "WEB1": "127.0.0.1:8001", "WEB2": "127.0.0.1:8002"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
