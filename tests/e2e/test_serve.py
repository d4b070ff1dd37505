"""End to end: a seeded instance served by ``manage.py serve``, used over real HTTP."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.servers import every_process_reads_the_registry

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
pytestmark = pytest.mark.e2e


def predict(server, key: str, **body) -> requests.Response:
    return requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": IRIS_ROW, **body},
        headers={"X-API-Key": key},
        timeout=10,
    )


# --- a) The flow of a new user ----------------------------------------------------------------


def test_a_new_user_gets_a_token_makes_a_key_predicts_and_reads_the_prediction_back(
    server, instance
):
    token = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "demo", "password": instance.passwords["demo"]},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access']}"}

    created = requests.post(
        server.url("/api/v1/keys"),
        json={"name": "laptop", "scopes": ["predict", "read"]},
        headers=bearer,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]

    predicted = predict(server, key, model="iris")
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    assert body["label"] == "setosa"
    assert body["model"] == "iris"

    read = requests.get(
        server.url(f"/api/v1/predict/{body['prediction_id']}"),
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert read.status_code == 200
    for name in ("prediction_id", "model", "model_version", "prediction", "label", "confidence"):
        assert read.json()[name] == body[name], name

    listed = requests.get(server.url("/api/v1/predictions"), headers={"X-API-Key": key}, timeout=10)
    assert listed.status_code == 200
    assert body["prediction_id"] in [p["prediction_id"] for p in listed.json()["results"]]


def test_the_demo_key_printed_by_seed_demo_works(server, instance):
    response = predict(server, instance.demo_key, model="iris")

    assert response.status_code == 200, response.text
    assert response.json()["label"] == "setosa"


def test_a_wrong_password_gets_no_token(server):
    response = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "demo", "password": "not-the-password"},
        timeout=10,
    )

    assert response.status_code == 401


# --- b) Registry changes made by another process ------------------------------------------------


def set_iris_weights(instance, v1: float, v2: float) -> None:
    """Change the traffic weights from another process, as the admin would."""
    instance.manage(
        "shell",
        "-c",
        "from predictions.models import ModelVersion; "
        "from predictions.catalogue.versions import model_version_save; "
        f"weights = {{'v1': {v1}, 'v2': {v2}}}\n"
        "for v in ModelVersion.objects.filter(model__name='iris', label__in=weights):\n"
        "    v.traffic_weight = weights[v.label]; model_version_save(version=v)",
    )


def served_by_split(server, key: str) -> str:
    response = predict(server, key, model="iris")
    assert response.status_code == 200, response.text
    assert response.json()["routing"] == "split"
    return response.json()["model_version"]


def wait_until_split_serves(server, key: str, label: str, within: float) -> float:
    """Wait until several fresh connections in a row are served ``label``, at most ``within`` s."""
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < 5:
        elapsed = time.monotonic() - started
        assert elapsed < within, f"still not serving {label} after {elapsed:.1f} s"
        in_a_row = in_a_row + 1 if served_by_split(server, key) == label else 0
        if in_a_row == 0:
            time.sleep(0.05)
    return time.monotonic() - started


def test_a_weight_change_made_by_another_process_is_served_within_seconds(server, instance):
    key = instance.demo_key
    try:
        set_iris_weights(instance, v1=0, v2=100)
        wait_until_split_serves(server, key, "v2", within=3.0)

        set_iris_weights(instance, v1=100, v2=0)

        wait_until_split_serves(server, key, "v1", within=3.0)
    finally:
        set_iris_weights(instance, v1=50, v2=50)


def breast_cancer_rows(count: int) -> list[list[float]]:
    lines = (Path(__file__).parents[2] / "predictions/demo/data/breast_cancer.csv").open()
    next(lines)  # rows, features, class names
    return [[float(x) for x in next(lines).split(",")[:-1]] for _ in range(count)]


SHADOW = "shadow-e2e"


def shadow_copies(instance, ids: list[str]) -> dict[str, list]:
    """Shadow rows stored for these predictions: {primary id: [version, label, error]}."""
    code = (
        "import json; from predictions.models import ShadowPrediction\n"
        f"rows = ShadowPrediction.objects.filter(primary_id__in={ids!r})\n"
        "print(json.dumps({str(s.primary_id): [s.model_version.label, s.label, s.error]"
        " for s in rows.select_related('model_version')}))"
    )
    return json.loads(instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def test_a_shadow_version_answers_copies_that_are_stored_and_never_returned(server, instance):
    instance.manage(
        "shell",
        "-c",
        "from predictions.catalogue.artifacts import artifact_bytes\n"
        "from predictions.models import MLModel\n"
        "from predictions.catalogue.versions import model_version_create, model_version_save\n"
        "model = MLModel.objects.get(name='breast-cancer')\n"
        "artifact = artifact_bytes(model.versions.get(label='v1'))\n"
        f"v = model_version_create(model=model, label={SHADOW!r}, artifact=artifact,"
        " status='active')\n"
        "v.is_shadow = True; v.shadow_share = 1.0; model_version_save(version=v)",
    )
    try:
        every_process_reads_the_registry()
        answers = [
            requests.post(
                server.url("/api/v1/predict"),
                json={"input_data": row, "model": "breast-cancer", "model_version": "v1"},
                headers={"X-API-Key": instance.demo_key},
                timeout=10,
            )
            for row in breast_cancer_rows(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        assert not any(SHADOW in a.text for a in answers)
        ids = [a.json()["prediction_id"] for a in answers]

        deadline = time.monotonic() + 10
        while len(stored := shadow_copies(instance, ids)) < len(ids):
            assert time.monotonic() < deadline, f"{len(stored)} of 5 copies stored"
            time.sleep(0.5)

        labels = {a.json()["prediction_id"]: a.json()["label"] for a in answers}
        # The shadow has v1's artifact: it answers each copy as v1 answered its caller.
        assert stored == {id_: [SHADOW, labels[id_], ""] for id_ in ids}
    finally:
        instance.manage(
            "shell",
            "-c",
            "from predictions.models import ModelVersion\n"
            "from predictions.catalogue.versions import registry_touch\n"
            f"ModelVersion.objects.filter(label={SHADOW!r}).delete(); registry_touch()",
        )


# --- c) Pages, docs, probes and metrics --------------------------------------------------------


def test_the_server_runs_on_the_profile_the_environment_chooses(server):
    expected = "production" if os.environ.get("DATABASE_URL") else "embedded"

    assert f"(profile: {expected})" in server.log.read_text()


def test_the_landing_page_lists_the_models(server):
    response = requests.get(server.url("/"), timeout=10)

    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    for name in ("iris", "breast-cancer", "digits"):
        assert f"<code>{name}</code>" in response.text


def test_the_api_docs_are_served_with_their_scripts_from_this_server(server):
    response = requests.get(server.url("/api/docs/"), timeout=10)

    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    sources = re.findall(r'<script[^>]*\ssrc="([^"]+)"', response.text)
    stylesheets = re.findall(r'<link[^>]*\shref="([^"]+)"', response.text)
    assert sources, response.text
    assert all(src.startswith("/static/") for src in sources + stylesheets), sources + stylesheets
    bundle = next(src for src in sources if "swagger-ui" in src)
    script = requests.get(server.url(bundle), timeout=10)
    assert script.status_code == 200
    assert "javascript" in script.headers["Content-Type"]
    assert len(script.content) > 10_000


def test_the_openapi_schema_is_served(server):
    response = requests.get(server.url("/api/schema/"), timeout=10)

    assert response.status_code == 200
    assert "/api/v1/predict" in response.text


def test_health_answers_healthy(server):
    response = requests.get(server.url("/health"), timeout=10)

    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_ready_answers_200_with_every_check_ok(server):
    response = requests.get(server.url("/ready"), timeout=10)

    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert set(checks) == {"database", "cache", "broker", "models"}
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(checks, "ok")


def test_metrics_are_served_as_prometheus_text(server):
    requests.get(server.url("/health"), timeout=10)

    response = requests.get(server.url("/metrics"), timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "django_http_requests" in response.text


def test_the_admin_login_page_and_its_css_are_served(server):
    page = requests.get(server.url("/admin/login/"), timeout=10)

    assert page.status_code == 200
    assert 'name="username"' in page.text
    css = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page.text)
    assert css, page.text
    for href in css:
        sheet = requests.get(server.url(href), timeout=10)
        assert sheet.status_code == 200, href
        assert sheet.headers["Content-Type"].startswith("text/css"), href


# --- d) Ctrl-C stops everything ----------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1], session [3])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def live_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for child in live_pids():
        stat = proc_stat(child)
        if stat is not None:
            children.setdefault(int(stat[1]), set()).add(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def running_in_session(session: int) -> set[int]:
    """Processes of the session that have not exited (zombies have exited)."""
    running = set()
    for pid in live_pids():
        stat = proc_stat(pid)
        if stat is not None and int(stat[3]) == session and stat[0] != "Z":
            running.add(pid)
    return running


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def still_running(pid: int, started_at: str) -> bool:
    """The process (not a later one that reuses its pid) exists and has not exited."""
    stat = proc_stat(pid)
    return stat is not None and stat[19] == started_at and stat[0] != "Z"


def test_ctrl_c_stops_the_web_server_and_the_worker(serve):
    server = serve("ctrl-c")
    serve_pid = server.process.pid
    children = {pid: command_line(pid) for pid in descendants(serve_pid)}
    started_at = {pid: stat[19] for pid in children if (stat := proc_stat(pid))}
    direct = subprocess.run(
        ["ps", "--ppid", str(serve_pid), "-o", "pid="], capture_output=True, text=True
    ).stdout.split()
    assert len(direct) == 2, children
    assert any("uvicorn" in cmd for cmd in children.values()), children
    assert any("qcluster" in cmd for cmd in children.values()), children
    assert {int(pid) for pid in direct} <= running_in_session(serve_pid), children

    server.process.send_signal(signal.SIGINT)

    deadline = time.monotonic() + 20
    try:
        returncode = server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running 20 s after SIGINT:\n{server.log_tail()}")
    assert returncode == 0, server.log_tail()

    def left() -> dict[int, str]:
        in_session = running_in_session(serve_pid)
        children_left = {pid for pid, t in started_at.items() if still_running(pid, t)}
        return {pid: command_line(pid) for pid in in_session | children_left}

    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left(), f"still running 20 s after SIGINT: {left()}"
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url("/health"), timeout=2)
