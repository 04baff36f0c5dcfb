"""The few statistical functions core needs, from scipy.special alone.

scipy.stats costs ~60 MB of resident memory and ~1 s on import (issue 25: every dashboard page paid it through
the Direction Lab's and the smoothing panel's imports); scipy.special, its numerical base, costs ~13 MB. These
are the same definitions as scipy.stats' (t.ppf, beta.ppf, norm.ppf, binomtest's two-sided p-value,
mannwhitneyu's two-sided p-value with method='auto'); tests/test_stats.py holds them against scipy.stats.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.special import bdtr, bdtrc, betaincinv, gammaln, ndtr, ndtri, stdtrit, xlog1py, xlogy

from core.errors import InvalidParameterError

# binomtest's two-sided p-value counts an outcome as "no more likely than k" up to this relative slack in the
# probabilities, so that outcomes equally likely in exact arithmetic are not split by rounding (scipy's value).
BINOM_RELATIVE_SLACK = 1e-7
# mannwhitneyu(method='auto') uses the exact null distribution unless both samples are larger than this
# (or there are ties); then the normal approximation with tie and continuity correction.
MWU_EXACT_MAX_SIZE = 8


def t_quantile(q: float, df: float) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (scipy.stats.t.ppf)."""
    return float(stdtrit(df, q))


def beta_quantile(q: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (scipy.stats.beta.ppf): the Clopper-Pearson bounds."""
    return float(betaincinv(a, b, q))


def normal_quantile(q: float) -> float:
    """Quantile of the standard normal distribution, Phi^-1 (scipy.stats.norm.ppf)."""
    return float(ndtri(q))


def _binomial_pmf(i: np.ndarray, n: int, p: float) -> np.ndarray:
    """Binomial(n, p) probabilities of the outcomes `i`, through the log-gamma function (no overflow)."""
    log_choose = gammaln(n + 1) - gammaln(i + 1) - gammaln(n - i + 1)
    return np.exp(log_choose + xlogy(i, p) + xlog1py(n - i, -p))


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of `k` successes in `n` trials against success probability `p`
    (scipy.stats.binomtest(k, n, p).pvalue): the probability of every outcome no more likely than k."""
    if n < 1 or not 0 <= k <= n:
        raise InvalidParameterError(f"a binomial test needs 0 <= k <= n and n >= 1, got k={k}, n={n}.")
    if not 0 < p < 1:
        raise InvalidParameterError(f"a binomial test needs 0 < p < 1, got p={p}.")
    if k == p * n:
        return 1.0
    threshold = float(_binomial_pmf(np.array(k), n, p)) * (1 + BINOM_RELATIVE_SLACK)
    if k < p * n:  # k's own tail P(X <= k), and the upper tail of outcomes at most as likely
        others = np.arange(math.ceil(p * n), n + 1)
        rare = others[_binomial_pmf(others, n, p) <= threshold]
        other_tail = float(bdtrc(int(rare[0]) - 1, n, p)) if len(rare) else 0.0
        pvalue = float(bdtr(k, n, p)) + other_tail
    else:  # the lower tail of outcomes at most as likely, and k's own tail P(X >= k)
        others = np.arange(0, math.floor(p * n) + 1)
        rare = others[_binomial_pmf(others, n, p) <= threshold]
        other_tail = float(bdtr(int(rare[-1]), n, p)) if len(rare) else 0.0
        pvalue = other_tail + float(bdtrc(k - 1, n, p))
    return min(1.0, pvalue)


def _rank_sums(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The rank sum of x among x and y (ties get their average rank), and the size of each group of ties."""
    values, inverse, counts = np.unique(np.concatenate([x, y]), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2
    return float(average_rank[inverse[: len(x)]].sum()), counts


def _u_tail_exact(u: int, m: int, n: int) -> float:
    """P(U >= u) under the null for samples of sizes m and n without ties: the number of arrangements with
    U = j is the coefficient of q^j in the Gaussian binomial [m + n choose m]_q, built exactly in integers
    as the product over i = 1..min(m, n) of (1 - q^(max + i)) / (1 - q^i)."""
    small, large = min(m, n), max(m, n)
    coeffs = np.zeros(small * large + 1, dtype=object)
    coeffs[0] = 1
    for i in range(1, small + 1):
        coeffs[large + i :] -= coeffs[: -(large + i)].copy()  # times (1 - q^(large + i))
        for start in range(i):  # divided by (1 - q^i): a running sum along each residue class mod i
            coeffs[start::i] = np.cumsum(coeffs[start::i])
    return float(Fraction(int(coeffs[u:].sum()), int(coeffs.sum())))


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney U test p-value (scipy.stats.mannwhitneyu(x, y), method='auto'): exact when
    either sample has at most MWU_EXACT_MAX_SIZE values and there are no ties, else the normal
    approximation with tie correction and continuity correction."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) == 0 or len(y) == 0:
        raise InvalidParameterError("a Mann-Whitney U test needs at least one value in each sample.")
    m, n = len(x), len(y)
    rank_sum, ties = _rank_sums(x, y)
    u1 = rank_sum - m * (m + 1) / 2
    u = max(u1, m * n - u1)
    if min(m, n) <= MWU_EXACT_MAX_SIZE and ties.max() == 1:
        return min(1.0, 2 * _u_tail_exact(round(u), m, n))
    total = m + n
    spread = math.sqrt(m * n / 12 * ((total + 1) - float((ties**3 - ties).sum()) / (total * (total - 1))))
    numerator = u - m * n / 2 - 0.5  # the continuity correction: U's own mass counts as at or above it
    z = numerator / spread if spread > 0 else -math.inf  # all values tied: no evidence at all
    return min(1.0, 2 * float(ndtr(-z)))
