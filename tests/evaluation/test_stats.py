"""Statistics of the benchmark: vectorised metrics, bootstrap intervals, paired comparison, DeLong."""

import numpy as np
import pytest
from scipy.stats import norm

from medmodal.evaluation import stats
from medmodal.evaluation.metrics import classification_metrics


def toy(n=300, c=6, seed=0, signal=0.3):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(int)
    probs = np.clip(targets * signal + rng.random((n, c)) * (1 - signal), 0, 1)
    probs = np.round(probs, 2)  # ties, as real scores have
    return probs, targets


@pytest.mark.parametrize("name", ["auroc_macro", "auroc_micro", "f1_macro", "accuracy"])
def test_vectorised_metrics_equal_classification_metrics(name):
    probs, targets = toy()
    reference = classification_metrics(probs, targets)[name]
    assert stats.METRICS[name](probs, targets) == pytest.approx(reference, abs=1e-12)
    # leading (resample / seed) dimensions are carried through
    stacked = np.stack([probs, 1 - probs])
    values = stats.METRICS[name](stacked, np.broadcast_to(targets, stacked.shape))
    assert values.shape == (2,) and values[0] == pytest.approx(reference, abs=1e-12)


def test_auroc_macro_skips_single_class_labels():
    probs, targets = toy(c=3)
    targets[:, 1] = 0
    assert stats.auroc_macro(probs, targets) == pytest.approx(
        classification_metrics(probs, targets)["auroc_macro"]
    )


def binormal(n, d, rng):
    """Scores N(d, 1) for positives, N(0, 1) for negatives: true AUROC = Phi(d / sqrt 2)."""
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.normal(size=n) + d * y
    return norm.cdf(s)[:, None], y[:, None]


def test_bootstrap_interval_covers_the_true_auroc_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    d = 1.0
    truth = norm.cdf(d / np.sqrt(2))
    trials, covered = 100, 0
    for k in range(trials):
        probs, targets = binormal(120, d, rng)
        ci = stats.bootstrap_ci(probs, targets, "auroc_macro", n_resamples=200, seed=k)
        covered += ci.low <= truth <= ci.high
    # binomial sd of the coverage over 100 trials is ~2.2 points; percentile intervals run slightly narrow
    assert 0.87 <= covered / trials <= 0.99


def test_bootstrap_interval_shrinks_with_more_studies():
    rng = np.random.default_rng(2)
    small = stats.bootstrap_ci(*binormal(100, 1.0, rng), n_resamples=300)
    large = stats.bootstrap_ci(*binormal(1600, 1.0, rng), n_resamples=300)
    width = lambda ci: ci.high - ci.low
    assert width(large) < width(small) / 2.5  # ~ 1 / sqrt(16) = 1/4 in theory


def test_seeds_are_averaged_inside_the_bootstrap():
    probs, targets = toy()
    other, _ = toy(seed=5)
    ci = stats.bootstrap_ci(np.stack([probs, other]), targets, "auroc_macro", n_resamples=200)
    expected = (stats.auroc_macro(probs, targets) + stats.auroc_macro(other, targets)) / 2
    assert ci.estimate == pytest.approx(expected)
    assert ci.low < ci.estimate < ci.high


def test_a_stack_of_no_seeds_is_rejected():
    # was: an undefined interval, the targets never checked
    probs, targets = toy()
    with pytest.raises(ValueError, match="no seeds"):
        stats.bootstrap_ci(probs[None][:0], targets, "auroc_macro", n_resamples=10)
    with pytest.raises(ValueError, match="no seeds"):
        stats.paired_bootstrap(probs[None][:0], probs, targets, "auroc_macro", n_resamples=10)


def test_undefined_metric_gives_no_interval():
    probs, targets = toy(c=2)
    targets[:] = 0
    ci = stats.bootstrap_ci(probs, targets, "auroc_macro", n_resamples=100)
    assert (ci.estimate, ci.low, ci.high) == (None, None, None)


def test_paired_bootstrap_of_a_model_with_itself_is_zero():
    probs, targets = toy()
    comp = stats.paired_bootstrap(probs, probs, targets, n_resamples=200)
    assert comp.difference.estimate == 0 and comp.difference.low == 0 and comp.difference.high == 0
    assert comp.p_value == 1.0


