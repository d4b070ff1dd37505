"""``manage.py seed_demo``: demo models, the users ``admin`` and ``demo``, one demo API key."""

from django.core.management.base import BaseCommand

from predictions.demo import demo_seed


class Command(BaseCommand):
    help = (
        "Train and register the demo models (iris, breast-cancer, digits) if missing, create the "
        "users 'admin' and 'demo' if missing, and issue a new demo API key (the previous demo key "
        "is revoked). Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-key", action="store_true", help="Do not issue a demo API key.")

    def handle(self, *args, no_key: bool = False, **options):
        report = demo_seed(issue_key=not no_key)
        for name, labels in report.models.items():
            self.stdout.write(f"model {name}: versions {', '.join(labels)}")
        if report.created_versions:
            self.stdout.write(f"trained and registered: {', '.join(report.created_versions)}")
        for username, password in report.passwords.items():
            self.stdout.write(
                self.style.WARNING(
                    f"created user {username!r} with password {password} (shown only now)"
                )
            )
        if report.api_key:
            self.stdout.write(
                self.style.SUCCESS("demo API key (user 'demo', all scopes; shown only now):")
            )
            self.stdout.write(report.api_key)
