"""What the baselines share: their view of a split, the base class, the one-vs-rest logistic regression.

A baseline sees a split as :class:`BaselineData` (the studies of a manifest split, read
with the same :func:`~medmodal.data.pipeline.read_dataset` as deep runs): input text,
downsampled images, multi-hot targets, true boxes and reference reports, each computed
once and cached.

Every baseline is a :class:`Baseline` with a pydantic ``Settings`` model (unknown or bad
settings fail naming the field), ``fit`` on the training split (model selection on the
validation split, never the test split), ``predict`` and a pickle-free ``state`` (JSON
metadata + numpy arrays) that :meth:`Baseline.load_state` reads back; :func:`register_baseline`
registers it under its name. The classifiers that end in one logistic regression per label
subclass :class:`LogisticBaseline` (fitted input features + :class:`OneVsRestLogistic`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medmodal.config import ConfigError
from medmodal.data.dataset import StudyDataset
from medmodal.data.pipeline import label_matrix, true_boxes_normalised
from medmodal.data.types import Study
from medmodal.evaluation.metrics import classification_metrics
from medmodal.models.registry import register

log = logging.getLogger(__name__)

Task = Literal["classification", "localization", "generation"]
Modality = Literal["image", "text", "both", "none"]
Hide = dict[str, np.ndarray]
State = tuple[dict[str, Any], dict[str, np.ndarray]]


class BaselineSettings(BaseModel):
    """Base of each baseline's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


S = TypeVar("S", bound=BaselineSettings)


