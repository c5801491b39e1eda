"""Stacked wide pathways (``model.wide.fit: stacked``): the logistic regressions inside the deep model.

On the demo data the deep models lose to logistic regressions on 32 x 32 pixels and on word
n-grams (docs/diagnosis.md). A wide pathway trained by SGD for the demo's few hundred steps does
not reach the L-BFGS optimum (round 2 there), and a regression fitted on the training studies
predicts them far too well to teach the deep parts anything. So, before training:

1. each stacked pathway's input features are computed for the training and validation studies
   by the pathway itself (:meth:`~medmodal.models.wide.WidePixels.features`: the pooled pixels of
   the image the model sees, standardised by the training mean and variance;
   :meth:`~medmodal.models.wide.WideNgrams.features`: the binary bag of n-grams weighted by their
   training idf and L2-normalised, i.e. TF-IDF with binary term frequency);
2. one logistic regression per label is fitted on the training studies that have the modality,
   C chosen by macro AUROC on the validation split, exactly as the ``pixel_logreg`` /
   ``tfidf_logreg`` baselines (:class:`~medmodal.models.baselines.base.OneVsRestLogistic`), and
   loaded into the pathway, which stays frozen;
3. K-fold cross-fitting (``model.wide.folds``, same C) gives every training study the logit of a
   regression that was not fitted on it (its *out-of-fold* logit);
4. per label, a logistic regression on the out-of-fold logits of the pathways (the stacking
   weights: a scale per pathway and a shift) sets each pathway's (frozen)
   :class:`~medmodal.models.wide.StackingWeights`.

The training set then carries each study's out-of-fold logits (batch keys
:data:`~medmodal.models.wide.OUT_OF_FOLD`), which a stacked pathway reads in training mode; the
validation split, ``evaluate``, ``predict`` and ``serve`` use the fitted map itself. The model's
own classification head starts at zero, so before its first step the model is the stacked
regressions; the deep parts learn the rest on out-of-fold residuals. After each epoch the deep
head's weight in eval mode is chosen on the validation split among
:data:`~medmodal.training.module.DEEP_WEIGHTS` (0 = the stacked regressions alone; the
checkpoint keeps it; ``val/deep_weight`` and ``val/auroc_macro_at_deep_weight`` in the logs): a
deep head that overfits its residuals (on the demo data the BiLSTM's, within one epoch) is shrunk
rather than trusted. The checkpoint is chosen by the validation loss of all heads
(:func:`checkpoint_monitor`), not by the nearly flat AUROC.

Everything is deterministic (L-BFGS, a seeded fold split): a resumed run refits the same
regressions and the checkpoint restores the same weights.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.utils.data import Dataset

from medmodal.config import Config, ConfigError
from medmodal.data.dataset import StudyDataset, make_dataloader
from medmodal.models.baselines.base import OneVsRestLogistic, one_blas_thread
from medmodal.models.multimodal import MultimodalModel
from medmodal.models.wide import OUT_OF_FOLD, WideNgrams, WidePixels

log = logging.getLogger(__name__)

FEATURE_BATCH = 64
STACKING_FILE = "wide_stacking.json"  # in the run folder: what was chosen and fitted (C, stacking weights)


def check_stacking(config: Config) -> None:
    """``model.wide.fit: stacked`` needs a pathway of a modality the model reads; errors name the field."""
    model = config.model
    if model.wide.fit != "stacked":
        return
    image = model.wide.pixels > 0 and model.modalities in ("image", "both")
    text = model.wide.ngrams and model.modalities in ("text", "both")
    if not (image or text):
        raise ConfigError(
            "model.wide.fit: stacked needs a wide pathway of a modality the model reads "
            f"(model.wide.pixels > 0 or model.wide.ngrams: true; model.modalities is {model.modalities})"
        )
    if model.fused_logits != "head":
        raise ConfigError(
            f"model.fused_logits: {model.fused_logits} cannot be combined with model.wide.fit: stacked "
            "(the stacked regressions already add the unimodal evidence)"
        )
    if config.train.domain_adaptation.method != "none":
        raise ConfigError(
            "model.wide.fit: stacked does not support train.domain_adaptation (unlabeled studies)"
        )


def checkpoint_monitor(config: Config) -> tuple[str, str]:
    """(metric, "max" / "min") that chooses the best checkpoint and stops early.

    ``train.monitor`` (higher is better) for every run, except a stacked one left at the default
    ``val/auroc_macro``: there the validation loss of all heads (lower is better). The stacked
    regressions carry the classification from the first step and the deep head's weight is chosen
    on validation each epoch, so the AUROC is nearly flat and peaks at epoch 0, whose localization
    and report heads are untrained (measured on the hard preset: fused test hit@0.5 0.000, CE F1
    0.000 with the AUROC monitor).
    """
    t = config.train
    if config.model.wide.fit == "stacked" and t.monitor == type(t).model_fields["monitor"].default:
        return "val/loss", "min"
    return t.monitor, "max"


def stack_wide_pathways(
    model: MultimodalModel, train_set: StudyDataset, val_set: StudyDataset, config: Config
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Fit ``model``'s stacked pathways (module docstring, steps 1-4) in place.

    ``train_set`` / ``val_set``: the run's own datasets (read here without augmentation, so the
    images decoded for the features stay in their caches for training).
    Returns ({batch key: float32 [N_train, C] out-of-fold logits, in ``train_set`` order},
    what was chosen: C and validation AUROC per pathway, the stacking weights, seconds).
    """
    start = time.time()
    pathways = {
        modality: pathway
        for modality, pathway in (("image", model.wide_image), ("text", model.wide_text))
        if isinstance(pathway, (WidePixels, WideNgrams)) and pathway.stacking is not None
    }
    if not pathways:
        return {}, {}
    (train_x, y_train), (val_x, y_val) = (_features(pathways, dataset) for dataset in (train_set, val_set))
    folds = config.model.wide.folds
    out_of_fold: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"folds": folds}
    for modality, pathway in pathways.items():
        (x_train, present_train), (x_val, present_val) = train_x[modality], val_x[modality]
        if isinstance(pathway, WidePixels):
            mean, var = _standardisation(x_train[present_train])
            eps = float(pathway.net[2].eps)  # type: ignore[arg-type]  # the pathway's own BatchNorm epsilon
            x_train, x_val = (x_train - mean) / np.sqrt(var + eps), (x_val - mean) / np.sqrt(var + eps)
        else:
            idf = _idf(x_train[present_train])
            x_train, x_val = _tfidf(x_train, idf), _tfidf(x_val, idf)
        logistic = OneVsRestLogistic()
        chosen = logistic.fit(
            x_train[present_train], y_train[present_train], x_val[present_val], y_val[present_val]
        )
        assert logistic.coef is not None and logistic.intercept is not None  # set by fit
        coef, intercept = (
            torch.from_numpy(logistic.coef).float(),
            torch.from_numpy(logistic.intercept).float(),
        )
        if isinstance(pathway, WidePixels):
            pathway.load_fit(torch.from_numpy(mean).float(), torch.from_numpy(var).float(), coef, intercept)
        else:
            pathway.load_fit(coef, intercept, torch.from_numpy(idf).float())
        out_of_fold[modality] = _out_of_fold(
            x_train, y_train, present_train, chosen["C"], folds, config.train.seed
        )
        info[modality] = {"C": chosen["C"], "val_auroc_macro_by_C": chosen["val_auroc_macro_by_C"]}
    scales, shifts = _stacking_weights(out_of_fold, y_train)
    for (modality, pathway), scale in zip(pathways.items(), scales):
        stacking = pathway.stacking
        assert stacking is not None  # pathways holds stacked ones only
        stacking.scale.copy_(torch.from_numpy(scale).float())
        stacking.shift.copy_(torch.from_numpy(shifts / len(pathways)).float())
        info[modality]["stacking_scale"] = [round(float(v), 4) for v in scale]
    info["stacking_shift"] = [round(float(v), 4) for v in shifts]
    info["seconds"] = round(time.time() - start, 1)
    log.info("model.wide.fit: stacked: %s", info)
    return {OUT_OF_FOLD[m]: torch.from_numpy(v).float() for m, v in out_of_fold.items()}, info


