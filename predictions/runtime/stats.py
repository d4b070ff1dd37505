"""Small statistics for comparing model versions: significance tests and percentiles."""

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ZTest:
    """A two-sided two-proportion z-test; ``difference`` is rate a minus rate b."""

    z: float
    p_value: float
    difference: float


@dataclass(frozen=True, slots=True)
class TTest:
    """A two-sided Welch t-test; ``difference`` is mean a minus mean b."""

    t: float
    df: float
    p_value: float
    difference: float


NO_EVIDENCE = ZTest(z=0.0, p_value=1.0, difference=0.0)


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> ZTest:
    """Test whether two success rates differ, with the pooled standard error.

    With no trials on a side there is nothing to compare (z = 0, p = 1, difference 0). When the
    pooled rate is 0 or 1 both rates are equal and the standard error is 0: also z = 0, p = 1.
    """
    for successes, n in ((successes_a, n_a), (successes_b, n_b)):
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n_a == 0 or n_b == 0:
        return NO_EVIDENCE
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return ZTest(z=0.0, p_value=1.0, difference=rate_a - rate_b)
    z = (rate_a - rate_b) / math.sqrt(variance)
    return ZTest(z=z, p_value=math.erfc(abs(z) / math.sqrt(2)), difference=rate_a - rate_b)


def welch_t_test(
    mean_a: float, variance_a: float, n_a: int, mean_b: float, variance_b: float, n_b: int
) -> TTest:
    """Test whether two means differ without assuming equal variances (sample variances given).

    Each side needs at least two observations; otherwise, or when both variances are 0, there
    is no evidence (t = 0, p = 1).
    """
    if variance_a < 0 or variance_b < 0:
        raise ValueError("variances must be non-negative")
    difference = mean_a - mean_b if n_a and n_b else 0.0
    if n_a < 2 or n_b < 2:
        return TTest(t=0.0, df=0.0, p_value=1.0, difference=difference)
    share_a, share_b = variance_a / n_a, variance_b / n_b
    standard_error_sq = share_a + share_b
    if standard_error_sq <= 0:
        return TTest(t=0.0, df=float(n_a + n_b - 2), p_value=1.0, difference=difference)
    t = difference / math.sqrt(standard_error_sq)
    # Welch–Satterthwaite; a side with zero variance contributes nothing to the denominator.
    denominator = share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1)
    df = standard_error_sq**2 / denominator
    return TTest(t=t, df=df, p_value=student_t_two_sided_p(t, df), difference=difference)


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / (df + t * t), df / 2, 0.5)


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes (section 6.4)."""
    if not 0 <= x <= 1:
        raise ValueError(f"x must be in [0, 1], got {x!r}")
    if x in (0, 1):
        return float(x)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast only below the mean of the distribution; use the symmetry
    # I_x(a, b) = 1 - I_(1-x)(b, a) above it.
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1 - front * _beta_continued_fraction(1 - x, b, a) / b


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < epsilon:
            break
    return result


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0 to 100), interpolated linearly as numpy does; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q!r}")
    if len(values) == 0:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction
