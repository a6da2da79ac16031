"""Interval maths and paired tests against published / independently computed values."""

import math

import pytest

from spelltransfer.evaluate.stats import compare_paired, mcnemar_exact_p, paired_gain_interval, wilson_interval


def test_wilson_matches_newcombe_1998_examples():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table II.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    assert wilson_interval(1, 29) == pytest.approx((0.0061, 0.1718), abs=5e-5)


def test_wilson_edges_and_errors():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - wilson_interval(0, 10)[1])
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_newcombe_paired_interval_matches_reference():
    # R contingencytables::Newcombe_square_and_add_CI_paired_2x2, Cavo et al. (2012) table
    # [[59, 6], [16, 80]]: estimate -0.0621, 95% CI -0.1186 to -0.0046 for p(A) - p(B).
    # Our gain is p(B) - p(A), so the interval flips sign.
    lo, hi = paired_gain_interval(both=59, a_only=6, b_only=16, neither=80)
    assert (lo, hi) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    # swapping the models mirrors the interval
    lo2, hi2 = paired_gain_interval(both=59, a_only=16, b_only=6, neither=80)
    assert (lo2, hi2) == pytest.approx((-hi, -lo), abs=1e-12)


def test_paired_interval_with_no_discordance_is_centered_on_zero():
    lo, hi = paired_gain_interval(both=30, a_only=0, b_only=0, neither=70)
    assert lo < 0 < hi and lo == pytest.approx(-hi)


def _exact_binomial_two_sided(k, n):
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("a_only", "b_only"), [(6, 16), (0, 5), (3, 3), (1, 12), (20, 9)])
def test_mcnemar_exact_matches_binomial_sum(a_only, b_only):
    assert mcnemar_exact_p(a_only, b_only) == pytest.approx(_exact_binomial_two_sided(b_only, a_only + b_only), rel=1e-9)


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar_exact_p(0, 0) == 1.0


def test_compare_paired_counts_table():
    a = [True, True, False, False, True, False]
    b = [True, False, True, True, True, False]
    paired = compare_paired(a, b)
    assert (paired.both_right, paired.a_only, paired.b_only, paired.both_wrong) == (2, 1, 2, 1)
    assert paired.gain == pytest.approx(1 / 6)
    assert paired.accuracy_a == pytest.approx(0.5) and paired.accuracy_b == pytest.approx(4 / 6)
    assert paired.mcnemar_p == pytest.approx(1.0)
    assert paired.ci95[0] < paired.gain < paired.ci95[1]
    with pytest.raises(ValueError):
        compare_paired([True], [True, False])
