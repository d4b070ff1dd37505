"""End to end: the pages people open, in a real headless Chromium (Debian's) that can reach no
host but the platform's, signed in with a session.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.servers import chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser(server, instance) -> Iterator:
    """Chromium signed in as the demo user, resolving no name but the server's address."""
    from selenium.webdriver.common.by import By

    with chromium() as chrome:
        chrome.get(server.url("/api-auth/login/?next=/api/v1/"))
        chrome.find_element(By.ID, "id_username").send_keys("demo")
        chrome.find_element(By.ID, "id_password").send_keys(instance.passwords["demo"])
        chrome.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
        # Signed in once the form's post has landed on the API root (a page asked for before
        # then would go out without the session, or cancel the post).
        wait_for_text(chrome, ".page-header, h1", "Api Root")
        yield chrome


def wait_for_text(browser, selector: str, text: str, timeout: float = 30) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def shown(driver):
        found = [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]
        return next((t for t in found if text in t), False)

    # An element found as the page is replaced (a form posted) is read again on the new page.
    wait = WebDriverWait(browser, timeout, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(shown)


def test_graphiql_renders_and_runs_a_query_without_a_cdn(browser, server, instance):
    from selenium.webdriver.common.by import By

    browser.get(server.url("/graphql?q=" + quote("{ models { name } }")))
    wait_for_text(browser, ".graphiql-container", "models")
    browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()

    result = wait_for_text(browser, ".result-window", '"iris"')
    browser.save_screenshot(str(instance.var_dir / "graphiql.png"))

    assert '"name": "digits"' in result


def test_the_predict_form_posts_its_example_and_shows_the_prediction(browser, server, instance):
    from selenium.webdriver.common.by import By

    browser.get(server.url("/api/v1/predict"))
    example = browser.find_element(By.CSS_SELECTOR, "#post-generic-content-form textarea")
    assert json.loads(example.get_attribute("value")) == {
        "input_data": [5.1, 3.5, 1.4, 0.2],
        "model": "iris",
    }
    browser.find_element(By.CSS_SELECTOR, "#post-generic-content-form button").click()

    shown = wait_for_text(browser, ".response-info", "prediction_id")
    browser.save_screenshot(str(instance.var_dir / "predict-form.png"))

    assert "HTTP 200 OK" in shown and '"label": "setosa"' in shown
    prediction_id = json.loads(shown[shown.index("{") :])["prediction_id"]
    stored = requests.get(
        server.url(f"/api/v1/predict/{prediction_id}"),
        headers={"X-API-Key": instance.demo_key},
        timeout=10,
    )
    assert stored.status_code == 200 and stored.json()["label"] == "setosa"


@pytest.mark.parametrize("accept", ["application/json", "*/*", None])
def test_programs_getting_predict_still_get_405(server, instance, accept):
    headers = {"X-API-Key": instance.demo_key} | ({"Accept": accept} if accept else {})

    response = requests.get(server.url("/api/v1/predict"), headers=headers, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert response.json()["code"] == "method_not_allowed"
