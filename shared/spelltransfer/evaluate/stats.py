"""Uncertainty for accuracies: Wilson intervals, and paired comparisons of two models.

Two models evaluated on the *same* items are compared item by item: only the items where they
disagree (discordant pairs) carry information about which is better. The gain interval is
Newcombe's square-and-add interval for paired proportions (Newcombe 1998, method 10; the same
formula as R's contingencytables::Newcombe_square_and_add_CI_paired_2x2), the test is McNemar's
exact test (a binomial test on the discordant pairs).

Libraries where they have the method: Wilson from scipy (``binomtest(...).proportion_ci``), the
independent-samples Newcombe interval from statsmodels (``confint_proportions_2indep``, method
``newcomb``). statsmodels has no paired-proportions difference interval (only Nam's paired
*ratio* interval and the McNemar test), so the paired one below is Newcombe's formula over
scipy's Wilson bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; sound at 0 % and 100 % where Wald collapses."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..n={n}")
    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def newcombe_interval(successes_a: int, n_a: int, successes_b: int, n_b: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Interval for p_a - p_b of two independent proportions: Newcombe's hybrid score interval
    (Newcombe 1998, method 10), built from the two Wilson intervals."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    lower, upper = confint_proportions_2indep(successes_a, n_a, successes_b, n_b, method="newcomb",
                                              compare="diff", alpha=1 - confidence)
    return max(-1.0, float(lower)), min(1.0, float(upper))


@dataclass(frozen=True)
class PairedComparison:
    """B against A on the same n items. ``gain`` = accuracy(B) - accuracy(A).

    ``a_only``: items only A got right; ``b_only``: items only B got right.
    """

    n: int
    accuracy_a: float
    accuracy_b: float
    gain: float
    ci95: tuple[float, float]
    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    mcnemar_p: float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95"] = list(self.ci95)
        return data


def paired_gain_interval(both: int, a_only: int, b_only: int, neither: int,
                         confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's interval for accuracy(B) - accuracy(A) from the paired 2x2 table."""
    n = both + a_only + b_only + neither
    if n <= 0:
        raise ValueError("a paired comparison needs n >= 1")
    a_right, b_right = both + a_only, both + b_only
    p_a, p_b = a_right / n, b_right / n
    lo_a, hi_a = wilson_interval(a_right, n, confidence)
    lo_b, hi_b = wilson_interval(b_right, n, confidence)
    # Correlation between the two accuracies, with Newcombe's continuity correction.
    margins = a_right * (n - a_right) * b_right * (n - b_right)
    phi = 0.0
    if margins > 0:
        cross = both * neither - a_only * b_only
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    gain = p_b - p_a
    lower = gain - math.sqrt(max(0.0, (p_b - lo_b) ** 2 + (hi_a - p_a) ** 2 - 2 * phi * (p_b - lo_b) * (hi_a - p_a)))
    upper = gain + math.sqrt(max(0.0, (hi_b - p_b) ** 2 + (p_a - lo_a) ** 2 - 2 * phi * (hi_b - p_b) * (p_a - lo_a)))
    return max(-1.0, lower), min(1.0, upper)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b_only, discordant, 0.5, alternative="two-sided").pvalue)


def compare_paired(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedComparison:
    """Compare two models' per-item correctness on the same items, in the same order."""
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired results differ in length: {len(correct_a)} vs {len(correct_b)}")
    if not correct_a:
        raise ValueError("nothing to compare: no paired items")
    both = sum(1 for a, b in zip(correct_a, correct_b) if a and b)
    a_only = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    b_only = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    neither = len(correct_a) - both - a_only - b_only
    n = len(correct_a)
    return PairedComparison(
        n=n,
        accuracy_a=(both + a_only) / n,
        accuracy_b=(both + b_only) / n,
        gain=(b_only - a_only) / n,
        ci95=paired_gain_interval(both, a_only, b_only, neither),
        both_right=both,
        a_only=a_only,
        b_only=b_only,
        both_wrong=neither,
        mcnemar_p=mcnemar_exact_p(a_only, b_only),
    )
