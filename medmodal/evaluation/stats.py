"""Uncertainty of evaluation results: bootstrap confidence intervals over test studies,
paired bootstrap comparison of two models, and DeLong's test for correlated AUROCs.

The unit of resampling is the **test study** (one row of ``probs`` / ``targets``):
the interval says how much a metric would move on another test set of the same
size from the same population (not how much it moves between training seeds;
that is the spread over seeds, reported separately by the benchmark).

- Bootstrap: :func:`scipy.stats.bootstrap` (percentile or BCa intervals) on
  vectorised metric functions (:data:`METRICS`), so 1,000 resamples of a
  500-study test set take a fraction of a second.
- Several seeds: every function accepts ``probs`` of shape ``[S, N, C]`` (S seeds of
  one model on the same N studies); the statistic is then the metric averaged over
  the seeds, resampling the same studies for every seed.
- DeLong et al. (Biometrics 1988) with the fast midrank algorithm of Sun & Xu
  (IEEE Signal Process. Lett. 2014). Written here because no maintained Python
  library provides it (scikit-learn / scipy / statsmodels do not; the PyPI
  packages that do are unmaintained single-file ports). Checked in the tests
  against a hand-computed case and the direct O(m n) formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np
from scipy import stats as sps
from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.evaluation.metrics._arrays import probabilities_and_targets

MetricFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------- vectorised metrics
def _auroc_along_samples(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUROC by the Mann-Whitney U statistic along axis -2 (samples), ties counted half.

    probs, targets: ``[..., N, C]`` -> ``[..., C]``; NaN where a column has one class only.
    Equals :func:`sklearn.metrics.roc_auc_score` per column (checked in the tests).
    """
    ranks = sps.rankdata(probs, axis=-2)
    n_pos = targets.sum(axis=-2)
    n_neg = targets.shape[-2] - n_pos
    u = (ranks * targets).sum(axis=-2) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def auroc_macro(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean AUROC over labels with both classes present: ``[..., N, C]`` -> ``[...]``."""
    per_label = _auroc_along_samples(probs, targets)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmean(per_label, axis=-1)


def auroc_micro(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUROC over every (study, label) pair pooled: ``[..., N, C]`` -> ``[...]``."""
    shape = probs.shape[:-2] + (-1, 1)
    return _auroc_along_samples(probs.reshape(shape), targets.reshape(shape))[..., 0]


def f1_macro(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Mean per-label F1 at ``probs >= threshold`` (0 where undefined, as scikit-learn's
    ``zero_division=0``): ``[..., N, C]`` -> ``[...]``."""
    pred = probs >= threshold
    tp = (pred & (targets == 1)).sum(axis=-2)
    denom = pred.sum(axis=-2) + targets.sum(axis=-2)
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape, dtype=np.float64), where=denom > 0)
    return f1.mean(axis=-1)


def accuracy(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Mean per-label accuracy at ``probs >= threshold``: ``[..., N, C]`` -> ``[...]``."""
    return ((probs >= threshold) == (targets == 1)).mean(axis=(-2, -1))


METRICS: dict[str, MetricFn] = {
    "auroc_macro": auroc_macro,
    "auroc_micro": auroc_micro,
    "f1_macro": f1_macro,
    "accuracy": accuracy,
}
"""Metrics with a bootstrap interval; same definitions as
:func:`medmodal.evaluation.metrics.classification_metrics` (threshold 0.5)."""


class _quiet_nanmean:
    """Silence numpy's "mean of empty slice" (a resample where no label has both classes)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ------------------------------------------------------------------- bootstrap
@dataclass
class Interval:
    """A point estimate with its confidence interval (``None`` where undefined)."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_resamples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairedComparison:
    """Metric of model A minus model B on the same studies, with a bootstrap interval and p-value.

    ``p_value``: two-sided, the share of resampled differences on the other side of 0
    (doubled, with the +1 correction of Davison & Hinkley so it is never 0).
    """

    metric: str
    estimate_a: float | None
    estimate_b: float | None
    difference: Interval
    p_value: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stack_seeds(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as float ``[S, N, C]`` (S = 1 for a single ``[N, C]``), ``targets`` int ``[N, C]``, validated."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"probs must be [N, C] or [S, N, C], got shape {p.shape}")
    if p.shape[0] == 0:  # (no seed would leave targets unchecked and every result undefined)
        raise ValueError(f"probs: no seeds (S = 0), got shape {p.shape}")
    for seed_probs in p:
        _, t = probabilities_and_targets(seed_probs, targets)
    return p, t


def _float_or_none(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def _resampled_metric(probs: np.ndarray, targets: np.ndarray, metric: MetricFn) -> Callable[..., np.ndarray]:
    """The bootstrap statistic on study indices ``idx [..., N]``: metric averaged over seeds -> ``[...]``."""

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        p = probs[:, idx]  # [S, ..., N, C]
        t = np.broadcast_to(targets[idx], p.shape)
        return metric(p, t).mean(axis=0)

    return statistic


class BootstrapOptions(TypedDict, total=False):
    """The resampling options of :func:`bootstrap_ci` and :func:`paired_bootstrap` (keywords)."""

    n_resamples: int  # default 1000
    confidence: float  # default 0.95
    method: str  # "percentile" (default) or "BCa" (scipy's names)
    seed: int  # default 0


@dataclass(frozen=True)
class Bootstrap:
    """:class:`BootstrapOptions` with their defaults; runs scipy's bootstrap over study indices."""

    n_resamples: int = 1000
    confidence: float = 0.95
    method: str = "percentile"
    seed: int = 0

    def undefined(self) -> Interval:
        """The interval of a metric that is undefined on the studies themselves."""
        return Interval(None, None, None, self.confidence, self.n_resamples)

    def run(self, statistic, n: int):
        """scipy's bootstrap over the study indices 0..n-1 (vectorised, in batches)."""
        return sps.bootstrap(
            (np.arange(n),),
            statistic,
            n_resamples=self.n_resamples,
            confidence_level=self.confidence,
            method=self.method,
            vectorized=True,
            batch=250,
            rng=np.random.default_rng(self.seed),
        )


def bootstrap_ci(
    probs: Any,
    targets: Any,
    metric: str | MetricFn = "auroc_macro",
    **options: Unpack[BootstrapOptions],
) -> Interval:
    """Bootstrap confidence interval of ``metric`` over test studies.

    Args:
        probs: ``[N, C]`` probabilities, or ``[S, N, C]`` for S seeds of one model (the
            metric is averaged over seeds inside each resample).
        targets: ``[N, C]`` 0/1.
        metric: a name in :data:`METRICS` or a vectorised function ``([..., N, C], [..., N, C]) -> [...]``.
        options: :class:`BootstrapOptions` (n_resamples, confidence, method, seed).

    Returns:
        :class:`Interval`; bounds are ``None`` when resamples leave the metric undefined
        (e.g. AUROC on a test set with a single class).
    """
    bootstrap = Bootstrap(**options)
    p, t = _stack_seeds(probs, targets)
    fn = METRICS[metric] if isinstance(metric, str) else metric
    estimate = _float_or_none(fn(p, np.broadcast_to(t, p.shape)).mean())
    statistic = _resampled_metric(p, t, fn)
    low = high = None
    if estimate is not None:
        result = bootstrap.run(statistic, t.shape[0])
        if not np.isnan(result.bootstrap_distribution).any():
            low, high = (
                _float_or_none(result.confidence_interval.low),
                _float_or_none(result.confidence_interval.high),
            )
    return Interval(estimate, low, high, bootstrap.confidence, bootstrap.n_resamples)


def paired_bootstrap(
    probs_a: Any,
    probs_b: Any,
    targets: Any,
    metric: str | MetricFn = "auroc_macro",
    **options: Unpack[BootstrapOptions],
) -> PairedComparison:
    """``metric(A) - metric(B)`` on the same test studies, resampled together (paired).

    probs_a, probs_b: ``[N, C]`` or ``[S, N, C]`` (seeds; A and B may have different S).
    """
    bootstrap = Bootstrap(**options)
    pa, t = _stack_seeds(probs_a, targets)
    pb, _ = _stack_seeds(probs_b, targets)
    if pa.shape[1:] != pb.shape[1:]:
        raise ValueError(f"models scored different studies/labels: {pa.shape[1:]} vs {pb.shape[1:]}")
    fn = METRICS[metric] if isinstance(metric, str) else metric
    stat_a, stat_b = _resampled_metric(pa, t, fn), _resampled_metric(pb, t, fn)

    def difference(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return stat_a(idx) - stat_b(idx)

    est_a = _float_or_none(fn(pa, np.broadcast_to(t, pa.shape)).mean())
    est_b = _float_or_none(fn(pb, np.broadcast_to(t, pb.shape)).mean())
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    if est_a is None or est_b is None:
        return PairedComparison(name, est_a, est_b, bootstrap.undefined(), None)
    result = bootstrap.run(difference, t.shape[0])
    dist = result.bootstrap_distribution
    low = high = p_value = None
    if not np.isnan(dist).any():
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        p_value = bootstrap_p_value(dist)
    return PairedComparison(
        name,
        est_a,
        est_b,
        Interval(est_a - est_b, low, high, bootstrap.confidence, bootstrap.n_resamples),
        p_value,
    )


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "difference = 0" from resampled differences: twice the smaller tail, +1 corrected."""
    d = np.asarray(differences, dtype=np.float64)
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2 * (tail + 1) / (d.size + 1)))


# ---------------------------------------------------------------------- DeLong
@dataclass
class DeLongResult:
    """DeLong's test of AUROC(A) = AUROC(B) on the same studies (two-sided, normal approximation)."""

    auc_a: float
    auc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float
    labels_used: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and DeLong's structural components by midranks (Sun & Xu 2014).

    scores: ``[N]``; positive: bool ``[N]`` with both classes present.
    Returns (auc, v10 ``[m]`` = per positive, the share of negatives scored lower (ties half),
    v01 ``[n]`` = per negative, the share of positives scored higher).
    """
    pos, neg = scores[positive], scores[~positive]
    m, n = pos.size, neg.size
    all_ranks = sps.rankdata(np.concatenate([pos, neg]))
    v10 = (all_ranks[:m] - sps.rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - sps.rankdata(neg)) / m
    return float(v10.mean()), v10, v01


def _two_sided(z: float) -> float:
    return float(2 * sps.norm.sf(abs(z)))


def _result(auc_a: float, auc_b: float, variance: float, labels_used: int) -> DeLongResult:
    diff = auc_a - auc_b
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        p = _two_sided(z)
    return DeLongResult(auc_a, auc_b, diff, se, z, p, labels_used)


def _binary_inputs(targets: Any, scores_a: Any, scores_b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(targets).astype(np.int64).ravel()
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if not (t.shape == a.shape == b.shape):
        raise ValueError(
            f"targets {t.shape}, scores_a {a.shape} and scores_b {b.shape} must have the same length"
        )
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0 / 1")
    return t, a, b


def delong_test(targets: Any, scores_a: Any, scores_b: Any) -> DeLongResult:
    """DeLong's test for two correlated AUROCs of one binary label.

    Args:
        targets: ``[N]`` 0/1 (both classes needed).
        scores_a, scores_b: ``[N]`` scores of two models on the same studies.

    ``Var(AUC_A - AUC_B) = L (S10 / m + S01 / n) L^T`` with ``L = [1, -1]`` and S10 / S01
    the 2x2 sample covariances (ddof 1) of the structural components over the m
    positives / n negatives.
    """
    t, a, b = _binary_inputs(targets, scores_a, scores_b)
    positive = t == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 positives and 2 negatives (got {m} and {n})")
    auc_a, v10a, v01a = _placements(a, positive)
    auc_b, v10b, v01b = _placements(b, positive)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ (s10 / m + s01 / n) @ contrast)
    return _result(auc_a, auc_b, variance, 1)


def delong_macro_test(targets: Any, probs_a: Any, probs_b: Any) -> DeLongResult:
    """DeLong's test for the difference of **macro** AUROCs (mean over labels) of two models.

    Labels share studies, so their AUROCs are correlated; the variance sums, per study,
    its DeLong influence on every label's AUROC difference (positives: ``(v10 - auc) / m``,
    negatives: ``(v01 - auc) / n``, each scaled by ``sqrt(m / (m - 1))`` resp.
    ``sqrt(n / (n - 1))``) and squares the per-study totals. For one label this is
    exactly :func:`delong_test`. Labels with fewer than 2 positives or negatives are
    left out, as in ``auroc_macro``.

    Args:
        targets: ``[N, C]`` 0/1; probs_a, probs_b: ``[N, C]``.
    """
    pa, t = probabilities_and_targets(probs_a, targets)
    pb, _ = probabilities_and_targets(probs_b, targets)
    if pa.shape != pb.shape:
        raise ValueError(f"probs_a {pa.shape} and probs_b {pb.shape} differ")
    influence = np.zeros(t.shape[0])
    aucs_a, aucs_b = [], []
    for c in range(t.shape[1]):
        positive = t[:, c] == 1
        m, n = int(positive.sum()), int((~positive).sum())
        if m < 2 or n < 2:
            continue
        auc_a, v10a, v01a = _placements(pa[:, c], positive)
        auc_b, v10b, v01b = _placements(pb[:, c], positive)
        diff = auc_a - auc_b
        influence[positive] += (v10a - v10b - diff) / m * np.sqrt(m / (m - 1))
        influence[~positive] += (v01a - v01b - diff) / n * np.sqrt(n / (n - 1))
        aucs_a.append(auc_a)
        aucs_b.append(auc_b)
    if not aucs_a:
        raise ValueError("no label has at least 2 positives and 2 negatives")
    k = len(aucs_a)
    return _result(float(np.mean(aucs_a)), float(np.mean(aucs_b)), float((influence**2).sum() / k**2), k)


# ------------------------------------------------------------------- seeds
def mean_and_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the defined values; sd is None for fewer than 2."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return float(np.mean(defined)), sd
