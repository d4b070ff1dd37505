"""The version comparison: the selector's figures and the admin page that puts them in words."""

import html
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from predictions.catalogue import comparison as comparison_module
from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.comparison import model_comparison
from predictions.catalogue.versions import model_version_create
from predictions.models import Feedback, MLModel, ModelVersion, Prediction, ShadowPrediction

pytestmark = pytest.mark.usefixtures("demo_models")
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def iris() -> MLModel:
    return MLModel.objects.get(name="iris")


def version(label: str, model: str = "iris") -> ModelVersion:
    return ModelVersion.objects.get(model__name=model, label=label)


def compare_url(model: MLModel) -> str:
    return f"/admin/predictions/mlmodel/{model.pk}/compare/"


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def make_predictions(
    owner: User,
    model_version: ModelVersion,
    *,
    seconds: list[float],
    correct: int = 0,
    with_feedback: int = 0,
    cached: int = 0,
    age: timedelta = timedelta(),
) -> list[Prediction]:
    """Stored predictions, newest last in ``seconds``; feedback on the first ``with_feedback``."""
    now = timezone.now() - age
    n = len(seconds)
    predictions = Prediction.objects.bulk_create(
        Prediction(
            owner=owner,
            model_version=model_version,
            input=IRIS_ROW,
            output=[0.9, 0.05, 0.05],
            label="setosa",
            confidence=0.9,
            processing_time=took,
            routing="split",
            cached=i < cached,
            created_at=now - timedelta(seconds=n - i),
        )
        for i, took in enumerate(seconds)
    )
    Feedback.objects.bulk_create(
        Feedback(
            prediction=prediction,
            actual_label="setosa" if i < correct else "versicolor",
            correct=i < correct,
        )
        for i, prediction in enumerate(predictions[:with_feedback])
    )
    return predictions


@pytest.fixture
def shadow_v3(demo_models) -> ModelVersion:
    """A third iris version, active and shadowing the others (its answers are never returned)."""
    created = model_version_create(
        model=iris(), label="v3", artifact=artifact_bytes(version("v1")), status="active"
    )
    ModelVersion.objects.filter(pk=created.pk).update(is_shadow=True)
    return version("v3")


@pytest.fixture
def ab_test(user, shadow_v3):
    """v1: 100 predictions taking 1..100 ms, 80 of 100 right; v2: 300 taking 2 ms, 93 of 100
    right, 30 cached; v3 shadows 10 of v2's answers: 7 agree, 2 disagree, 1 failed."""
    make_predictions(
        user,
        version("v1"),
        seconds=[(i + 1) / 1000 for i in range(100)],
        with_feedback=100,
        correct=80,
    )
    served = make_predictions(
        user, version("v2"), seconds=[0.002] * 300, with_feedback=100, correct=93, cached=30
    )
    # Outside a 30-day window: must not count anywhere.
    make_predictions(
        user,
        version("v1"),
        seconds=[5.0] * 50,
        with_feedback=50,
        correct=0,
        age=timedelta(days=40),
    )
    ShadowPrediction.objects.bulk_create(
        ShadowPrediction(
            primary=primary,
            model_version=shadow_v3,
            output=[0.9, 0.05, 0.05],
            label="setosa",
            processing_time=0.001,
            agrees=agrees,
        )
        for primary, agrees in zip(served, [True] * 7 + [False] * 2 + [None], strict=False)
    )


def last_30_days() -> dict:
    return {"since": timezone.now() - timedelta(days=30)}


def rows_by_label(result) -> dict:
    return {row.label: row for row in result.rows}


# --- The selector -----------------------------------------------------------------------------


@pytest.mark.usefixtures("ab_test")
def test_comparison_counts_traffic_and_shares_per_version_in_the_window():
    result = model_comparison(iris(), **last_30_days())
    rows = rows_by_label(result)

    assert [row.label for row in result.rows] == ["v1", "v2", "v3"]
    assert result.total_predictions == 400
    assert (rows["v1"].predictions, rows["v2"].predictions, rows["v3"].predictions) == (100, 300, 0)
    assert rows["v1"].observed_share == pytest.approx(0.25)
    assert rows["v2"].observed_share == pytest.approx(0.75)
    assert rows["v3"].observed_share == 0
    assert rows["v1"].configured_share == pytest.approx(0.5)
    assert rows["v2"].configured_share == pytest.approx(0.5)
    assert rows["v3"].configured_share is None  # a shadow takes no share of the split
    assert (rows["v1"].cached, rows["v2"].cached) == (0, 30)
    assert rows["v3"].is_shadow and not rows["v2"].is_shadow


@pytest.mark.usefixtures("ab_test")
def test_comparison_measures_latency_in_milliseconds():
    rows = rows_by_label(model_comparison(iris(), **last_30_days()))

    assert rows["v1"].latency_p50_ms == pytest.approx(50.5)
    assert rows["v1"].latency_p95_ms == pytest.approx(95.05)
    assert rows["v1"].latency_mean_ms == pytest.approx(50.5)
    assert rows["v1"].latency_sample == 100
    assert rows["v2"].latency_p50_ms == pytest.approx(2.0)
    assert rows["v3"].latency_p50_ms is None


