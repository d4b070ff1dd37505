"""Tests for weighted choice and stable hashing to [0, 1)."""

import math

import pytest

from predictions.runtime.routing import pick_weighted, stable_unit


def test_pick_weighted_splits_the_unit_interval_by_cumulative_weight():
    choices = [("a", 1.0), ("b", 3.0)]

    assert pick_weighted(choices, 0.0) == "a"
    assert pick_weighted(choices, 0.2499) == "a"
    assert pick_weighted(choices, 0.25) == "b"
    assert pick_weighted(choices, 0.9999) == "b"


def test_pick_weighted_distribution_follows_the_weights():
    choices = [("a", 10), ("b", 30), ("c", 60)]
    n = 10_000

    picks = [pick_weighted(choices, i / n) for i in range(n)]

    assert {k: picks.count(k) for k in "abc"} == {"a": 1000, "b": 3000, "c": 6000}


@pytest.mark.parametrize("u", [0.0, 0.3, 0.5, 0.9, math.nextafter(1.0, 0.0)])
def test_a_zero_weight_choice_is_never_picked(u):
    choices = [("off", 0.0), ("a", 1.0), ("also-off", 0), ("b", 1.0), ("last-off", 0.0)]

    assert pick_weighted(choices, u) in {"a", "b"}


def test_u_just_below_one_picks_the_last_weighted_choice_despite_rounding():
    choices = [("a", 0.1), ("b", 0.2), ("c", 0.7)]

    assert pick_weighted(choices, math.nextafter(1.0, 0.0)) == "c"


@pytest.mark.parametrize(
    ("choices", "u", "message"),
    [
        ([("a", 0.0), ("b", 0)], 0.5, "at least one choice needs a positive weight"),
        ([], 0.5, "at least one choice needs a positive weight"),
        ([("a", -1.0), ("b", 2.0)], 0.5, "weights must be finite and non-negative"),
        ([("a", math.nan)], 0.5, "weights must be finite and non-negative"),
        ([("a", 1.0)], 1.0, r"u must be in \[0, 1\)"),
        ([("a", 1.0)], -0.1, r"u must be in \[0, 1\)"),
    ],
)
def test_if_weights_or_u_are_invalid_then_value_error(choices, u, message):
    with pytest.raises(ValueError, match=message):
        pick_weighted(choices, u)


def test_stable_unit_is_fixed_for_a_key():
    # Pinned: sticky splits must not move between releases, processes or machines.
    # sha256("user-42") starts 6d894aa3ee802549; its top 53 bits / 2**53 give this value.
    assert stable_unit("user-42") == stable_unit("user-42")
    assert stable_unit("user-42") == 0.4278761530135857


def test_stable_unit_spreads_keys_over_the_unit_interval():
    values = [stable_unit(f"user-{i}") for i in range(10_000)]

    assert all(0 <= v < 1 for v in values)
    assert len(set(values)) == len(values)
    assert sum(v < 0.5 for v in values) == pytest.approx(5000, abs=200)
