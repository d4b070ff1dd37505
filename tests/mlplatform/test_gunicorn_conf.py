"""The gunicorn configuration: processes, threads and sockets by profile and environment.

Each case loads the configuration file the way gunicorn does (as a Python file), in a fresh
interpreter with a controlled environment, so the test process's own environment is untouched.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "mlplatform" / "gunicorn_conf.py"
NAMES = ("workers", "threads", "reuse_port", "preload_app", "worker_class", "bind")
CLEARED = ("DATABASE_URL", "WEB_CONCURRENCY", "WEB_THREADS", "WEB_REUSE_PORT", "BIND")
CORES = os.cpu_count() or 1


def load(tmp_path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    base |= {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "MLPLATFORM_MAX_OPEN_STREAMS": "128"}
    code = (
        "import json, runpy, sys; c = runpy.run_path(sys.argv[1]); "
        f"print(json.dumps({{k: c[k] for k in {NAMES!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(CONF)],
        env=base | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_embedded_profile_runs_one_process_so_its_cache_is_shared(tmp_path):
    conf = load(tmp_path)
    assert conf["workers"] == 1
    assert conf["reuse_port"] is False
    assert conf["preload_app"] is False
    assert conf["worker_class"] == "gthread"


def test_production_runs_a_process_per_core(tmp_path):
    conf = load(tmp_path, DATABASE_URL="postgres://db/x")
    assert conf["workers"] == CORES
    assert conf["preload_app"] is True
    assert conf["reuse_port"] is (CORES > 1)


def test_every_process_has_a_thread_per_stream_it_may_hold_beyond_its_request_threads(tmp_path):
    assert load(tmp_path)["threads"] == 4 + 128
    assert load(tmp_path, WEB_THREADS="8", MLPLATFORM_MAX_OPEN_STREAMS="10")["threads"] == 18


@pytest.mark.parametrize("off", ["0", "false", "False"])
def test_the_environment_sizes_the_server_and_can_share_one_socket(tmp_path, off):
    conf = load(tmp_path, DATABASE_URL="postgres://db/x", WEB_CONCURRENCY="3", BIND="0.0.0.0:9000")
    assert (conf["workers"], conf["reuse_port"], conf["bind"]) == (3, True, "0.0.0.0:9000")
    conf = load(tmp_path, DATABASE_URL="postgres://db/x", WEB_CONCURRENCY="3", WEB_REUSE_PORT=off)
    assert conf["reuse_port"] is False


def frozen_after(tmp_path, hook: str) -> list:
    """[objects frozen before, after, views imported] when ``hook`` runs on a loaded application."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "MLPLATFORM_VAR_DIR": str(tmp_path)}
    code = (
        "import gc, json, runpy, sys, types, django; django.setup(); "
        "from mlplatform.wsgi import application; c = runpy.run_path(sys.argv[1]); "
        "before = gc.get_freeze_count(); exec(sys.argv[2]); "
        "print(json.dumps([before, gc.get_freeze_count(), 'predictions.views' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(CONF), hook],
        env=env | {"DJANGO_SETTINGS_MODULE": "mlplatform.settings"},
        cwd=CONF.parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_worker_freezes_the_loaded_application_out_of_full_garbage_collections(tmp_path):
    before, frozen, views_loaded = frozen_after(tmp_path, "c['post_worker_init'](None)")

    assert before == 0
    assert frozen > 50_000  # Django, DRF, the views and their imports
    assert views_loaded


@pytest.mark.parametrize("preload", [True, False])
def test_a_preloaded_application_is_frozen_in_the_master_before_the_fork(tmp_path, preload):
    server = f"types.SimpleNamespace(cfg=types.SimpleNamespace(preload_app={preload}))"
    before, frozen, _ = frozen_after(tmp_path, f"c['when_ready']({server})")

    assert before == 0
    assert (frozen > 50_000) is preload  # without preload each worker freezes its own