@pytest.mark.usefixtures("ab_test")
def test_latency_comes_from_the_latest_predictions_only(monkeypatch):
    monkeypatch.setattr(comparison_module, "LATENCY_SAMPLE", 10)

    rows = rows_by_label(model_comparison(iris(), **last_30_days()))

    # v1's latest ten took 91..100 ms.
    assert rows["v1"].latency_sample == 10
    assert rows["v1"].latency_p50_ms == pytest.approx(95.5)
    assert rows["v1"].latency_mean_ms == pytest.approx(95.5)
    assert rows["v1"].predictions == 100  # counts are not sampled


@pytest.mark.usefixtures("ab_test")
def test_comparison_reports_live_accuracy_shadow_agreement_and_holdout_accuracy():
    rows = rows_by_label(model_comparison(iris(), **last_30_days()))

    assert (rows["v1"].feedback, rows["v1"].correct) == (100, 80)
    assert rows["v1"].live_accuracy == pytest.approx(0.80)
    assert rows["v2"].live_accuracy == pytest.approx(0.93)
    assert rows["v3"].live_accuracy is None
    assert rows["v1"].mean_absolute_error is None
    assert rows["v3"].shadow_comparisons == 9  # the failed one is not a comparison
    assert rows["v3"].shadow_agreement == pytest.approx(7 / 9)
    assert rows["v2"].shadow_agreement is None
    assert rows["v1"].holdout_accuracy == version("v1").metrics["holdout_accuracy"]
    assert rows["v1"].holdout_accuracy is not None


@pytest.mark.usefixtures("ab_test")
def test_the_top_two_versions_are_tested_better_first():
    significance = model_comparison(iris(), **last_30_days()).significance

    assert significance.metric == "accuracy"
    assert (significance.better.label, significance.worse.label) == ("v2", "v1")
    # pooled 0.865: z = 0.13 / sqrt(0.865 * 0.135 * 0.02) = 2.690
    assert significance.test.z == pytest.approx(2.690, abs=1e-3)
    assert significance.p_value == pytest.approx(0.00714, abs=1e-4)


@pytest.mark.usefixtures("ab_test")
def test_without_a_window_old_predictions_count_too():
    rows = rows_by_label(model_comparison(iris()))

    assert rows["v1"].predictions == 150
    assert rows["v1"].feedback == 150
    assert rows["v1"].live_accuracy == pytest.approx(80 / 150)


@pytest.mark.usefixtures("ab_test")
def test_comparison_takes_a_handful_of_queries(django_assert_max_num_queries):
    model = iris()

    with django_assert_max_num_queries(4):
        model_comparison(model, **last_30_days())


def test_a_shadow_and_a_version_without_feedback_are_not_tested(user, shadow_v3):
    make_predictions(user, version("v1"), seconds=[0.001] * 20, with_feedback=20, correct=15)
    make_predictions(user, version("v2"), seconds=[0.001] * 20)
    ShadowPrediction.objects.create(
        primary=Prediction.objects.first(), model_version=shadow_v3, agrees=True
    )

    result = model_comparison(iris())

    assert result.significance is None


def test_a_model_without_predictions_has_rows_but_no_figures():
    result = model_comparison(iris())
    rows = rows_by_label(result)

    assert result.total_predictions == 0
    assert rows["v1"].predictions == 0
    assert rows["v1"].observed_share is None
    assert rows["v1"].latency_p50_ms is None
    assert rows["v1"].live_accuracy is None
    assert result.significance is None


def test_regressors_are_judged_by_mean_absolute_error_with_welchs_test(user):
    model = MLModel.objects.create(
        name="house-prices", task=MLModel.Task.REGRESSION, feature_names=["rooms"]
    )
    for label in ("a", "b"):
        # The selector only reads: an artifact that would not load does not matter here.
        ModelVersion.objects.create(
            model=model, label=label, status="active", traffic_weight=1, artifact="", checksum="-"
        )
    errors = {"a": [1.0, 1.2, 0.8, 1.1, 0.9, 1.0], "b": [0.5, 0.6, 0.4, 0.5, 0.55, 0.45]}
    for label, values in errors.items():
        predictions = make_predictions(user, version(label, "house-prices"), seconds=[0.001] * 6)
        Feedback.objects.bulk_create(
            Feedback(prediction=p, actual_value=1.0, absolute_error=e)
            for p, e in zip(predictions, values, strict=True)
        )

    result = model_comparison(model)
    rows = rows_by_label(result)

    assert rows["a"].mean_absolute_error == pytest.approx(1.0)
    assert rows["b"].mean_absolute_error == pytest.approx(0.5)
    assert rows["a"].absolute_error_variance == pytest.approx(0.02)
    assert rows["a"].live_accuracy is None
    assert rows["a"].configured_share == pytest.approx(0.5)
    significance = result.significance
    assert significance.metric == "mean_absolute_error"
    assert (significance.better.label, significance.worse.label) == ("b", "a")
    assert significance.test.t < 0  # b's errors are smaller
    assert significance.p_value < 0.001


