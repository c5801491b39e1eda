"""``nearest_report``: the report of the most similar training study, copied verbatim.

Similarity by ``by``:

- ``text``: cosine similarity of TF-IDF vectors of the input text (the indication by
  default; :class:`~medmodal.models.baselines.tfidf_logreg.TfidfFeatures`);
- ``image``: Euclidean distance of the images downsampled to ``size`` x ``size`` pixels.

A study without that input gets the training report nearest to the training centroid
(a "typical" report). Ties go to the earliest training study. The run folder stores the
training reports (the baseline needs them), so share it only where the reports may go.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from medmodal.models.baselines.base import (
    Baseline,
    BaselineData,
    BaselineSettings,
    Hide,
    Modality,
    State,
    check_shape,
    register_baseline,
)
from medmodal.models.baselines.tfidf_logreg import TfidfFeatures

MAX_REPORTS = 5_000_000
QUERY_CHUNK = 1024  # queries per similarity block (memory: QUERY_CHUNK x training studies)


class NearestSettings(BaselineSettings):
    by: Literal["text", "image"] = "text"
    size: int = Field(32, ge=4, le=256)  # image side for by=image
    ngram_max: int = Field(2, ge=1, le=4)  # TF-IDF for by=text


@register_baseline("nearest_report")
class NearestReport(Baseline[NearestSettings]):
    """Copy the report of the nearest training study (module docstring)."""

    task = "generation"
    modality: ClassVar[Modality] = "text"  # overwritten per instance from ``by``
    Settings = NearestSettings

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.modality = self.settings.by  # type: ignore[misc]
        self.features = TfidfFeatures(self.settings.ngram_max)
        self.reports: list[str] = []
        self.keys: Any = None  # [M, D] training vectors (sparse for text)
        self.default = 0  # index of the report for studies without the input

    def _vectors(self, data: BaselineData, hide: Hide | None = None, fit: bool = False):
        if self.settings.by == "text":
            texts = data.texts(hide)
            return (
                self.features.fit_transform(texts) if fit else self.features.transform(texts)
            ), data.has_text(hide)
        pixels, present = data.images(self.settings.size, hide)
        return pixels.reshape(len(data), -1).astype(np.float32), present

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        vectors, present = self._vectors(train, fit=True)
        keep = np.flatnonzero(present)
        if keep.size == 0:
            raise ValueError(f"nearest_report (by {self.settings.by}): no training study has that input")
        references = train.references()
        self.reports = [references[i] for i in keep]
        self.keys = vectors[keep]
        centroid = np.asarray(self.keys.mean(axis=0)).reshape(1, -1)
        self.default = int(self._nearest(centroid)[0])
        return {"n_reports": len(self.reports)}

    def _nearest(self, queries) -> np.ndarray:
        """Index of the nearest training study for each query row."""
        if self.settings.by != "text":
            from sklearn.metrics import pairwise_distances_argmin

            return pairwise_distances_argmin(queries, self.keys)
        chosen = []
        for start in range(0, queries.shape[0], QUERY_CHUNK):  # TF-IDF rows are unit length: cosine = dot
            sims = queries[start : start + QUERY_CHUNK] @ self.keys.T
            chosen.append(np.asarray(sims.toarray() if hasattr(sims, "toarray") else sims).argmax(axis=1))
        return np.concatenate(chosen)

    def predict(
        self, data: BaselineData, probs: np.ndarray | None = None, hide: Hide | None = None
    ) -> list[str]:
        """N reports."""
        vectors, present = self._vectors(data, hide)
        chosen = np.full(len(data), self.default)
        rows = np.flatnonzero(present)
        if rows.size:
            chosen[rows] = self._nearest(vectors[rows])
        return [self.reports[i] for i in chosen]

    def state(self) -> State:
        meta: dict[str, Any] = {"reports": self.reports, "default": self.default}
        if self.settings.by == "text":
            f_meta, arrays = self.features.state()
            keys = self.keys.tocsr()
            arrays.update({"keys_data": keys.data, "keys_indices": keys.indices, "keys_indptr": keys.indptr})
            meta["features"] = f_meta
        else:
            arrays = {"keys": self.keys}
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        reports = meta["reports"]
        if (
            not isinstance(reports, list)
            or not 0 < len(reports) <= MAX_REPORTS
            or not all(isinstance(r, str) for r in reports)
        ):
            raise ValueError("baseline state 'reports': expected a non-empty list of strings")
        if not 0 <= int(meta["default"]) < len(reports):
            raise ValueError("baseline state 'default': not an index of the stored reports")
        self.reports, self.default = reports, int(meta["default"])
        m = len(reports)
        if self.settings.by == "image":
            check_shape("keys", arrays["keys"], (m, self.settings.size**2))
            self.keys = arrays["keys"]
            return
        from scipy.sparse import csr_matrix

        self.features.load_state(meta["features"], arrays)
        indptr, indices = arrays["keys_indptr"], arrays["keys_indices"]
        check_shape("keys_indptr", indptr, (m + 1,))
        check_shape("keys_data", arrays["keys_data"], indices.shape)
        v = self.features.size
        if (
            indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(indices)
            or (len(indices) and (indices.min() < 0 or indices.max() >= v))
        ):
            raise ValueError("baseline state 'keys': not a valid sparse matrix of the stored vocabulary")
        self.keys = csr_matrix((arrays["keys_data"], indices, indptr), shape=(m, v))
