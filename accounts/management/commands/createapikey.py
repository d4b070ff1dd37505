"""``manage.py createapikey USERNAME --scopes ...``: prints the new key alone on standard output."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import User
from accounts.scopes import ALL_SCOPES, user_scopes
from accounts.services import api_key_create
from mlplatform.errors import PlatformError


class Command(BaseCommand):
    help = "Create an API key for a user and print it (it is never shown again)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--scopes",
            default=None,
            help=f"Comma-separated scopes out of {', '.join(ALL_SCOPES)} "
            "(default: every scope the user holds).",
        )
        parser.add_argument("--name", default="cli", help="A name to recognise the key by.")
        parser.add_argument("--expires-in-days", type=int, default=None)
        parser.add_argument(
            "--rate",
            default="",
            help="Rate-limit overrides: '600/m' (predictions) or 'predict=600/m,batch=10/h'.",
        )

    def handle(self, *args, username, scopes, name, expires_in_days, rate, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        if scopes is None:
            scopes = ",".join(s for s in ALL_SCOPES if s in user_scopes(user))
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            _, raw = api_key_create(
                owner=user,
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                expires_at=expires_at,
                rate_limits=rate,
            )
        except PlatformError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(raw)
