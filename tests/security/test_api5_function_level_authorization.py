"""OWASP API5:2023 Broken Function Level Authorization.

A credential reaches only the functions its scopes name: a key acts with the intersection of
its scopes and its owner's permissions (403 ``missing_scope`` otherwise, nothing done);
registering models needs the ``models`` scope, which staff hold and API users do not; API
keys never manage credentials (403 ``user_credentials_required``); the admin is for staff
sessions only (anonymous callers and non-staff users are sent to its login page, staff without
a model permission get 403); methods a route does not offer answer 405.
"""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from accounts.models import ApiKey, User
from accounts.scopes import ALL_SCOPES, permission_codename
from predictions.models import BatchJob, MLModel, ModelVersion, Prediction
from tests.security.conftest import IRIS, assert_error, jwt_client

pytestmark = pytest.mark.usefixtures("demo_models")

# (method, url, body, the scope it needs)
SCOPED = [
    ("post", "/api/v1/predict", {"input_data": IRIS}, "predict"),
    ("post", "/api/v1/predict/ab-test", {"input_data": IRIS}, "predict"),
    ("post", "/api/v1/predict/batch", {"inputs": [IRIS]}, "batch"),
    ("post", "/api/v1/predict/stream", {"inputs": [IRIS]}, "stream"),
    ("get", "/api/v1/predictions", None, "read"),
    ("get", "/api/v1/stats", None, "read"),
    ("get", "/api/v1/predict/{prediction}", None, "read"),
    ("post", "/api/v1/predictions/{prediction}/feedback", {"actual": "setosa"}, "predict"),
    ("post", "/api/v1/predict/batch/{job}/cancel", None, "batch"),
]


@pytest.fixture
def own(user, make_key, client_for) -> dict:
    client = client_for(make_key(user))
    prediction = client.post("/api/v1/predict", {"input_data": IRIS}, format="json").json()
    job = client.post("/api/v1/predict/batch", {"inputs": [IRIS]}, format="json").json()
    return {"prediction": prediction["prediction_id"], "job": job["job_id"]}


def _state() -> tuple:
    return (
        Prediction.objects.count(),
        sorted(BatchJob.objects.values_list("id", "status", "cancel_requested")),
    )


@pytest.mark.parametrize(("method", "url", "body", "scope"), SCOPED)
def test_a_key_without_the_scope_gets_403_and_nothing_is_done(
    user, make_key, client_for, own, method, url, body, scope
):
    others = [s for s in ("predict", "batch", "stream", "read") if s != scope]
    client = client_for(make_key(user, scopes=others))
    before = _state()

    response = getattr(client, method)(url.format(**own), body, format="json")

    assert_error(response, 403, "missing_scope")
    assert repr(scope) in response.json()["detail"]
    assert _state() == before


@pytest.mark.parametrize(("method", "url", "body", "scope"), SCOPED)
def test_a_user_without_the_permission_gets_403_even_with_a_full_key(
    user, make_key, client_for, own, method, url, body, scope
):
    client = client_for(make_key(user))
    user.groups.clear()
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=[permission_codename(s) for s in ALL_SCOPES if s != scope]
        )
    )
    before = _state()

    response = getattr(client, method)(url.format(**own), body, format="json")

    assert_error(response, 403, "missing_scope")
    assert _state() == before


def test_the_scope_permissions_exist_under_the_names_the_test_uses(db):
    """Guards the test above: it grants every scope permission but one."""
    codenames = [permission_codename(scope) for scope in ALL_SCOPES]

    assert Permission.objects.filter(codename__in=codenames).count() == len(ALL_SCOPES) == 5


def test_a_predict_only_key_can_predict_but_not_submit_batches(user, make_key, client_for):
    client = client_for(make_key(user, scopes=["predict"]))

    assert client.post("/api/v1/predict", {"input_data": IRIS}, format="json").status_code == 200
    refused = client.post("/api/v1/predict/batch", {"inputs": [IRIS]}, format="json")

    assert_error(refused, 403, "missing_scope")
    assert BatchJob.objects.count() == 0


def test_reading_jobs_needs_read_or_batch(user, make_key, client_for, own):
    predict_only = client_for(make_key(user, scopes=["predict"]))
    batch_only = client_for(make_key(user, scopes=["batch"]))

    for url in ("/api/v1/jobs", f"/api/v1/predict/batch/{own['job']}"):
        assert_error(predict_only.get(url), 403, "missing_scope")
        assert batch_only.get(url).status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", "/api/v1/keys", None),
        ("post", "/api/v1/keys", {"name": "k", "scopes": ["read"]}),
        ("get", "/api/v1/keys/{key}", None),
        ("delete", "/api/v1/keys/{key}", None),
        ("get", "/api/v1/webhooks/secret", None),
        ("post", "/api/v1/webhooks/secret/rotate", None),
    ],
)
def test_an_api_key_with_every_scope_cannot_manage_credentials(
    user, make_key, client_for, method, url, body
):
    raw = make_key(user)
    key = ApiKey.objects.get(owner=user)
    secret = User.objects.get(pk=user.pk).webhook_secret

    response = getattr(client_for(raw), method)(url.format(key=key.pk), body, format="json")

    assert_error(response, 403)
    assert response.json()["code"] in ("user_credentials_required", "permission_denied")
    assert ApiKey.objects.filter(owner=user).count() == 1
    key.refresh_from_db()
    assert key.revoked_at is None
    assert User.objects.get(pk=user.pk).webhook_secret == secret


