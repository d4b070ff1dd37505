"""The runtime must stay importable without Django: it is the part that knows nothing of the web."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import importlib, json, pkgutil, sys
import predictions.runtime as runtime
names = [m.name for m in pkgutil.iter_modules(runtime.__path__, "predictions.runtime.")]
names += ["predictions.demo.datasets", "predictions.demo.training"]
for name in names:
    importlib.import_module(name)
django = [m for m in sys.modules if m.split(".")[0] == "django"]
print(json.dumps({"imported": names, "django": django}))
"""


def test_importing_every_runtime_module_and_the_demo_training_does_not_import_django():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)

    assert "predictions.demo.training" in report["imported"]
    assert len(report["imported"]) >= 9
    assert report["django"] == []
