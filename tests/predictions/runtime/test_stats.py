"""Tests for the significance tests and percentiles behind the version comparison."""

import math

import numpy as np
import pytest

from predictions.runtime.stats import (
    percentile,
    regularized_incomplete_beta,
    student_t_two_sided_p,
    two_proportion_z_test,
    welch_t_test,
)

# --- Two-proportion z-test --------------------------------------------------------------------


def test_z_test_on_90_of_100_vs_80_of_100_matches_the_textbook_value():
    # Pooled rate 0.85, SE = sqrt(0.85 * 0.15 * (1/100 + 1/100)) = 0.050498; z = 0.1 / SE.
    result = two_proportion_z_test(90, 100, 80, 100)

    assert result.z == pytest.approx(1.98030, abs=1e-5)
    assert result.p_value == pytest.approx(0.04767, abs=1e-5)
    assert result.difference == pytest.approx(0.10)


def test_z_test_with_unequal_sample_sizes_uses_the_pooled_standard_error():
    # 45/60 = 0.75 vs 30/50 = 0.6; pooled 75/110; SE = sqrt(p(1-p)(1/60 + 1/50)).
    pooled = 75 / 110
    expected_z = 0.15 / math.sqrt(pooled * (1 - pooled) * (1 / 60 + 1 / 50))

    result = two_proportion_z_test(45, 60, 30, 50)

    assert result.z == pytest.approx(expected_z)
    assert expected_z == pytest.approx(1.6818, abs=1e-4)
    assert result.p_value == pytest.approx(0.0926, abs=1e-4)


def test_z_test_sign_follows_the_order_of_the_arguments():
    forward = two_proportion_z_test(93, 100, 80, 100)
    backward = two_proportion_z_test(80, 100, 93, 100)

    assert forward.z > 0
    assert backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value)
    assert backward.difference == pytest.approx(-forward.difference)


def test_equal_rates_give_z_zero_and_p_one():
    result = two_proportion_z_test(40, 50, 80, 100)

    assert result.z == 0
    assert result.p_value == pytest.approx(1.0)
    assert result.difference == 0


@pytest.mark.parametrize("args", [(0, 0, 5, 10), (5, 10, 0, 0), (0, 0, 0, 0)])
def test_no_samples_on_a_side_is_no_evidence(args):
    result = two_proportion_z_test(*args)

    assert (result.z, result.p_value, result.difference) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("args", [(0, 10, 0, 20), (10, 10, 20, 20)])
def test_all_failures_or_all_successes_is_no_evidence(args):
    result = two_proportion_z_test(*args)

    assert (result.z, result.p_value, result.difference) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("args", [(11, 10, 5, 10), (-1, 10, 5, 10), (5, 10, 1, -1)])
def test_impossible_counts_are_refused(args):
    with pytest.raises(ValueError, match="successes"):
        two_proportion_z_test(*args)


def test_a_large_difference_has_a_tiny_p_value():
    result = two_proportion_z_test(990, 1000, 500, 1000)

    assert result.z > 20
    assert 0 <= result.p_value < 1e-50


# --- Student's t and Welch's test ------------------------------------------------------------


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0, 2.0, 6.3])
def test_t_p_value_with_one_degree_of_freedom_is_the_cauchy_tail(t):
    assert student_t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0, 2.0, 4.3])
def test_t_p_value_with_two_degrees_of_freedom_has_its_closed_form(t):
    assert student_t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t))


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [(2.228139, 10, 0.05), (2.042272, 30, 0.05), (2.763262, 28, 0.01), (1.959964, 1e9, 0.05)],
)
def test_t_p_value_matches_critical_values_from_tables(t, df, p):
    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=1e-6)
    assert student_t_two_sided_p(-t, df) == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize(("x", "a", "b"), [(0.3, 2.5, 1), (0.8, 4, 1), (0.3, 1, 3.5), (0.9, 1, 7)])
def test_incomplete_beta_matches_its_closed_forms(x, a, b):
    expected = x**a if b == 1 else 1 - (1 - x) ** b

    assert regularized_incomplete_beta(x, a, b) == pytest.approx(expected)


def test_welch_t_and_degrees_of_freedom_follow_the_formula():
    a = np.array([0.3, 0.5, 0.2, 0.4, 0.6, 0.35])
    b = np.array([0.6, 0.9, 0.5, 0.8, 1.1, 0.7, 0.75, 0.95])
    va, vb = a.var(ddof=1), b.var(ddof=1)
    se2 = va / len(a) + vb / len(b)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))

    result = welch_t_test(a.mean(), va, len(a), b.mean(), vb, len(b))

    assert result.t == pytest.approx((a.mean() - b.mean()) / math.sqrt(se2))
    assert result.df == pytest.approx(df)
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert result.p_value == pytest.approx(student_t_two_sided_p(result.t, df))
    assert result.p_value < 0.01


@pytest.mark.parametrize("n", [0, 1])
def test_welch_with_fewer_than_two_observations_is_no_evidence(n):
    result = welch_t_test(0.5, 0.1, n, 0.2, 0.1, 10)

    assert (result.t, result.p_value) == (0.0, 1.0)


def test_welch_with_no_spread_and_equal_means_is_no_evidence():
    result = welch_t_test(0.5, 0.0, 5, 0.5, 0.0, 5)

    assert (result.t, result.p_value, result.difference) == (0.0, 1.0, 0.0)


# --- Percentiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 5, 25, 50, 73.3, 95, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_percentile_matches_numpy_linear_interpolation(q, n):
    values = list(np.random.default_rng(n).exponential(size=n))

    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_interpolates_between_neighbours():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([10.0, 20.0], 95) == pytest.approx(19.5)


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_to_100_is_refused(q):
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], q)
