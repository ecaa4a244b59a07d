"""Statistics for paired seeds: means with CIs, paired differences, paired tests, McNemar, Holm.

Seed pairs are the unit of replication: scratch and KD of one seed share initial weights and batch
order, so their difference is paired. scipy does the distributions and tests.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the Student-t confidence interval over independent seeds; (mean, nan, nan) for one seed."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
    return mean, float(low), float(high)


def accuracy_ci(correct, confidence: float = 0.95) -> tuple[float, float, float]:
    """One model's accuracy on n reviews and its Wilson score interval (Wilson 1927): the binomial
    interval for a proportion, which stays inside [0, 1] and is right near 0 and 1 where the normal
    approximation is not. The reviews are the unit here, not seeds: one model, one test set."""
    x = np.asarray(correct, dtype=bool)
    n, p = len(x), float(x.mean())
    z = stats.norm.ppf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p, float(centre - half), float(centre + half)


def paired_difference(kd, scratch, confidence: float = 0.95) -> dict:
    """KD minus scratch over seed pairs: mean, t CI, and the paired t-test and Wilcoxon p-values."""
    kd, scratch = np.asarray(kd, dtype=float), np.asarray(scratch, dtype=float)
    diff = kd - scratch
    mean, low, high = mean_ci(diff, confidence)
    out = {"diff_mean": mean, "diff_ci_low": low, "diff_ci_high": high, "n_pairs": len(diff),
           "t_pvalue": float("nan"), "wilcoxon_pvalue": float("nan")}
    if len(diff) >= 2 and np.any(diff != diff[0]):
        out["t_pvalue"] = float(stats.ttest_rel(kd, scratch).pvalue)
    if len(diff) >= 2 and np.any(diff != 0):
        out["wilcoxon_pvalue"] = float(stats.wilcoxon(kd, scratch).pvalue)
    return out


def mcnemar(labels, pred_a, pred_b) -> dict:
    """Exact McNemar test on one pair's test predictions: do A and B err on different reviews more
    often one way than the other? b = A right & B wrong, c = A wrong & B right; p = binomial test of
    b against b + c with probability 1/2 (scipy.stats.binomtest)."""
    labels, pred_a, pred_b = map(np.asarray, (labels, pred_a, pred_b))
    right_a, right_b = pred_a == labels, pred_b == labels
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"a_only_right": b, "b_only_right": c, "pvalue": p}


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q)
    m = len(q)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    tmp = np.empty(m)
    tmp[order] = adjusted
    out[ok] = tmp
    return out


def slope(x, y, confidence: float = 0.95) -> dict:
    """The least-squares slope of ``y`` on ``x`` with its t CI and the two-sided p-value of slope 0
    (scipy.stats.linregress): a trend test over independent observations, e.g. each seed pair's KD
    gain against its student's log hidden size."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.all(x == x[0]):
        return {"slope": float("nan"), "slope_ci_low": float("nan"), "slope_ci_high": float("nan"),
                "slope_pvalue": float("nan"), "n": len(x)}
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return {"slope": float(fit.slope), "slope_ci_low": float(fit.slope - half), "slope_ci_high": float(fit.slope + half),
            "slope_pvalue": float(fit.pvalue), "n": len(x)}
