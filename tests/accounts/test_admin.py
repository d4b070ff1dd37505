"""The API key admin: a new key is shown once, stored as a hash, bounded by scopes, revocable."""

import html
import re

from django.contrib.admin.models import LogEntry

from accounts import crypto
from accounts.models import ApiKey, User

KEYS_URL = "/admin/accounts/apikey/"
RAW_KEY = re.compile(r"mlp_[0-9A-Za-z]{12}_[0-9A-Za-z]{46}")


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def add_key(admin_client, *, owner: User, name: str, scopes: list[str]):
    return admin_client.post(
        f"{KEYS_URL}add/",
        {"owner": owner.pk, "name": name, "scopes": scopes, "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )


def test_the_key_pages_load_for_staff(admin_client, user, make_key):
    make_key(user)

    assert admin_client.get(KEYS_URL).status_code == 200
    assert admin_client.get(f"{KEYS_URL}add/").status_code == 200


def test_adding_a_key_shows_the_raw_key_once_and_stores_only_its_hash(
    admin_client, user, client_for
):
    response = add_key(admin_client, owner=user, name="ci", scopes=["predict", "read"])

    assert response.status_code == 200
    shown = RAW_KEY.findall(page_text(response))
    assert len(shown) == 1, page_text(response)
    raw = shown[0]
    key = ApiKey.objects.get()
    assert key.owner == user and key.name == "ci"
    assert key.scopes == ["predict", "read"]
    assert key.hashed_key == crypto.hash_key(raw)
    assert raw not in str(list(ApiKey.objects.values()))
    assert client_for(raw).get("/api/v1/models").status_code == 200
    change_page = admin_client.get(f"{KEYS_URL}{key.pk}/change/")
    assert change_page.status_code == 200
    assert key.prefix in page_text(change_page)
    assert raw not in page_text(change_page)
    assert not RAW_KEY.search(page_text(admin_client.get(KEYS_URL)))


def test_adding_a_key_with_a_scope_its_owner_lacks_is_refused_with_a_form_error(admin_client):
    plain = User.objects.create_user("dave", password="dave-pass-123")

    response = add_key(admin_client, owner=plain, name="k", scopes=["predict", "batch"])

    assert response.status_code == 200
    assert "dave does not hold the scope(s) predict, batch" in page_text(response)
    assert response.context["adminform"].form.non_field_errors()
    assert not ApiKey.objects.exists()


def test_adding_a_key_without_scopes_is_refused(admin_client, user):
    response = add_key(admin_client, owner=user, name="k", scopes=[])

    assert response.status_code == 200
    assert "scopes" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_the_revoke_action_revokes_and_the_key_then_gets_401(
    admin_client, user, make_key, client_for
):
    raw = make_key(user)
    other_raw = make_key(user, name="kept")
    key = ApiKey.objects.get(hashed_key=crypto.hash_key(raw))
    assert client_for(raw).get("/api/v1/models").status_code == 200

    response = admin_client.post(
        KEYS_URL,
        {"action": "revoke_selected", "index": "0", "_selected_action": [key.pk]},
        follow=True,
    )

    assert "Revoked 1 key(s)." in page_text(response)
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = client_for(raw).get("/api/v1/models")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "This API key was revoked."
    assert client_for(other_raw).get("/api/v1/models").status_code == 200


def test_the_success_message_and_the_admin_log_name_the_new_key_by_its_prefix(admin_client, user):
    response = add_key(admin_client, owner=user, name="ci", scopes=["predict"])

    key = ApiKey.objects.get()
    text = re.sub(r"<[^>]+>", "", page_text(response))  # the key's name links to its page
    assert f"The API key “ci ({key.prefix}…)” was added successfully." in text
    assert LogEntry.objects.get(object_id=str(key.pk)).object_repr == str(key)
