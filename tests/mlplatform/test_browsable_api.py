"""The browsable API for people: indented JSON, and POST-only endpoints open in a browser as
the form to POST from, prefilled with a body that works."""

import html
import json
import re

import pytest
from django.test import Client

from predictions.models import Prediction

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# What the browsable API's script sends with the form (rest_framework/js/ajax-form.js).
FORM_ACCEPT = "text/html; q=1.0, */*"


@pytest.fixture
def browser(user) -> Client:
    """A browser signed in with a session, CSRF checks on as in production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def textarea(page: str) -> str:
    match = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert match, page
    return html.unescape(match.group(1)).strip()


def csrf_token(page: str) -> str:
    # The page hands its token to its script in a JSON block (rest_framework/js/csrf.js).
    match = re.search(r'<script type="application/json" id="drf_csrf">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))["csrfToken"]


def test_the_browsable_api_shows_indented_json(browser, db):
    page = browser.get("/api/v1/", HTTP_ACCEPT=BROWSER).content.decode()

    assert "{\n  &quot;predict&quot;: " in page
    assert "&quot;,\n  &quot;predictions&quot;: " in page


@pytest.mark.parametrize(
    ("accept", "indented"),
    [
        ("application/json", False),
        ("*/*", False),
        ("application/json; indent=4", True),
        ("application/json; indent=0", False),
    ],
)
def test_json_is_indented_only_when_the_accept_header_asks(client, db, accept, indented):
    response = client.get("/api/v1/", HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert (b'\n  "predict": ' in response.content) is indented
    assert (b"\n" in response.content) is indented
    assert response.json()["predict"] == "http://testserver/api/v1/predict"


@pytest.mark.usefixtures("demo_models")
def test_a_browser_opening_predict_gets_the_form_with_a_working_example(browser, user):
    page = browser.get("/api/v1/predict", HTTP_ACCEPT=BROWSER)

    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    example = textarea(text)
    assert json.loads(example) == {"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris"}
    assert '<option value="application/json" selected>' in text

    # What the page's script sends when the form's POST button is pressed.
    answer = browser.post(
        "/api/v1/predict",
        example,
        content_type="application/json",
        HTTP_ACCEPT=FORM_ACCEPT,
        HTTP_X_CSRFTOKEN=csrf_token(text),
    )

    assert answer.status_code == 200, answer.content[-2000:]
    assert answer["Content-Type"].startswith("text/html")
    assert "HTTP 200 OK" in answer.content.decode()
    assert "&quot;label&quot;: &quot;setosa&quot;" in answer.content.decode()
    stored = Prediction.objects.get()
    assert stored.owner == user and stored.label == "setosa"


@pytest.mark.usefixtures("demo_models")
@pytest.mark.parametrize(
    ("url", "example"),
    [
        ("/api/v1/predict/ab-test", {"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris"}),
        (
            "/api/v1/predict/batch",
            {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
        ),
        (
            "/api/v1/keys",
            {"name": "laptop", "scopes": ["predict", "read"], "expires_in_days": 90},
        ),
        ("/api/v1/auth/login", {"username": "", "password": ""}),
    ],
)
def test_post_forms_start_from_the_documented_example(browser, url, example):
    page = browser.get(url, HTTP_ACCEPT=BROWSER)

    assert page.status_code == 200
    assert json.loads(textarea(page.content.decode())) == example


@pytest.mark.usefixtures("demo_models")
@pytest.mark.parametrize(
    ("url", "status", "shown"),
    [
        ("/api/v1/predict/batch", 202, "&quot;total_inputs&quot;: 2"),
        ("/api/v1/keys", 201, "&quot;name&quot;: &quot;laptop&quot;"),
    ],
)
def test_the_example_of_a_form_is_accepted_as_it_stands(browser, url, status, shown):
    page = browser.get(url, HTTP_ACCEPT=BROWSER).content.decode()

    answer = browser.post(
        url,
        textarea(page),
        content_type="application/json",
        HTTP_ACCEPT=FORM_ACCEPT,
        HTTP_X_CSRFTOKEN=csrf_token(page),
    )

    assert answer.status_code == status, answer.content[-2000:]
    assert shown in answer.content.decode()


@pytest.mark.usefixtures("demo_models")
def test_a_program_getting_predict_still_gets_405_in_the_error_shape(browser):
    for accept in ("application/json", "*/*"):
        response = browser.get("/api/v1/predict", HTTP_ACCEPT=accept)

        assert response.status_code == 405
        assert response["Allow"] == "POST, OPTIONS"
        assert response.json()["code"] == "method_not_allowed"


def test_a_signed_out_browser_gets_no_form(client, db):
    page = client.get("/api/v1/predict", HTTP_ACCEPT=BROWSER)

    assert page.status_code in (401, 403)
    assert 'name="_content"' not in page.content.decode()
