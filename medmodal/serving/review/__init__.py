"""The case-review page and the reader study, served by the inference service.

``/review/`` is a plain HTML + JavaScript page (``static/``; no CDN, works offline):
a worklist of the dataset's studies; for each case the image with the predicted
boxes (and the reference boxes) over a saliency overlay, the input text with word
attention highlights, the predicted findings, the generated report beside the
reference report, and the reader's rating form (clinically acceptable yes/no, error
types, comment) stored through :class:`~medmodal.serving.ratings.RatingStore`.

Saliency overlay: the localization head's per-class heatmaps (``ModelOutput.box_heatmaps``,
the spatial logits the predicted boxes are computed from), each turned into a spatial
softmax scaled to [0, 1], weighted by the class probability, maximum over the predicted
classes (or the most probable class when none is predicted).

JSON API under ``/v1/review/`` (same API key as the rest of ``/v1``):
``GET studies``, ``GET studies/{id}``, ``GET studies/{id}/image.png``,
``GET studies/{id}/saliency.png``, ``POST ratings``, ``GET ratings``,
``GET ratings.csv``, ``GET ratings/summary``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medmodal.data.dataset import TARGET_SEP
from medmodal.data.images import load_image
from medmodal.data.inputs import study_from_inputs
from medmodal.data.types import Study
from medmodal.serving.predictor import Predictor
from medmodal.serving.ratings import ERROR_TYPES, MAX_COMMENT_CHARS, MAX_NAME_CHARS, Rating, RatingStore
from medmodal.serving.security import RequestRejected

__all__ = ["RatingIn", "ReviewService", "mount_review", "png_bytes", "saliency_map"]

STATIC = Path(__file__).parent / "static"
SALIENCY_COLOUR = (255, 64, 0)


class RatingIn(BaseModel):
    """A reader's rating as the page posts it."""

    study_id: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    reader: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    acceptable: bool
    errors: list[str] = Field(default_factory=list, max_length=len(ERROR_TYPES))
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class ReviewService:
    """Studies of one split, their (cached) predictions and renderings, and the ratings store."""

    def __init__(
        self,
        predictor: Predictor,
        data: str | Path,
        *,
        split: str,
        ratings_url: str | Path,
        worker: Any,
        model_name: str,
    ):
        self.predictor = predictor
        self.worker = worker
        self.model_name = model_name
        manifest = predictor.trained.read_data(data)
        self.studies = {s.id: s for s in (manifest.split(split) or manifest.studies)}
        self.split = split
        self.ratings = RatingStore(ratings_url)
        self._predictions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ studies
    def study(self, study_id: str) -> Study:
        try:
            return self.studies[study_id]
        except KeyError:
            raise RequestRejected(404, f"no study '{study_id}' in the review worklist") from None

    def worklist(self) -> list[dict[str, Any]]:
        rated: dict[str, int] = {}
        for row in self.ratings.records():
            if row["model"] == self.model_name:
                rated[row["study_id"]] = rated.get(row["study_id"], 0) + 1
        return [
            {
                "id": s.id,
                "site": s.site or "",
                "reference_labels": s.labels,
                "has_image": s.image is not None,
                "n_ratings": rated.get(s.id, 0),
            }
            for s in self.studies.values()
        ]

    def model_inputs(self, study: Study) -> tuple[Path | None, dict[str, str] | None]:
        fields = self.predictor.trained.config.data.text_fields
        text = {f: study.sections[f] for f in fields if study.sections.get(f)}
        return study.image, text or None

    def prediction(self, study: Study) -> dict[str, Any]:
        """Predictor output for ``study`` (computed on the model worker once, then cached)."""
        with self._lock:
            cached = self._predictions.get(study.id)
        if cached is None:
            image, text = self.model_inputs(study)
            cached = self.worker.call(self.predictor.predict, image, text)
            with self._lock:
                self._predictions[study.id] = cached
        return cached

    def case(self, study_id: str) -> dict[str, Any]:
        study = self.study(study_id)
        config = self.predictor.trained.config
        reference = TARGET_SEP.join(
            study.sections[f] for f in config.data.target_fields if study.sections.get(f)
        )
        return {
            "id": study.id,
            "site": study.site or "",
            "model": self.model_name,
            "input_text": {f: study.sections.get(f, "") for f in config.data.text_fields},
            "reference_report": reference,
            "reference_labels": study.labels,
            "reference_boxes": [{"label": b.label, "box": list(b.box)} for b in study.boxes],
            "prediction": self.prediction(study),
            "ratings": self.ratings.records(study.id),
            "error_types": list(ERROR_TYPES),
        }

    # --------------------------------------------------------------- renderings
    def image_png(self, study_id: str) -> bytes:
        study = self.study(study_id)
        if study.image is None:
            raise RequestRejected(404, f"study '{study_id}' has no image")
        pixels = np.round(load_image(study.image) * 255).astype(np.uint8)
        return png_bytes(Image.fromarray(pixels, mode="L"))

    def saliency_png(self, study_id: str) -> bytes:
        """RGBA PNG at the stored image's size: colour where the localization heatmaps point."""
        study = self.study(study_id)
        if study.image is None or self.predictor.trained.model.localizer is None:
            raise RequestRejected(
                404, f"no saliency for study '{study_id}' (no image or no localization head)"
            )
        image, text = self.model_inputs(study)
        heatmaps, probs = self.worker.call(self._heatmaps, image, text)
        height, width = load_image(study.image).shape
        weights = saliency_map(heatmaps, probs, self.predictor.trained.config.evaluate.threshold)
        resized = F.interpolate(
            weights[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
        alpha = np.round(resized.clamp(0, 1).numpy() * 200).astype(np.uint8)
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = SALIENCY_COLOUR
        rgba[..., 3] = alpha
        return png_bytes(Image.fromarray(rgba, mode="RGBA"))

    @torch.no_grad()
    def _heatmaps(self, image: Path | None, text: dict[str, str] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (heatmaps [C, h, w], probabilities [C]) of one study."""
        cfg = self.predictor.trained.config
        batch = self.predictor.batch_for(study_from_inputs(image, text, cfg.data.text_fields))
        out = self.predictor.trained.model(batch)
        return out.box_heatmaps[0].float().cpu(), torch.sigmoid(out.logits[0]).float().cpu()

    # ------------------------------------------------------------------ ratings
    def add_rating(self, rating: RatingIn) -> dict[str, Any]:
        self.study(rating.study_id)
        try:
            row = self.ratings.add(
                Rating(
                    study_id=rating.study_id,
                    reader=rating.reader.strip(),
                    acceptable=rating.acceptable,
                    errors=tuple(rating.errors),
                    comment=rating.comment,
                    model=self.model_name,
                )
            )
        except ValueError as err:
            raise RequestRejected(422, str(err)) from err
        return {"stored": True, "id": row.id}


def saliency_map(heatmaps: torch.Tensor, probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """heatmaps [C, h, w] logits, probs [C] -> [h, w] in [0, 1].

    Each class map is a spatial softmax scaled so its peak is 1, weighted by the class
    probability; the result is the maximum over the predicted classes (probability >=
    ``threshold``), or over the single most probable class when none is predicted.
    """
    classes = torch.nonzero(probs >= threshold).flatten()
    if len(classes) == 0:
        classes = probs.argmax().reshape(1)
    maps = torch.softmax(heatmaps[classes].flatten(1), dim=1).reshape(len(classes), *heatmaps.shape[1:])
    maps = maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return (maps * probs[classes][:, None, None]).amax(dim=0)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mount_review(app: FastAPI, service: ReviewService) -> None:
    """Add the review page and its JSON API to ``app``."""

    @app.get("/review", include_in_schema=False)
    def review_redirect() -> RedirectResponse:
        return RedirectResponse("/review/")

    @app.get("/review/", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/review/static", StaticFiles(directory=STATIC), name="review-static")

    @app.get("/v1/review/studies", summary="Worklist: the studies to review")
    def studies() -> dict[str, Any]:
        return {"split": service.split, "model": service.model_name, "studies": service.worklist()}

    @app.get("/v1/review/studies/{study_id}", summary="One case: prediction, reference report, ratings")
    async def case(study_id: str) -> dict[str, Any]:
        return await run_in_threadpool(service.case, study_id)

    @app.get("/v1/review/studies/{study_id}/image.png", summary="The study's image as 8-bit PNG")
    async def image(study_id: str) -> Response:
        return Response(await run_in_threadpool(service.image_png, study_id), media_type="image/png")

    @app.get("/v1/review/studies/{study_id}/saliency.png", summary="Saliency overlay (RGBA PNG)")
    async def saliency(study_id: str) -> Response:
        return Response(await run_in_threadpool(service.saliency_png, study_id), media_type="image/png")

    @app.post("/v1/review/ratings", summary="Store a reader's rating of a generated report")
    async def add_rating(rating: RatingIn) -> dict[str, Any]:
        return await run_in_threadpool(service.add_rating, rating)

    @app.get("/v1/review/ratings", summary="All ratings")
    def ratings() -> dict[str, Any]:
        return {"ratings": service.ratings.records()}

    @app.get("/v1/review/ratings.csv", summary="All ratings as CSV")
    def ratings_csv() -> Response:
        return Response(
            service.ratings.export_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="ratings.csv"'},
        )

    @app.get("/v1/review/ratings/summary", summary="Acceptance rate, error counts, Cohen's kappa")
    def ratings_summary() -> dict[str, Any]:
        return service.ratings.summary()
