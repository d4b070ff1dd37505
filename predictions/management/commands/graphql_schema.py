"""``manage.py graphql_schema``: write the GraphQL schema to ``schema.graphql``, or check it."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

SCHEMA_FILE = Path(settings.BASE_DIR) / "schema.graphql"


def schema_text() -> str:
    """The schema in SDL, as the code defines it."""
    from predictions.graphql.schema import schema

    return schema.as_str() + "\n"


class Command(BaseCommand):
    help = (
        "Export the GraphQL schema (SDL) to schema.graphql at the project root; with --check, "
        "fail when that file differs from the code."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, default=SCHEMA_FILE)
        parser.add_argument("--check", action="store_true", help="Compare instead of writing.")

    def handle(self, *args, output: Path, check: bool, **options):
        text = schema_text()
        if check:
            current = output.read_text() if output.exists() else ""
            if current != text:
                raise CommandError(
                    f"{output} differs from the schema in the code; run "
                    "'python manage.py graphql_schema' and commit the file."
                )
            self.stdout.write(f"{output} is up to date.")
            return
        output.write_text(text)
        self.stdout.write(f"Wrote {output}.")
