"""Simple baselines as first-class models: scikit-learn, the same splits, metrics and run folders.

Registered under the ``baseline`` kind of :mod:`medmodal.models.registry`, one file per family:

================  ==============  ======================================================================
name              task            what it is
================  ==============  ======================================================================
tfidf_logreg      classification  TF-IDF word 1-2-grams of the input text + logistic regression
pixel_logreg      classification  image downsampled to 32 x 32 pixels + logistic regression
linear_probe      classification  frozen image-encoder features (ours / MONAI) + logistic regression
late_fusion       classification  mean of a text and an image baseline's probabilities
mean_box          localization    the mean training box of each finding, for every study
nearest_report    generation      the report of the nearest training study (TF-IDF cosine or pixels)
template_report   generation      one sentence per finding the run's classifier predicts
================  ==============  ======================================================================

A run combines up to one of each task (``baseline.classifier`` / ``boxes`` / ``report`` of
the config); :mod:`medmodal.training.baselines` fits it into a run folder that ``medmodal
evaluate`` scores with the deep models' metric code, and benchmark cells use them like any
model. Hyperparameters (C of the logistic regressions, report thresholds) are chosen on the
validation split, never the test split. Fitted baselines store as JSON + ``.npz`` arrays read
without pickle (:mod:`medmodal.models.baselines.storage`). See docs/baselines.md.
"""

from medmodal.models.baselines import (  # noqa: F401  (importing registers them)
    late_fusion,
    linear_probe,
    mean_box,
    nearest_report,
    pixel_logreg,
    template_report,
    tfidf_logreg,
)
from medmodal.models.baselines.base import Baseline, BaselineData, ClassifierBaseline

__all__ = ["Baseline", "BaselineData", "ClassifierBaseline"]
