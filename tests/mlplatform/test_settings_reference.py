"""Configuration is read one way: every environment variable is declared in mlplatform/conf.py,
read through it, and documented in docs/settings.md as the declarations say."""

import ast
import re
from pathlib import Path

from mlplatform.conf import ENVIRONMENT, KNOBS, reference

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mlplatform", "accounts", "predictions")
# The web server's start-up sets variables for the processes it starts.
MAY_TOUCH_THE_ENVIRONMENT = {"mlplatform/conf.py", "mlplatform/asgi.py", "mlplatform/settings.py"}
MAY_READ_THE_ENVIRONMENT = {
    "mlplatform/conf.py",
    "mlplatform/management/commands/serve.py",
    # Reads the variable its operator names for a remote server's credential: input, not a setting.
    "predictions/management/commands/register_model.py",
}
BEGIN, END = (
    "<!-- rendered from mlplatform/conf.py: begin -->\n",
    "<!-- rendered from mlplatform/conf.py: end -->",
)


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def test_the_settings_reference_is_rendered_from_the_declarations():
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]

    assert documented == reference(), "run: python -m mlplatform.conf, into docs/settings.md"


def test_every_setting_is_declared_once_with_a_line_of_documentation():
    names = [setting.env for setting in ENVIRONMENT + KNOBS]

    assert len(names) == len(set(names))
    assert all(setting.help.endswith(".") and "\n" not in setting.help for setting in KNOBS)
    assert all(setting.help.endswith(".") for setting in ENVIRONMENT)


def test_the_environment_is_read_only_through_the_declarations():
    readers = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                reads = module not in MAY_TOUCH_THE_ENVIRONMENT | MAY_READ_THE_ENVIRONMENT
                if reads:
                    readers.append(f"{module}:{node.lineno}")

    assert readers == []


def test_every_variable_the_code_reads_is_declared():
    declared = {setting.env for setting in ENVIRONMENT + KNOBS}
    read = set()
    for _, tree in _modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "env"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                read.add(node.args[0].value)

    assert read, "the scan found no env() calls"
    assert read <= declared, read - declared


def test_the_docs_name_no_undeclared_platform_variable():
    declared = {setting.env for setting in ENVIRONMENT + KNOBS}
    named = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        named |= set(re.findall(r"\bMLPLATFORM_[A-Z_]+[A-Z]\b", path.read_text()))

    assert named <= declared, named - declared