def _features(
    pathways: dict[str, WidePixels | WideNgrams], dataset: StudyDataset
) -> tuple[dict[str, tuple[Any, np.ndarray]], np.ndarray]:
    """({modality: (features [N, F] (dense pixels, sparse CSR n-grams), bool [N] modality present)},
    int [N, C] labels) of ``dataset``'s items without augmentation."""
    parts: dict[str, list] = {m: [] for m in pathways}
    present: dict[str, list] = {m: [] for m in pathways}
    labels = []
    with torch.no_grad(), dataset.augmentation_off():
        for batch in make_dataloader(dataset, batch_size=FEATURE_BATCH):
            labels.append(batch["labels"].numpy().astype(np.int64))
            for modality, pathway in pathways.items():
                if isinstance(pathway, WidePixels):
                    parts[modality].append(pathway.features(batch["image"]).double().numpy())
                else:
                    parts[modality].append(_sparse_bag(pathway, batch["text_ids"], batch["text_mask"]))
                present[modality].append(batch[f"has_{modality}"].numpy().astype(bool))
    stacked = {
        m: (sp.vstack(p).tocsr() if sp.issparse(p[0]) else np.concatenate(p)) for m, p in parts.items()
    }
    return {m: (stacked[m], np.concatenate(present[m])) for m in pathways}, np.concatenate(labels)


