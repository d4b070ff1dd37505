"""End to end: the admin dashboard in a real headless Chromium (Debian's), signed in as staff.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

import time
from collections.abc import Iterator

import pytest
import requests

from tests.servers import Server, chromium, start_server

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium(window_size="1400,2600") as chrome:
        yield chrome


@pytest.fixture(scope="module")
def server(instance, _servers_stopped) -> Iterator[Server]:
    """A server whose web workers (several on production) write their request tallies at once."""
    server = start_server(instance, "dashboard", env={"MLPLATFORM_USAGE_FLUSH_SECONDS": "0"})
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


@pytest.fixture(scope="module")
def traffic(server, instance) -> dict:
    """Predictions of several model versions, one refused request, and a finished batch job."""
    headers = {"X-API-Key": instance.demo_key}

    def predict(**body) -> requests.Response:
        return requests.post(server.url("/api/v1/predict"), json=body, headers=headers, timeout=30)

    for row in (SETOSA, VIRGINICA) * 3:
        assert predict(input_data=row, model="iris").status_code == 200
        assert predict(input_data=row, model="iris", model_version="v1").status_code == 200
    assert predict(input_data=[1, 2], model="iris").status_code == 400
    job = requests.post(
        server.url("/api/v1/predict/batch"),
        json={"inputs": [SETOSA, VIRGINICA] * 20, "model_version": "v1"},
        headers=headers,
        timeout=30,
    ).json()
    deadline = time.monotonic() + 60
    url = server.url(f"/api/v1/predict/batch/{job['job_id']}")
    while requests.get(url, headers=headers, timeout=10).json()["status"] != "completed":
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)
    return job


def values(browser, selector: str) -> list[tuple[str, float]]:
    from selenium.webdriver.common.by import By

    return [
        (element.get_attribute("data-series"), float(element.get_attribute("data-value")))
        for element in browser.find_elements(By.CSS_SELECTOR, selector)
    ]


def test_staff_see_the_dashboard_charts_with_data(browser, server, instance, traffic):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(server.url("/admin/login/?next=/admin/"))
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(instance.passwords["admin"])
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(expected_conditions.title_contains("Control room"))

    link = browser.find_element(By.CSS_SELECTOR, "#dashboard-link caption a")
    assert link.text.lower() == "dashboard"
    link.click()
    WebDriverWait(browser, 20).until(
        expected_conditions.presence_of_element_located((By.ID, "chart-predictions"))
    )
    browser.save_screenshot(str(instance.var_dir / "dashboard.png"))

    assert browser.title.startswith("Dashboard")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) >= 7
    assert all(chart.size["width"] > 100 and chart.size["height"] > 40 for chart in charts)

    requests_ = values(browser, "#chart-requests circle[data-series=requests]")
    assert sum(v for _, v in requests_) >= 14  # 12 predictions, 1 refused, 1 batch submit
    errors = values(browser, "#chart-requests circle[data-series=errors]")
    assert sum(v for _, v in errors) >= 1
    assert any(v > 0 for _, v in values(browser, "#chart-error-rate circle.point"))

    per_version = {}
    for series, value in values(browser, "#chart-predictions circle.point"):
        per_version[series] = per_version.get(series, 0) + value
    assert per_version.get("iris:v1", 0) >= 6
    assert sum(per_version.values()) >= 12

    latency = values(browser, "#chart-latency circle.point")
    assert {"p50", "p95"} <= {series for series, _ in latency}
    assert all(value > 0 for _, value in latency)

    batch = values(browser, "#chart-batch circle[data-series='rows completed']")
    assert sum(v for _, v in batch) >= 40

    share = values(browser, "#chart-ab-share-iris rect.bar")
    observed = {series for series, _ in share}
    assert {"configured %", "observed %"} <= observed
    assert len(share) >= 4  # v1 and v2, configured and observed
    latency_bars = browser.find_elements(By.CSS_SELECTOR, "#chart-ab-latency-iris rect.bar")
    assert latency_bars and all(bar.size["height"] >= 0 for bar in latency_bars)


def test_the_dashboard_is_for_staff_only(server, instance):
    session = requests.Session()
    page = session.get(server.url("/admin/dashboard/"), timeout=10, allow_redirects=False)

    assert page.status_code == 302 and "/admin/login/" in page.headers["Location"]