def test_a_jwt_may_manage_credentials(user):
    """The control: the same functions with the user's own login."""
    client, _ = jwt_client(user.username)

    assert (
        client.post("/api/v1/keys", {"name": "k", "scopes": ["read"]}, format="json").status_code
        == 201
    )
    assert client.get("/api/v1/webhooks/secret").status_code == 200


# --- Registering models: the 'models' scope, held by staff or given as a permission --------

MODELS_OPERATIONS = [
    ("post", "/api/v1/models", {"name": "new", "task": "regression"}, "json"),
    ("post", "/api/v1/models/iris/versions", {"label": "v9"}, "multipart"),
]


def _registry() -> tuple:
    return (MLModel.objects.count(), sorted(ModelVersion.objects.values_list("id", flat=True)))


@pytest.mark.parametrize(("method", "url", "body", "fmt"), MODELS_OPERATIONS)
def test_registering_needs_the_models_scope_even_with_every_client_scope(
    user, make_key, client_for, method, url, body, fmt
):
    client = client_for(make_key(user))  # predict, batch, stream, read
    before = _registry()

    response = getattr(client, method)(url, body, format=fmt)

    assert_error(response, 403, "missing_scope")
    assert "'models'" in response.json()["detail"]
    assert _registry() == before


@pytest.mark.parametrize(("method", "url", "body", "fmt"), MODELS_OPERATIONS)
def test_a_models_key_whose_owner_lost_the_permission_gets_403(
    user, make_key, client_for, method, url, body, fmt
):
    permission = Permission.objects.get(codename=permission_codename("models"))
    user.user_permissions.add(permission)
    client = client_for(make_key(User.objects.get(pk=user.pk), scopes=["models"]))
    user.user_permissions.remove(permission)
    before = _registry()

    response = getattr(client, method)(url, body, format=fmt)

    assert_error(response, 403, "missing_scope")
    assert _registry() == before


def test_staff_hold_the_models_scope_and_api_users_do_not(user, staff):
    from accounts.scopes import user_scopes

    assert "models" in user_scopes(staff)
    assert "models" not in user_scopes(user)


# --- Admin and staff pages --------------------------------------------------------------

ADMIN_PAGES = [
    "/admin/",
    "/admin/accounts/apikey/",
    "/admin/accounts/user/",
    "/admin/predictions/mlmodel/",
    "/admin/predictions/prediction/",
    "/admin/predictions/mlmodel/{model}/compare/",
]


def _page(url: str) -> str:
    return url.format(model=MLModel.objects.get(name="iris").pk)


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_anonymous_callers_are_sent_to_the_admin_login(db, url):
    response = APIClient().get(_page(url))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_an_api_key_or_a_token_does_not_open_the_admin(staff, make_key, url):
    """Even a staff member's credentials are API credentials, not an admin session."""
    keyed = APIClient()
    keyed.credentials(HTTP_X_API_KEY=make_key(staff))
    bearer, _ = jwt_client(staff.username)

    for client in (keyed, bearer):
        response = client.get(_page(url))
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_a_signed_in_user_who_is_not_staff_is_sent_to_the_login(user, url):
    client = APIClient()
    client.force_login(user)

    response = client.get(_page(url))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ADMIN_PAGES[1:])
def test_staff_without_a_models_permission_get_403(staff, url):
    client = APIClient()
    client.force_login(staff)

    response = client.get(_page(url))

    assert response.status_code == 403


def test_staff_without_permissions_cannot_add_keys_through_the_admin(staff, user):
    client = APIClient()
    client.force_login(staff)

    response = client.post(
        "/admin/accounts/apikey/add/", {"owner": user.pk, "name": "x", "scopes": ["read"]}
    )

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_a_superuser_session_opens_the_admin(admin_client):
    """The control."""
    assert admin_client.get("/admin/accounts/apikey/").status_code == 200


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("put", "/api/v1/predict/{prediction}"),
        ("delete", "/api/v1/predict/{prediction}"),
        ("patch", "/api/v1/predict/batch/{job}"),
        ("delete", "/api/v1/predict/batch/{job}"),
        ("delete", "/api/v1/predictions"),
        ("put", "/api/v1/models/iris"),
        ("delete", "/api/v1/models/iris"),
        ("post", "/api/v1/models/iris"),
        ("get", "/api/v1/models/iris/versions"),
        ("delete", "/api/v1/models/iris/versions"),
    ],
)
def test_methods_a_route_does_not_offer_answer_405(alice, own, method, url):
    before = (_state(), MLModel.objects.count())

    response = getattr(alice, method)(url.format(**own), {}, format="json")

    assert_error(response, 405)
    assert (_state(), MLModel.objects.count()) == before
