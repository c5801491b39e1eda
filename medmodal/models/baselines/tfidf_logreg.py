"""``tfidf_logreg``: logistic regression on TF-IDF word n-grams of the input text (text only).

scikit-learn ``TfidfVectorizer`` (lower-cased words, 1- to ``ngram_max``-grams, sublinear
term frequency, fitted on the training studies' input text) and one logistic regression
per label (:class:`~medmodal.models.baselines.base.OneVsRestLogistic`, C chosen on the
validation split). Studies without input text get the training prevalence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from medmodal.models.baselines.base import (
    BaselineData,
    Hide,
    LogisticBaseline,
    LogisticSettings,
    State,
    check_shape,
    register_baseline,
)

MAX_VOCABULARY = 1_000_000  # a stored vocabulary beyond this is refused (memory)


class TfidfSettings(LogisticSettings):
    ngram_max: int = Field(2, ge=1, le=4)
    min_df: int = Field(1, ge=1)
    max_features: int | None = Field(50_000, ge=1, le=MAX_VOCABULARY)


class TfidfFeatures:
    """A TF-IDF vectorizer that stores as JSON (vocabulary, settings) + one array (idf), never pickled."""

    def __init__(self, ngram_max: int = 2, min_df: int = 1, max_features: int | None = None):
        self.params = {"ngram_max": ngram_max, "min_df": min_df, "max_features": max_features}
        self.vectorizer: Any = None  # sklearn's TfidfVectorizer once made (sklearn has no type information)

    def _make(self, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        p = self.params
        return TfidfVectorizer(
            ngram_range=(1, p["ngram_max"]),
            min_df=p["min_df"],
            max_features=p["max_features"],
            sublinear_tf=True,
            vocabulary=vocabulary,
        )

    def fit_transform(self, texts: list[str]):
        """Fit on ``texts`` -> sparse [N, V]. Texts without a single word fit an empty-vocabulary stand-in."""
        self.vectorizer = self._make()
        try:
            return self.vectorizer.fit_transform(texts)
        except ValueError:  # empty vocabulary (no words in the training text): no text features
            self.vectorizer = self._make({"": 0})
            self.vectorizer.idf_ = np.ones(1)
            return self.vectorizer.transform(texts)

    def transform(self, texts: list[str]):
        return self.vectorizer.transform(texts)

    @property
    def size(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def state(self) -> State:
        vocabulary = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        return {"params": self.params, "vocabulary": vocabulary}, {"idf": np.asarray(self.vectorizer.idf_)}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        vocabulary = meta["vocabulary"]
        if not isinstance(vocabulary, dict) or len(vocabulary) > MAX_VOCABULARY:
            raise ValueError("baseline state 'vocabulary': expected a mapping term -> index")
        if sorted(vocabulary.values()) != list(range(len(vocabulary))):
            raise ValueError("baseline state 'vocabulary': indices must be 0 .. V-1, each once")
        check_shape("idf", arrays["idf"], (len(vocabulary),))
        self.params = {k: meta["params"][k] for k in ("ngram_max", "min_df", "max_features")}
        self.vectorizer = self._make(vocabulary)
        self.vectorizer.idf_ = arrays["idf"]


@register_baseline("tfidf_logreg")
class TfidfLogistic(LogisticBaseline[TfidfSettings]):
    """TF-IDF n-grams of the input text + one-vs-rest logistic regression (module docstring)."""

    modality = "text"
    Settings = TfidfSettings
    features: TfidfFeatures

    def make_features(self) -> TfidfFeatures:
        s = self.settings
        return TfidfFeatures(s.ngram_max, s.min_df, s.max_features)

    def inputs(self, data: BaselineData, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(object [N] input texts, "" where missing or hidden; bool [N] the text is non-empty)."""
        return np.array(data.texts(hide), dtype=object), data.has_text(hide)

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        return {**super().fit(train, val), "vocabulary_size": self.features.size}

    def state(self) -> State:
        f_meta, f_arrays = self.features.state()
        l_meta, l_arrays = self.logistic.state()
        return {"features": f_meta, "logistic": l_meta}, {**f_arrays, **l_arrays}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        self.features.load_state(meta["features"], arrays)
        self.logistic.load_state(arrays, n_labels, self.features.size)
