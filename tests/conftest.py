"""Shared fixtures: users with scopes, API keys, clients and the demo models."""

import contextlib
import os

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.keycache import verified_keys
from accounts.models import User
from accounts.scopes import CLIENT_SCOPES
from accounts.services import api_key_create
from predictions.catalogue.registry import registry
from predictions.stats import tallies

# A throw-away instance and real servers on it, for the end-to-end and security suites.
pytest_plugins = ["tests.servers"]


def pytest_sessionstart(session):
    # On SQLite the test database is a file (settings.py). Django deletes it before creating
    # it again, but not the WAL beside it, which threads still connected at exit (or a run
    # killed midway) leave behind, and which SQLite would replay into the new database.
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and database.get("TEST", {}).get("NAME"):
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{database['TEST']['NAME']}{suffix}")


_FIGURES: list[str] = []


@pytest.fixture
def figure():
    """Report a measured figure: printed at the end of the run, whatever the output capture."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Password hashing is deliberately slow; tests that create users need not wait for it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Files a test stores (batch rows and results) go to its own directory."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _no_pending_tallies():
    """Request tallies of an earlier test's (rolled back) users must not land on this test's."""
    tallies.clear()
    yield
    tallies.clear()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Response cache and rate-limit counters start empty (Redis too, on that profile)."""
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test starts from the database as it is (the test rolls it back afterwards)."""
    registry.clear()
    verified_keys.clear()
    yield
    registry.clear()
    verified_keys.clear()


@pytest.fixture
def api_users(db) -> Group:
    from predictions.demo.seed import api_users_group

    return api_users_group()


def _make_user(username: str, group: Group | None, **extra) -> User:
    user = User.objects.create_user(username, password=f"{username}-pass-123", **extra)
    if group is not None:
        user.groups.add(group)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def user(api_users) -> User:
    """A user holding every scope through the 'API users' group."""
    return _make_user("alice", api_users)


@pytest.fixture
def other_user(api_users) -> User:
    return _make_user("bob", api_users)


@pytest.fixture
def staff(api_users) -> User:
    return _make_user("carol", api_users, is_staff=True)


@pytest.fixture
def make_key():
    def make(owner: User, scopes=CLIENT_SCOPES, **kwargs) -> str:
        return api_key_create(
            owner=owner, name=kwargs.pop("name", "test"), scopes=scopes, **kwargs
        )[1]

    return make


@pytest.fixture
def client_for():
    """An API client sending the given API key, or none."""

    def make(key: str | None = None) -> APIClient:
        client = APIClient()
        if key:
            client.credentials(HTTP_X_API_KEY=key)
        return client

    return make


@pytest.fixture
def key_client(user, make_key, client_for) -> APIClient:
    return client_for(make_key(user))


@pytest.fixture
def demo_models(db):
    """The demo models (iris v1+v2, breast-cancer, digits), trained once per test run."""
    from predictions.demo.seed import demo_seed

    demo_seed(issue_key=False)
