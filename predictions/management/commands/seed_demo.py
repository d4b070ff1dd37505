"""``manage.py seed_demo``: demo models, the users ``admin`` and ``demo``, one demo API key."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from predictions.demo.seed import demo_seed

CREDENTIALS_FILE = "demo-credentials"


def credentials_save(path: Path, entries: dict[str, str]) -> None:
    """Write ``entries`` over those of the file (``name: value`` lines), readable by its owner
    only, so that a second run can say where the first run's secrets are."""
    kept = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition(": ")
            if sep and not line.startswith("#"):
                kept[name] = value
    kept |= entries
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by manage.py seed_demo when it creates a user or a demo API key.\n")
        fh.writelines(f"{name}: {value}\n" for name, value in kept.items())


class Command(BaseCommand):
    help = (
        "Train and register the demo models (iris, breast-cancer, digits) if missing, create the "
        "users 'admin' and 'demo' if missing, and issue a demo API key if the demo user has no "
        f"valid one. New passwords and keys are printed and kept in MLPLATFORM_VAR_DIR/"
        f"{CREDENTIALS_FILE}. Safe to run again: an earlier demo key stays valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-key", action="store_true", help="Do not issue a demo API key.")
        parser.add_argument(
            "--new-key",
            action="store_true",
            help="Revoke the demo API key and issue a new one.",
        )

    def handle(self, *args, no_key: bool = False, new_key: bool = False, **options):
        report = demo_seed(issue_key=not no_key, new_key=new_key)
        for name, labels in report.models.items():
            self.stdout.write(f"model {name}: versions {', '.join(labels)}")
        if report.created_versions:
            self.stdout.write(f"trained and registered: {', '.join(report.created_versions)}")
        path = Path(settings.VAR_DIR) / CREDENTIALS_FILE
        entries = {f"{user} password": password for user, password in report.passwords.items()}
        if report.api_key:
            entries["demo API key"] = report.api_key
        if entries:
            credentials_save(path, entries)
        for username, password in report.passwords.items():
            self.stdout.write(
                self.style.WARNING(f"created user {username!r} with password {password}")
            )
        self.stdout.write(
            f"passwords and the demo API key are kept in {path} (readable by you only); "
            "'python manage.py changepassword admin' resets a password, "
            "'python manage.py seed_demo --new-key' replaces the key"
        )
        if report.kept_key is not None:
            self.stdout.write(
                f"the demo API key issued {report.kept_key.created_at:%Y-%m-%d %H:%M} UTC "
                f"(mlp_{report.kept_key.lookup}_...) stays valid"
            )
        if report.api_key:
            self.stdout.write(self.style.SUCCESS("demo API key (user 'demo', all scopes):"))
            self.stdout.write(report.api_key)