# ------------------------------------------------------------------------ data
@dataclass
class BaselineData:
    """One split as the baselines see it.

    studies: the split's studies; labels: the C label names (run order);
    text_fields / target_fields: report sections of the input text and of the reference report.
    Build it from a config with :meth:`from_config`.
    """

    studies: list[Study]
    labels: list[str]
    text_fields: tuple[str, ...] = ("indication",)
    target_fields: tuple[str, ...] = ("findings", "impression")
    image_size: int = 128  # data.image_size: the deep models' input side (the linear probe's default)
    _images: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, studies: Sequence[Study], labels: Sequence[str], config: Any) -> BaselineData:
        """The split ``studies`` with the fields and image size of ``config`` (a :class:`~medmodal.config.Config`)."""
        d = config.data
        return cls(list(studies), list(labels), tuple(d.text_fields), tuple(d.target_fields), d.image_size)

    def __len__(self) -> int:
        return len(self.studies)

    def texts(self, hide: Hide | None = None) -> list[str]:
        """N input texts (sections joined by a newline); "" where missing or hidden."""
        hidden = _mask(hide, "text", len(self))
        return ["" if h else s.text(self.text_fields, sep="\n") for s, h in zip(self.studies, hidden)]

    def has_text(self, hide: Hide | None = None) -> np.ndarray:
        """bool [N]: the input text is non-empty and not hidden."""
        return np.array([bool(t.strip()) for t in self.texts(hide)], dtype=bool)

    def images(self, size: int, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [N, size, size] in [0, 1], zeros where missing; bool [N] image present and not hidden).

        Decoded and resized exactly as the deep models' dataset does (antialiased bilinear,
        uint8 step); an unreadable file counts as missing (logged once by the dataset).
        """
        if size not in self._images:
            self._images[size] = _read_images(self.studies, size)
        pixels, present = self._images[size]
        present = present & ~_mask(hide, "image", len(self))
        return np.where(present[:, None, None], pixels, 0.0).astype(np.float32), present

    def targets(self) -> np.ndarray:
        """int [N, C] multi-hot labels."""
        return label_matrix(self.studies, self.labels).numpy().astype(np.int64)

    def true_boxes(self) -> list[list[tuple[int, list[float]]]]:
        """Per study, every true box as (class index, normalised xyxy) (the localization metric's input)."""
        return true_boxes_normalised(self.studies, self.labels)

    def references(self) -> list[str]:
        """N reference reports: the target sections joined by a blank line (as ``evaluate`` joins them)."""
        return [s.text(self.target_fields, sep="\n\n") for s in self.studies]


def _mask(hide: Hide | None, modality: str, n: int) -> np.ndarray:
    mask = (hide or {}).get(modality)
    return np.zeros(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def _read_images(studies: Sequence[Study], size: int) -> tuple[np.ndarray, np.ndarray]:
    # The deep models' own image path (decode, resize, uint8 step), without the cache: one pass.
    # ``stored_image`` reads no text, so the dataset needs no tokenizer.
    dataset = StudyDataset(studies, None, [], image_size=size, cache_images=False)  # type: ignore[arg-type]
    pixels = np.zeros((len(studies), size, size), dtype=np.float32)
    present = np.zeros(len(studies), dtype=bool)
    for i in range(len(studies)):
        stored = dataset.stored_image(i)
        if stored is not None:
            pixels[i] = stored[0][0].numpy().astype(np.float32) / 255.0
            present[i] = True
    return pixels, present


# ----------------------------------------------------------------- base class
class Baseline(Generic[S]):
    """A fitted-on-train, selected-on-val scikit-learn baseline (see the module docstring).

    Subclasses (``Baseline[TheirSettings]``) set ``task``, ``modality`` and ``Settings`` and
    implement ``fit``, ``predict``, ``state`` and ``load_state``; :func:`register_baseline`
    gives them their ``name``.
    """

    name: ClassVar[str]
    task: ClassVar[Task]
    modality: ClassVar[Modality]
    Settings: ClassVar[type[BaselineSettings]] = BaselineSettings
    settings: S

    def __init__(self, *, seed: int = 0, table: dict[str, dict[str, Any]] | None = None, **settings: Any):
        """seed: random seed (encoder initialisation); table: every baseline's settings by name
        (a composite baseline builds its parts from it); settings: this baseline's own."""
        try:
            self.settings = cast(S, self.Settings(**settings))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"baseline.kwargs.{self.name}: {problems}") from None
        self.seed = seed
        self.table = table or {}

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        """Fit on ``train`` (choose settings on ``val``); returns what was chosen, for ``training_done.json``."""
        raise NotImplementedError

    def state(self) -> State:
        """(JSON-serialisable metadata, named numpy arrays): everything ``load_state`` needs."""
        raise NotImplementedError

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        """Restore the fitted state written by :meth:`state` (shapes checked against ``n_labels``)."""
        raise NotImplementedError


B = TypeVar("B", bound=type[Baseline])


def register_baseline(name: str) -> Callable[[B], B]:
    """Class decorator: the baseline ``name`` of the registry (``create("baseline", name)``) is this class."""

    def add(cls: B) -> B:
        cls.name = name
        return register("baseline", name)(cls)

    return add


class ClassifierBaseline(Baseline[S]):
    """A baseline for the classification task: probabilities [N, C] per study."""

    task: ClassVar[Task] = "classification"

    image_size: int = 32  # the side its images are read at (image classifiers set theirs)

    def available(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        """bool [N]: the studies whose input this classifier reads (others get the training prevalence)."""
        if self.modality == "text":
            return data.has_text(hide)
        if self.modality == "image":
            return data.images(self.image_size, hide)[1]
        return data.has_text(hide) | data.images(self.image_size, hide)[1]

    def predict(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        """float [N, C] probabilities; the training prevalence where the input is missing or hidden."""
        raise NotImplementedError

    def components(self, data: BaselineData, hide: Hide | None = None) -> dict[str, np.ndarray]:
        """Per-modality probabilities of a fused baseline (``{"image": [N, C], "text": [N, C]}``); {} otherwise."""
        return {}


# ------------------------------------------------------ logistic regression
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


class OneVsRestLogistic:
    """One logistic regression per label (scikit-learn ``LogisticRegression``), one C for all labels.

    C is the value of ``c_grid`` with the best macro AUROC on the validation split (labels with
    both classes there); a label with a single class in the training data gets no regression
    and predicts its smoothed training prevalence ``(k + 0.5) / (n + 1)`` for every study.
    Fitted state: ``coef`` [C, D], ``intercept`` [C] -- probabilities are ``sigmoid(X coef^T + b)``.
    """

    def __init__(
        self,
        c_grid: Sequence[float] = DEFAULT_C_GRID,
        class_weight: str | None = "balanced",
        max_iter: int = 2000,
    ):
        self.c_grid = tuple(float(c) for c in c_grid)
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.prior: np.ndarray | None = None

    def fit(self, x_train, y_train: np.ndarray, x_val, y_val: np.ndarray) -> dict[str, Any]:
        """Fit on (x_train [N, D], y_train [N, C]); choose C on (x_val, y_val). Returns the choice."""
        if x_train.shape[0] == 0:
            raise ValueError("no training studies with this input")
        n = y_train.shape[0]
        self.prior = _smoothed_prevalence(y_train)
        scores: dict[float, float | None] = {}
        fitted: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        for value in self.c_grid:
            fitted[value] = self._fit_one_c(x_train, y_train, value)
            scores[value] = (
                _macro_auroc(y_val, _sigmoid(_linear(x_val, *fitted[value]))) if x_val.shape[0] else None
            )
        known = {k: v for k, v in scores.items() if v is not None}
        chosen = max(known, key=lambda c: known[c]) if known else (1.0 if 1.0 in fitted else self.c_grid[0])
        if not known:
            log.warning("no validation label with both classes: C = %g without selection", chosen)
        self.coef, self.intercept = fitted[chosen]
        return {
            "C": chosen,
            "val_auroc_macro_by_C": {str(k): v for k, v in scores.items()},
            "constant_labels": int((~_two_classes(y_train)).sum()),
            "n_train": int(n),
        }

    def fit_at(self, x, y: np.ndarray, c_value: float) -> None:
        """Fit on (x [N, D], y [N, C]) with the given C, no selection (e.g. a cross-fitting fold)."""
        self.prior = _smoothed_prevalence(y)
        self.coef, self.intercept = self._fit_one_c(x, y, c_value)

    def logits(self, x) -> np.ndarray:
        """float [N, C] log-odds ``x coef^T + intercept``."""
        if self.coef is None or self.intercept is None:  # set together by fit and load_state
            raise RuntimeError("the logistic regression is not fitted")
        return _linear(x, self.coef, self.intercept)

    def _fit_one_c(self, x, y: np.ndarray, c_value: float) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        assert self.prior is not None  # set by fit before any C is fitted
        coef = np.zeros((y.shape[1], x.shape[1]))
        intercept = _logit(self.prior)
        with one_blas_thread():
            for j in np.flatnonzero(_two_classes(y)):
                model = LogisticRegression(C=c_value, class_weight=self.class_weight, max_iter=self.max_iter)
                model.fit(x, y[:, j])
                coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        return coef, intercept

    def predict_proba(self, x) -> np.ndarray:
        """float [N, C] probabilities."""
        return _sigmoid(self.logits(x))

    def state(self) -> State:
        # Only called on a fitted (or loaded) model: fit and load_state set all three arrays.
        assert self.coef is not None and self.intercept is not None and self.prior is not None
        return (
            {"c_grid": list(self.c_grid), "class_weight": self.class_weight},
            {"coef": self.coef.astype(np.float64), "intercept": self.intercept, "prior": self.prior},
        )

    def load_state(self, arrays: dict[str, np.ndarray], n_labels: int, n_features: int) -> None:
        coef, intercept, prior = arrays["coef"], arrays["intercept"], arrays["prior"]
        check_shape("coef", coef, (n_labels, n_features))
        check_shape("intercept", intercept, (n_labels,))
        check_shape("prior", prior, (n_labels,))
        self.coef, self.intercept, self.prior = coef, intercept, prior


def _smoothed_prevalence(y: np.ndarray) -> np.ndarray:
    """[C] ``(k + 0.5) / (n + 1)`` per label: the prediction of a label without a regression."""
    return (y.sum(axis=0) + 0.5) / (y.shape[0] + 1.0)


def one_blas_thread() -> Any:
    """A context in which numpy / scipy BLAS use one thread (``threadpoolctl``).

    These regressions are small (hundreds of rows): in a process that has run torch, whose OpenMP
    workers keep spinning between operations, a multi-threaded BLAS fights them for the cores. On the
    2-core machine ``pixel_logreg`` took 28.6 s in ``make demo`` and 3.1 s with one thread.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    """A stored array of the wrong shape or kind is a broken run folder, not a crash later."""
    if array.shape != shape or array.dtype.kind not in "fiub":
        raise ValueError(
            f"baseline state '{name}': expected a numeric array of shape {shape}, "
            f"got {array.dtype} {array.shape}"
        )


def _two_classes(y: np.ndarray) -> np.ndarray:
    return (y.min(axis=0) != y.max(axis=0)) if len(y) else np.zeros(y.shape[1], dtype=bool)


def _linear(x, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return np.asarray(x @ coef.T) + intercept


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def _logit(p: np.ndarray) -> np.ndarray:
    from scipy.special import logit

    return logit(np.clip(p, 1e-6, 1 - 1e-6))


def _macro_auroc(y: np.ndarray, probs: np.ndarray) -> float | None:
    return classification_metrics(probs, y)["auroc_macro"]


def prevalence_fill(probs: np.ndarray, available: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``probs`` with the rows of unavailable studies replaced by the training prevalence."""
    out = np.array(probs, dtype=np.float64, copy=True)
    out[~available] = prior
    return out


# ------------------------------------------------- logistic-regression classifiers
class FeatureMap(Protocol):
    """What a :class:`LogisticBaseline` fits on its training inputs (:class:`Standardizer`, TF-IDF)."""

    def fit_transform(self, x: Any) -> Any: ...

    def transform(self, x: Any) -> Any: ...


class Standardizer:
    """scikit-learn ``StandardScaler`` whose fitted mean / scale store as two arrays."""

    def __init__(self) -> None:
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler()

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.scaler.fit_transform(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.scaler.transform(x)

    @property
    def size(self) -> int:
        """The number of features it was fitted on."""
        return len(self.scaler.mean_)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.scaler.mean_, "scale": self.scaler.scale_}

    def load_state(self, arrays: dict[str, np.ndarray], n_features: int) -> None:
        check_shape("mean", arrays["mean"], (n_features,))
        check_shape("scale", arrays["scale"], (n_features,))
        self.scaler.mean_, self.scaler.scale_ = arrays["mean"], arrays["scale"]
        self.scaler.var_ = arrays["scale"] ** 2
        self.scaler.n_features_in_ = n_features


class LogisticSettings(BaselineSettings):
    """The settings every :class:`LogisticBaseline` has: the values of C tried, the class weights."""

    c_grid: list[float] = Field(list(DEFAULT_C_GRID), min_length=1)
    class_weight: str | None = "balanced"


L = TypeVar("L", bound=LogisticSettings)


class LogisticBaseline(ClassifierBaseline[L]):
    """A classifier that is fitted features of its input + :class:`OneVsRestLogistic`.

    Subclasses give :meth:`inputs` (each study's raw input and whether it is there) and, when
    not a :class:`Standardizer`, :meth:`make_features`. ``fit`` fits ``features`` and the
    regressions on the training studies that have the input (C chosen on the validation
    studies that have it); ``predict`` gives the others the training prevalence.
    """

    features: FeatureMap

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.features = self.make_features()
        self.logistic = OneVsRestLogistic(self.settings.c_grid, self.settings.class_weight)

    def make_features(self) -> FeatureMap:
        """The (unfitted) map from the raw inputs to the regressions' features."""
        return Standardizer()

    def inputs(self, data: BaselineData, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(the raw input of each study, [N, ...]; bool [N]: the input is there and not hidden)."""
        raise NotImplementedError

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        x_train, keep_train = self.inputs(train)
        x_val, keep_val = self.inputs(val)
        return self.logistic.fit(
            self.features.fit_transform(x_train[keep_train]),
            train.targets()[keep_train],
            self.features.transform(x_val[keep_val]),
            val.targets()[keep_val],
        )

    def predict(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        x, present = self.inputs(data, hide)
        probs = self.logistic.predict_proba(self.features.transform(x))
        assert self.logistic.prior is not None  # predict_proba raised if unfitted; fit / load_state set it
        return prevalence_fill(probs, present, self.logistic.prior)


class ImageSettings(LogisticSettings):
    """The settings of an image :class:`ImageLogisticBaseline`: ``size``, the side its images are read at."""

    size: int | None = None  # None: the baseline's ``default_size``


I = TypeVar("I", bound=ImageSettings)


class ImageLogisticBaseline(LogisticBaseline[I]):
    """A :class:`LogisticBaseline` on the image (standardised features of it), read at
    ``image_size``: ``settings.size``, else the class's ``default_size``."""

    modality = "image"
    default_size: ClassVar[int] = 32
    features: Standardizer

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_size = self.settings.size or self.default_size