# --- The admin page ---------------------------------------------------------------------------


@pytest.mark.usefixtures("ab_test")
def test_the_page_shows_each_version_side_by_side_and_a_significant_verdict(admin_client):
    response = admin_client.get(compare_url(iris()))
    text = page_text(response)

    assert response.status_code == 200
    assert "Compare versions of iris" in text
    assert (
        "v2 is more accurate than v1 (93.0% vs 80.0% on 100 and 100 answers with feedback). "
        "The difference is statistically significant (p = 0.0071): it is unlikely to be chance."
    ) in text
    assert "z = 2.69" in text
    table = dict(response.context["table"])
    assert table["Observed share"] == ["25.0%", "75.0%", "0.0%"]
    assert table["Configured share"] == ["50.0%", "50.0%", "—"]
    assert table["Live accuracy"] == ["80.0%", "93.0%", "—"]
    assert table["Latency p50"] == ["50.5 ms", "2.00 ms", "—"]
    assert table["Shadow agreement"] == ["—", "—", "77.8% of 9"]
    assert table["Answered from cache"] == ["0", "30", "0"]
    for cell in ["77.8% of 9", "50.5 ms", "25.0%", "75.0%"]:
        assert cell in text
    assert f'href="/admin/predictions/mlmodel/{iris().pk}/change/"' in text  # breadcrumbs


def test_the_page_says_when_the_difference_may_be_chance(admin_client, user):
    make_predictions(user, version("v1"), seconds=[0.001] * 10, with_feedback=10, correct=8)
    make_predictions(user, version("v2"), seconds=[0.001] * 10, with_feedback=10, correct=9)

    text = page_text(admin_client.get(compare_url(iris())))

    assert "v2 is more accurate than v1 (90.0% vs 80.0% on 10 and 10 answers with feedback)" in text
    assert "The difference is not statistically significant yet (p = 0.53)" in text
    assert "collect more feedback before deciding" in text


def test_the_page_says_when_two_versions_are_equally_accurate(admin_client, user):
    make_predictions(user, version("v1"), seconds=[0.001] * 10, with_feedback=10, correct=8)
    make_predictions(user, version("v2"), seconds=[0.001] * 20, with_feedback=20, correct=16)

    text = page_text(admin_client.get(compare_url(iris())))

    assert "v2 and v1 are equally accurate (80.0% vs 80.0% on 20 and 10 answers" in text
    assert "z = 0.00, p = 1" in text


def test_the_page_says_when_there_is_not_enough_feedback(admin_client, user):
    make_predictions(user, version("v1"), seconds=[0.001] * 10)

    response = admin_client.get(compare_url(iris()))

    assert response.status_code == 200
    assert "Not enough feedback to compare: at least two versions need feedback." in page_text(
        response
    )


@pytest.mark.usefixtures("ab_test")
def test_the_window_follows_the_days_parameter(admin_client):
    recent = admin_client.get(compare_url(iris()), {"days": "30"})
    everything = admin_client.get(compare_url(iris()), {"days": "365"})

    assert dict(recent.context["table"])["Predictions"] == ["100", "300", "0"]
    assert dict(everything.context["table"])["Predictions"] == ["150", "300", "0"]
    assert everything.context["days"] == 365


@pytest.mark.parametrize("days", ["abc", "0", "-3", "1e9", "99999999999999999999"])
def test_a_bad_days_parameter_falls_back_to_30_days(admin_client, days):
    response = admin_client.get(compare_url(iris()), {"days": days})

    assert response.status_code == 200
    assert response.context["days"] == 30


def test_the_model_change_page_links_to_the_comparison(admin_client):
    model = iris()

    change_page = page_text(admin_client.get(f"/admin/predictions/mlmodel/{model.pk}/change/"))
    add_page = page_text(admin_client.get("/admin/predictions/mlmodel/add/"))

    assert f'href="{compare_url(model)}"' in change_page
    assert "Compare versions" in change_page
    assert "/history/" in change_page  # next to History, which stays
    assert "Compare versions" not in add_page


def test_users_who_are_not_staff_are_sent_to_the_login(client, user):
    client.force_login(user)

    response = client.get(compare_url(iris()))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_without_permission_to_view_models_are_refused(client, staff):
    client.force_login(staff)

    response = client.get(compare_url(iris()))

    assert response.status_code == 403


@pytest.mark.parametrize("object_id", ["999999", "not-a-number"])
def test_an_unknown_model_is_404(admin_client, object_id):
    response = admin_client.get(f"/admin/predictions/mlmodel/{object_id}/compare/")

    assert response.status_code == 404
