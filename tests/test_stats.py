"""core.stats against scipy.stats, the independent implementation it replaces (issue 25: core must not import
scipy.stats): quantiles, the two-sided binomial test and the two-sided Mann-Whitney U test over many random
cases, ties and edge cases included."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as reference

from core import config, stats
from core.errors import InvalidParameterError

RTOL = 1e-9  # both sides evaluate the same special functions, in different orders


def test_quantiles_match_scipy_stats():
    rng = np.random.default_rng(0)
    for q in [*rng.uniform(1e-6, 1 - 1e-6, 200), 0.5, 0.975, 0.001]:
        df, a, b = rng.integers(1, 500), rng.integers(1, 10_000), rng.integers(1, 10_000)
        assert stats.t_quantile(q, df) == pytest.approx(reference.t.ppf(q, df), rel=RTOL, abs=1e-12)
        assert stats.beta_quantile(q, a, b) == pytest.approx(reference.beta.ppf(q, a, b), rel=RTOL)
        assert stats.normal_quantile(q) == pytest.approx(reference.norm.ppf(q), rel=RTOL, abs=1e-12)


def binomial_cases() -> list[tuple[int, int, float]]:
    """Random (k, n, p) on both sides of the mean, and the edges: k = 0, k = n, n = 1, k at the mean."""
    rng = np.random.default_rng(1)
    cases = [(0, 1, 0.5), (1, 1, 0.5), (0, 10, 0.5), (10, 10, 0.5), (5, 10, 0.5), (0, 100_000, 0.5)]
    cases += [(100_000, 100_000, 0.5), (50_000, 100_000, 0.5), (3, 7, 0.3), (0, 1, 0.9), (1, 1, 0.1)]
    for _ in range(400):
        n = int(rng.choice([rng.integers(1, 30), rng.integers(30, 2000), rng.integers(2000, 200_000)]))
        p = 0.5 if rng.random() < 0.5 else float(rng.uniform(0.01, 0.99))
        k = int(np.clip(rng.normal(n * p, 3 * np.sqrt(n * p * (1 - p)) + 1), 0, n))
        cases.append((k, n, p))
    return cases


@pytest.mark.parametrize("k, n, p", binomial_cases())
def test_binomial_test_matches_scipy_binomtest(k, n, p):
    expected = reference.binomtest(k, n, p).pvalue
    assert stats.binomial_test(k, n, p) == pytest.approx(expected, rel=RTOL, abs=1e-300)


def test_binomial_test_covers_both_sides_of_the_mean():
    """The cases above exercise both branches with p-values neither 0 nor 1 (else they would prove little)."""
    cases = binomial_cases()
    for side in (lambda k, n, p: k < n * p, lambda k, n, p: k > n * p):
        pvalues = [reference.binomtest(*c).pvalue for c in cases if side(*c)]
        assert sum(1e-12 < v < 0.99 for v in pvalues) > 100


@pytest.mark.parametrize("k, n, p", [(-1, 5, 0.5), (6, 5, 0.5), (0, 0, 0.5), (1, 5, 0.0), (1, 5, 1.0)])
def test_binomial_test_refuses_what_has_no_meaning(k, n, p):
    with pytest.raises(InvalidParameterError):
        stats.binomial_test(k, n, p)


def samples(rng: np.random.Generator, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two samples of random sizes (small ones, where the exact distribution is used, half the time);
    with `ties`, values drawn from a few levels (as label purities are), else continuous."""
    sizes = rng.integers(1, 9, 2) if rng.random() < 0.5 else rng.integers(1, 120, 2)
    shift = rng.choice([0.0, 0.3, 1.0])
    if ties:
        levels = int(rng.integers(2, 6))
        x, y = rng.integers(0, levels, sizes[0]), rng.integers(0, levels, sizes[1]) + shift
        return x / levels, y / levels
    return rng.normal(0, 1, sizes[0]), rng.normal(shift, 1, sizes[1])


@pytest.mark.parametrize("ties", [False, True])
def test_mann_whitney_u_matches_scipy_mannwhitneyu(ties):
    rng = np.random.default_rng(2 + ties)
    exact = 0
    for _ in range(400):
        x, y = samples(rng, ties)
        expected = reference.mannwhitneyu(x, y, alternative="two-sided").pvalue
        assert stats.mann_whitney_u(x, y) == pytest.approx(expected, rel=RTOL, abs=1e-300), (x, y)
        distinct = len(np.unique(np.r_[x, y])) == len(x) + len(y)
        exact += min(len(x), len(y)) <= stats.MWU_EXACT_MAX_SIZE and distinct
    assert (exact > 100) == (not ties)  # both of scipy's methods were compared


def test_mann_whitney_u_edges_match_scipy():
    """One value each, all values tied, one sample far above the other, a large exact case."""
    rng = np.random.default_rng(4)
    cases = [([1.0], [2.0]), ([1.0], [1.0]), ([0.5] * 5, [0.5] * 7), (np.arange(8.0), np.arange(8.0) + 100)]
    cases += [(rng.normal(0, 1, 8), rng.normal(0.5, 1, 600)), (rng.normal(0, 1, 300), rng.normal(0, 1, 3))]
    cases += [([1.0, 1.0, 2.0], [3.0]), (np.arange(20.0), np.arange(20.0) + 0.5)]
    for x, y in cases:
        expected = reference.mannwhitneyu(x, y, alternative="two-sided").pvalue
        assert stats.mann_whitney_u(np.array(x), np.array(y)) == pytest.approx(expected, rel=RTOL, abs=1e-300)


def test_mann_whitney_u_refuses_an_empty_sample():
    with pytest.raises(InvalidParameterError):
        stats.mann_whitney_u(np.array([]), np.array([1.0]))


def test_core_stats_does_not_import_scipy_stats():
    """The point of the module: a fresh interpreter that imports it has no scipy.stats (the check can fail)."""
    code = "import sys, core.stats; print('scipy.stats' in sys.modules)"
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
