import numpy as np
import pytest
from scipy import stats as st

from kd_imdb import stats


def test_mean_ci_matches_t_interval_by_hand():
    x = [0.80, 0.82, 0.81, 0.83, 0.79]
    mean, low, high = stats.mean_ci(x)
    half = st.t.ppf(0.975, 4) * np.std(x, ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(0.81) and low == pytest.approx(0.81 - half) and high == pytest.approx(0.81 + half)
    assert np.isnan(stats.mean_ci([0.8])[1])


def test_accuracy_ci_is_wilsons_interval():
    # 90 right of 100: Wilson's 95% interval is [0.8256, 0.9448] (by hand: centre (0.9 + 1.9208/100) /
    # 1.038415, half-width 1.95996 / 1.038415 * sqrt(0.0009 + 0.00009604))
    acc, low, high = stats.accuracy_ci([True] * 90 + [False] * 10)
    assert acc == 0.9 and low == pytest.approx(0.82565, abs=1e-4) and high == pytest.approx(0.94477, abs=1e-4)
    acc, low, high = stats.accuracy_ci([True] * 50)
    assert acc == 1.0 and high == pytest.approx(1.0) and 0.92 < low < 0.93  # inside [0, 1], unlike p +- z*se


def test_paired_difference_uses_the_pairing():
    scratch = np.array([0.70, 0.75, 0.80, 0.85, 0.90])
    kd = scratch + np.array([0.010, 0.012, 0.011, 0.009, 0.010])  # small, consistent gains
    out = stats.paired_difference(kd, scratch)
    assert out["diff_mean"] == pytest.approx(0.0104)
    assert out["diff_ci_low"] > 0  # paired: significant although the arms' own CIs overlap widely
    assert out["t_pvalue"] < 1e-4
    unpaired = st.ttest_ind(kd, scratch).pvalue
    assert unpaired > 0.5


def test_mcnemar_counts_and_exact_p():
    labels = np.array([1] * 20)
    a = np.array([1] * 20)           # A right everywhere
    b = np.array([0] * 6 + [1] * 14)  # B wrong on 6
    out = stats.mcnemar(labels, a, b)
    assert (out["a_only_right"], out["b_only_right"]) == (6, 0)
    assert out["pvalue"] == pytest.approx(2 * 0.5**6)  # two-sided exact binomial, 6 of 6
    assert stats.mcnemar(labels, a, a)["pvalue"] == 1.0


def test_holm_by_hand():
    # sorted p: .01, .02, .04 -> 3*.01=.03, 2*.02=.04, 1*.04=.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]).tolist() == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    out = stats.holm([np.nan, 0.01])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.01)


def test_arms_are_aligned_review_by_review_even_with_duplicate_ids():
    import pandas as pd

    from kd_imdb.analysis import _aligned

    a = pd.DataFrame({"id": ["x", "y", "x", "z"], "label": [1, 0, 1, 1], "logit_0": [0, 1, 0, 1], "logit_1": [1, 0, 1, 0]})
    same, other = _aligned(a, a.copy())
    assert len(same) == len(other) == 4
    shuffled = a.iloc[[3, 2, 1, 0]].reset_index(drop=True)
    left, right = _aligned(a, shuffled)
    assert len(left) == len(right) == 3 and list(left["id"]) == list(right["id"])


def test_slope_by_hand():
    # y on x = 0..3: slope -1.1 / 5 = -0.22; residuals -.03, -.01, .11, -.07; SE sqrt(.018 / 2 / 5)
    out = stats.slope([0, 1, 2, 3], [1.0, 0.8, 0.7, 0.3])
    se = np.sqrt(0.018 / 2 / 5)
    assert out["slope"] == pytest.approx(-0.22)
    assert out["slope_ci_high"] - out["slope"] == pytest.approx(st.t.ppf(0.975, 2) * se)
    assert out["slope_pvalue"] == pytest.approx(2 * st.t.sf(0.22 / se, 2))
    assert out["n"] == 4


def test_slope_needs_three_points_and_two_x_values():
    assert np.isnan(stats.slope([1, 2], [0.1, 0.2])["slope"])
    assert np.isnan(stats.slope([2, 2, 2], [0.1, 0.2, 0.3])["slope_pvalue"])
