"""The admin dashboard page and its server-rendered SVG charts (the browser test: e2e)."""

import re

import pytest

from mlplatform.charts import Series, bar_chart, line_chart, nice_ceiling

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]


def points(html: str, chart: str) -> list[tuple[str, float]]:
    svg = re.search(rf'<svg[^>]*id="{chart}".*?</svg>', html, re.S).group(0)
    return [
        (series, float(value))
        for series, value in re.findall(r'data-series="([^"]*)"[^>]*data-value="([^"]*)"', svg)
    ]


@pytest.mark.parametrize("hours", ["1", "6", "24", "168", "oops"])
def test_the_dashboard_draws_every_chart_from_stored_traffic(key_client, admin_client, hours):
    for version in ("v1", "v2", "v1"):
        key_client.post(
            "/api/v1/predict", {"input_data": SETOSA, "model_version": version}, format="json"
        )
    key_client.post("/api/v1/predict", {"input_data": [1]}, format="json")

    html = admin_client.get(f"/admin/dashboard/?hours={hours}").content.decode()

    by_version = {}
    for series, value in points(html, "chart-predictions"):
        by_version[series] = by_version.get(series, 0) + value
    assert by_version == {"iris:v1": 2, "iris:v2": 1}
    assert sum(v for s, v in points(html, "chart-requests") if s == "requests") == 4
    assert sum(v for s, v in points(html, "chart-requests") if s == "errors") == 1
    assert [v for _, v in points(html, "chart-error-rate")] == [25.0]
    assert {s for s, _ in points(html, "chart-latency")} == {"p50", "p95"}
    shares = dict((s, v) for s, v in points(html, "chart-ab-share-iris") if s == "configured %")
    assert shares == {"configured %": 50.0}
    assert sum(v for _, v in points(html, "chart-batch")) == 0
    assert "No job completed in this window." in html


def test_the_dashboard_is_linked_from_the_admin_index_and_needs_staff(admin_client, client):
    assert 'href="/admin/dashboard/"' in admin_client.get("/admin/").content.decode()
    assert client.get("/admin/dashboard/").status_code == 302


def test_chart_text_is_escaped_and_gaps_are_skipped():
    svg = line_chart("c", "<b>", ["a", "b", "c"], [Series('x"><script>', [1, None, 3])])

    assert "<script>" not in svg and "&lt;b&gt;" in svg
    assert svg.count('class="point"') == 2
    assert 'data-kind="empty"' in bar_chart("e", "none", ["a"], [Series("s", [None])])


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.07, 0.1), (3, 5), (17, 20), (24, 25), (100, 100)]
)
def test_axes_end_at_a_round_number(value, ceiling):
    assert nice_ceiling(value) == pytest.approx(ceiling)
