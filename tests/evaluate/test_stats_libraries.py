"""The intervals now come from scipy and statsmodels; they give the numbers the closed forms
this package used to compute itself (kept here as the reference), on every proportion up to n = 20 and a few larger."""

from __future__ import annotations

import math

import pytest

from spelltransfer.evaluate.stats import newcombe_interval, paired_gain_interval, wilson_interval

Z95 = 1.959963984540054


def _wilson_closed_form(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def _newcombe_closed_form(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    p_a, p_b = successes_a / n_a, successes_b / n_b
    low_a, high_a = _wilson_closed_form(successes_a, n_a)
    low_b, high_b = _wilson_closed_form(successes_b, n_b)
    lower = p_a - p_b - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    upper = p_a - p_b + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def _paired_before(both: int, a_only: int, b_only: int, neither: int) -> tuple[float, float]:
    """paired_gain_interval as it was, over the closed-form Wilson."""
    n = both + a_only + b_only + neither
    a_right, b_right = both + a_only, both + b_only
    p_a, p_b = a_right / n, b_right / n
    lo_a, hi_a = _wilson_closed_form(a_right, n)
    lo_b, hi_b = _wilson_closed_form(b_right, n)
    margins = a_right * (n - a_right) * b_right * (n - b_right)
    phi = 0.0
    if margins > 0:
        cross = both * neither - a_only * b_only
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    lower = p_b - p_a - math.sqrt(max(0.0, (p_b - lo_b) ** 2 + (hi_a - p_a) ** 2 - 2 * phi * (p_b - lo_b) * (hi_a - p_a)))
    upper = p_b - p_a + math.sqrt(max(0.0, (hi_b - p_b) ** 2 + (p_a - lo_a) ** 2 - 2 * phi * (hi_b - p_b) * (p_a - lo_a)))
    return max(-1.0, lower), min(1.0, upper)


def test_wilson_from_scipy_equals_the_closed_form():
    for n in range(1, 21):
        for k in range(n + 1):
            assert wilson_interval(k, n) == pytest.approx(_wilson_closed_form(k, n), abs=1e-12), (k, n)
    for k, n in [(0, 300), (1, 300), (271, 300), (300, 300), (12345, 20000)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson_closed_form(k, n), abs=1e-12), (k, n)
    lo, hi = wilson_interval(0, 7)
    assert lo == 0.0 and isinstance(lo, float) and isinstance(hi, float)
    assert wilson_interval(7, 7)[1] == 1.0


def test_newcombe_from_statsmodels_equals_the_closed_form():
    cases = [(a, na, b, nb) for na in (1, 4, 10, 23) for nb in (1, 7, 30) for a in range(na + 1) for b in range(nb + 1)]
    cases += [(56, 70, 48, 80), (271, 300, 120, 300), (0, 300, 300, 300)]
    for case in cases:
        got = newcombe_interval(*case)
        assert got == pytest.approx(_newcombe_closed_form(*case), abs=1e-12), case
        assert all(isinstance(x, float) for x in got)


def test_paired_interval_over_scipy_wilson_keeps_its_reference_numbers():
    # The figures the closed-form Wilson gave before the change (full precision).
    assert paired_gain_interval(59, 6, 16, 80) == pytest.approx((0.004625113933050047, 0.11862119563870992), abs=1e-12)
    assert paired_gain_interval(0, 0, 0, 5) == pytest.approx((-0.43448246478317476, 0.43448246478317476), abs=1e-12)
    assert paired_gain_interval(3, 0, 7, 1) == pytest.approx(_paired_before(3, 0, 7, 1), abs=1e-12)
