"""``medmodal search``: nearest studies to an image (by report) or to a text (by image).

The dataset's studies are embedded once and their two indexes (images, reports) cached in
``RUN/index/``; the cache is rebuilt when the dataset's manifest, the index kind or the
model checkpoint changes. A cached faiss file is read only if this user wrote it
(:meth:`medmodal.retrieval.index.VectorIndex.load`); one from another machine is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmodal.data.pipeline import read_dataset
from medmodal.data.types import Study
from medmodal.retrieval.embed import StudyEmbeddings, embed_image_file, embed_studies, embed_texts
from medmodal.retrieval.index import IndexKind, VectorIndex
from medmodal.runs import write_json_atomic
from medmodal.training.pretrain import PretrainedRun

log = logging.getLogger(__name__)


def _fingerprint(run: PretrainedRun, manifest_path: Path, kind: str) -> str:
    """Changes when the manifest, the checkpoint or the index kind changes."""
    checkpoint = run.run.model_checkpoint()
    parts = [str(manifest_path.resolve()), str(manifest_path.stat().st_mtime_ns), str(manifest_path.stat().st_size),
             str(checkpoint.stat().st_mtime_ns), kind]  # fmt: skip
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class StudySearch:
    """Two indexes over a dataset's studies: their images and their reports."""

    run: PretrainedRun
    studies: list[Study]
    image_index: VectorIndex
    text_index: VectorIndex
    image_rows: np.ndarray  # int [n_images]: index row -> position in ``studies``
    text_rows: np.ndarray  # int [n_reports]

    @classmethod
    def for_dataset(cls, run: PretrainedRun, data: str | Path, kind: IndexKind | None = None) -> StudySearch:
        """Load the cached indexes of ``data`` from ``RUN/index/`` or build (and cache) them."""
        kind = kind or run.config.pretrain.index
        manifest = read_dataset(data, run.config, labels=run.labels)
        studies = manifest.studies
        if not studies:
            raise ValueError(f"{manifest.path}: no studies to search")
        folder = run.run.root / "index"
        meta_path = folder / "meta.json"
        key = _fingerprint(run, Path(manifest.path), kind)
        if meta_path.exists() and json.loads(meta_path.read_text()).get("fingerprint") == key:
            meta = json.loads(meta_path.read_text())
            try:
                return cls(run, studies, VectorIndex.load(folder / "images.faiss"), VectorIndex.load(folder / "reports.faiss"),
                           np.array(meta["image_rows"], dtype=np.int64), np.array(meta["text_rows"], dtype=np.int64))  # fmt: skip
            except (FileNotFoundError, ValueError, KeyError, TypeError) as err:  # an older or damaged cache
                log.warning("%s: cached index not usable (%s); rebuilding it", folder, err)
        search = cls.build(run, studies, kind)
        search.image_index.save(folder / "images.faiss")
        search.text_index.save(folder / "reports.faiss")
        write_json_atomic(meta_path, {"fingerprint": key, "data": str(manifest.path), "kind": kind,
                                      "image_rows": search.image_rows.tolist(), "text_rows": search.text_rows.tolist()})  # fmt: skip
        return search

    @classmethod
    def build(cls, run: PretrainedRun, studies: list[Study], kind: IndexKind = "flat") -> StudySearch:
        """Embed ``studies`` and index the images and the reports that are present."""
        embeddings: StudyEmbeddings = embed_studies(run, studies)
        image_rows = np.flatnonzero(embeddings.has_image)
        text_rows = np.flatnonzero(embeddings.has_text)
        if len(image_rows) == 0 or len(text_rows) == 0:
            raise ValueError("the dataset needs studies with images and studies with report text to search")
        dim = embeddings.image.shape[1]
        image_index = VectorIndex(dim, kind).build(embeddings.image[image_rows])
        text_index = VectorIndex(dim, kind).build(embeddings.text[text_rows])
        return cls(run, studies, image_index, text_index, image_rows, text_rows)

    # ------------------------------------------------------------------- queries
    def by_image(self, path: str | Path, k: int = 5) -> list[dict[str, Any]]:
        """Studies whose *reports* are nearest to the image at ``path``."""
        return self._hits(self.text_index, self.text_rows, embed_image_file(self.run, path), k)

    def by_text(self, text: str, k: int = 5) -> list[dict[str, Any]]:
        """Studies whose *images* are nearest to ``text``."""
        if not text.strip():
            raise ValueError("--text is empty")
        return self._hits(self.image_index, self.image_rows, embed_texts(self.run, [text]), k)

    def _hits(self, index: VectorIndex, rows: np.ndarray, query: np.ndarray, k: int) -> list[dict[str, Any]]:
        scores, found = index.search(query, k)
        fields = self.run.config.pretrain.text_fields
        hits = []
        for rank, (score, item) in enumerate(zip(scores[0].tolist(), found[0].tolist()), start=1):
            if item < 0:
                continue
            study = self.studies[int(rows[item])]
            hits.append({
                "rank": rank, "id": study.id, "score": round(float(score), 4),
                "image": str(study.image) if study.image is not None else None,
                "report": study.text(fields, sep=" "), "labels": sorted(study.labels),
            })  # fmt: skip
        return hits