def test_paired_bootstrap_detects_a_better_model_and_not_a_noise_copy():
    probs, targets = toy(signal=0.4)
    rng = np.random.default_rng(3)
    worse = np.clip(probs + rng.normal(0, 0.3, probs.shape), 0, 1)
    comp = stats.paired_bootstrap(probs, worse, targets, n_resamples=500)
    assert comp.difference.low > 0 and comp.p_value < 0.01
    reverse = stats.paired_bootstrap(worse, probs, targets, n_resamples=500)
    assert reverse.difference.estimate == pytest.approx(-comp.difference.estimate)
    assert reverse.difference.high < 0


def test_bootstrap_p_value():
    assert stats.bootstrap_p_value(np.array([1.0] * 99)) == pytest.approx(2 / 100)
    assert stats.bootstrap_p_value(np.array([-1.0] * 50 + [1.0] * 50)) == 1.0


# ------------------------------------------------------------------------ DeLong
def test_delong_hand_computed_case():
    # Positives {0.6, 0.7, 0.8} vs negatives {0.1, 0.2}: AUC_A = 1 (all components 1, variance 0).
    # Model B, positives {0.2, 0.7, 0.9} vs negatives {0.3, 0.6}: V10 = [0, 1, 1], V01 = [2/3, 2/3],
    # AUC_B = 2/3; Var(A - B) = var(V10_B) / 3 + 0 = (1/3) / 3 = 1/9 -> z = (1/3) / (1/3) = 1, p = 0.3173.
    result = stats.delong_test([0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.7, 0.8], [0.3, 0.6, 0.2, 0.7, 0.9])
    assert result.auc_a == 1.0 and result.auc_b == pytest.approx(2 / 3)
    assert result.std_error == pytest.approx(1 / 3)
    assert result.z == pytest.approx(1.0)
    assert result.p_value == pytest.approx(0.317311, abs=1e-6)


def delong_direct(y, a, b):
    """DeLong et al. (1988) written out with the O(m n) kernel psi(x, y) = 1, 1/2, 0."""
    y = np.asarray(y)
    comps = []
    for s in (np.asarray(a), np.asarray(b)):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    s10 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    s01 = np.cov(np.vstack([comps[0][2], comps[1][2]]))
    var = s10[0, 0] / m + s01[0, 0] / n + s10[1, 1] / m + s01[1, 1] / n - 2 * (s10[0, 1] / m + s01[0, 1] / n)
    z = (comps[0][0] - comps[1][0]) / np.sqrt(var)
    return comps[0][0], comps[1][0], z, 2 * norm.sf(abs(z))


def test_delong_fast_algorithm_equals_the_direct_formula():
    rng = np.random.default_rng(4)
    y = (rng.random(200) < 0.35).astype(int)
    a = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
    b = np.round(rng.normal(size=200) + 0.5 * y + 0.3 * a, 1)
    fast = stats.delong_test(y, a, b)
    auc_a, auc_b, z, p = delong_direct(y, a, b)
    assert (fast.auc_a, fast.auc_b) == (pytest.approx(auc_a), pytest.approx(auc_b))
    assert fast.z == pytest.approx(z) and fast.p_value == pytest.approx(p)


def test_delong_macro_with_one_label_is_delong():
    probs, targets = toy(c=1)
    other = np.clip(probs + np.random.default_rng(5).normal(0, 0.2, probs.shape), 0, 1)
    macro = stats.delong_macro_test(targets, probs, other)
    single = stats.delong_test(targets[:, 0], probs[:, 0], other[:, 0])
    assert macro.z == pytest.approx(single.z) and macro.p_value == pytest.approx(single.p_value)


def test_delong_macro_standard_error_agrees_with_the_paired_bootstrap():
    probs, targets = toy(n=400, signal=0.35)
    other = np.clip(probs + np.random.default_rng(6).normal(0, 0.25, probs.shape), 0, 1)
    delong = stats.delong_macro_test(targets, probs, other)
    boot = stats.paired_bootstrap(probs, other, targets, n_resamples=2000)
    boot_se = (boot.difference.high - boot.difference.low) / (2 * 1.96)
    assert delong.difference == pytest.approx(boot.difference.estimate)
    assert delong.std_error == pytest.approx(boot_se, rel=0.2)


def test_delong_needs_both_classes():
    with pytest.raises(ValueError, match="at least 2 positives"):
        stats.delong_test([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])


def test_mean_and_sd():
    assert stats.mean_and_sd([1.0, 3.0, None]) == (2.0, pytest.approx(np.sqrt(2)))
    assert stats.mean_and_sd([0.5]) == (0.5, None)
    assert stats.mean_and_sd([None]) == (None, None)