def _sparse_bag(pathway: WideNgrams, ids: Tensor, mask: Tensor) -> sp.csr_matrix:
    """The pathway's n-gram bag of a batch as a CSR matrix [B, num_ngrams] (repeats summed: they weigh 0)."""
    ngram_ids, weights = pathway.features(ids, mask)
    rows = torch.arange(ngram_ids.shape[0])[:, None].expand_as(ngram_ids)
    keep = weights > 0
    return sp.csr_matrix(
        (weights[keep].double().numpy(), (rows[keep].numpy(), ngram_ids[keep].numpy())),
        shape=(ngram_ids.shape[0], pathway.num_ngrams),
    )


def _idf(bag: sp.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency [num_ngrams] of the training bags (scikit-learn's
    ``TfidfTransformer(smooth_idf=True)`` on the binary bags: ``ln((1 + n) / (1 + df)) + 1``)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    return np.asarray(TfidfTransformer(smooth_idf=True).fit(bag > 0).idf_)


def _tfidf(bag: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Binary bags [N, num_ngrams] -> idf-weighted, each row L2-normalised (as ``WideNgrams.features``),
    by scikit-learn's ``TfidfTransformer`` with the given ``idf``."""
    from sklearn.feature_extraction.text import TfidfTransformer

    transformer = TfidfTransformer(smooth_idf=True).fit(bag[:1] > 0)  # fitted only to take ``idf``
    transformer.idf_ = idf
    return sp.csr_matrix(transformer.transform((bag > 0).astype(np.float64)))


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) variance of the training rows with an image."""
    if x.shape[0] == 0:
        raise ConfigError("model.wide.fit: stacked: no training study has an image for the pixel pathway")
    return x.mean(axis=0), x.var(axis=0)


def _out_of_fold(x, y: np.ndarray, present: np.ndarray, c_value: float, folds: int, seed: int) -> np.ndarray:
    """float [N, C]: each present row's logit from a regression fitted (at ``c_value``) on the other
    folds; 0 where the modality is absent (the model zeroes those rows' wide logits)."""
    from sklearn.model_selection import KFold

    logits = np.zeros(y.shape)
    rows = np.flatnonzero(present)
    k = min(folds, len(rows))
    if k < 2:
        raise ConfigError(
            f"model.wide.folds: {len(rows)} training studies with the modality, too few to cross-fit"
        )
    for fit_part, held_out in KFold(k, shuffle=True, random_state=seed).split(rows):
        fold = OneVsRestLogistic()
        fold.fit_at(x[rows[fit_part]], y[rows[fit_part]], c_value)
        logits[rows[held_out]] = fold.logits(x[rows[held_out]])
    return logits


def _stacking_weights(
    out_of_fold: dict[str, np.ndarray], y: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per label, a logistic regression of the label on the pathways' out-of-fold logits.

    Returns (one scale [C] per pathway, in ``out_of_fold`` order; shift [C]). A label with one
    class in the training split keeps scale 1 / M (M pathways) and its training log-odds are left to the
    regression's own intercept (shift 0).
    """
    from sklearn.linear_model import LogisticRegression

    z = np.stack(list(out_of_fold.values()), axis=-1)  # [N, C, M]
    scales = np.full((z.shape[2], y.shape[1]), 1.0 / z.shape[2])
    shifts = np.zeros(y.shape[1])
    for c in range(y.shape[1]):
        if y[:, c].min() == y[:, c].max():
            continue
        # Standardised inputs, so the penalty does not depend on a pathway's logit range (a strongly
        # regularised regression's logits span little and would be shrunk away: demo val, text C 0.01).
        spread = z[:, c, :].std(axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        with one_blas_thread():
            meta = LogisticRegression(C=1.0, max_iter=1000).fit(z[:, c, :] / spread, y[:, c])
        scales[:, c], shifts[c] = meta.coef_[0] / spread, meta.intercept_[0]
    return list(scales), shifts


class WithOutOfFold(Dataset):
    """A training set whose items also carry their out-of-fold logits (``columns``: key -> [N, C])."""

    def __init__(self, dataset: Dataset, columns: dict[str, Tensor]) -> None:
        self.dataset = dataset
        self.columns = columns

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # a map-style dataset of studies

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        return {**item, **{key: column[index] for key, column in self.columns.items()}}

    def set_random_state(self, seed: int) -> None:
        """Forwarded to the wrapped dataset (its augmentation; see ``seed_worker``)."""
        if hasattr(self.dataset, "set_random_state"):
            self.dataset.set_random_state(seed)
