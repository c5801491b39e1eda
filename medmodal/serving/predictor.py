"""Predictions for single studies from a trained run (``medmodal predict``, the web service, explanations).

Inputs go through the same :class:`~medmodal.data.dataset.StudyDataset` as
training, so preprocessing (image decoding incl. DICOM, resizing, tokenisation)
is one code path. The image may be a file path, a numpy array, a Pillow image or a
pydicom ``Dataset``: in-memory images are decoded by :func:`medmodal.data.images.decode_image`
(the rules, pixel budget and DICOM checks of files) and resized and stored by the dataset as
a file's image would be, so an array, the Pillow image of it and a PNG of it predict alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from medmodal.data.images import DecodedImage, ImageReadError, ImageSource, decode_image, image_size
from medmodal.data.inputs import is_image_path, study_from_inputs
from medmodal.data.pipeline import build_dataset
from medmodal.data.types import Study
from medmodal.explain.modality import conflicts_for_prediction
from medmodal.training.artifacts import ARTIFACTS_KEY, ModelArtifacts
from medmodal.training.checkpoints import read_checkpoint
from medmodal.training.loading import TrainedRun, load_trained


class Predictor:
    """Wraps a trained run for per-study inference."""

    def __init__(self, trained: TrainedRun):
        self.trained = trained

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Predictor:
        """The predictor of a run folder (best checkpoint, ``calibration.json`` applied) or of a
        checkpoint file alone (written by ``medmodal train`` or :meth:`save`)."""
        return cls(load_trained(run_dir, device=device))

    @property
    def labels(self) -> list[str]:
        return self.trained.labels

    def save(self, path: str | Path) -> Path:
        """Write one checkpoint file that predicts on its own (``medmodal.load(path)``): the weights
        with the calibration in effect (persistent buffers), the label names, the tokenizer and the
        decision thresholds, as plain data (loads with ``weights_only=True``). The hyper-parameters
        come from the checkpoint this predictor was loaded from, which must still be readable.
        Optimizer and loop states are left out. Written through a temporary file and a rename."""
        source = read_checkpoint(self.trained.checkpoint)
        weights = {k: v for k, v in source["state_dict"].items() if not k.startswith("model.")}
        weights.update({f"model.{k}": v.detach().cpu() for k, v in self.trained.model.state_dict().items()})
        artifacts = ModelArtifacts(labels=self.labels, tokenizer=self.trained.tokenizer,
                                   thresholds=self.trained.thresholds, calibrated=self.trained.calibrated)  # fmt: skip
        kept = ("hyper_parameters", "epoch", "global_step", "pytorch-lightning_version")
        state: dict[str, Any] = {key: source[key] for key in kept if key in source}
        state.update({"state_dict": weights, ARTIFACTS_KEY: artifacts.to_checkpoint()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def batch_for(self, study: Study, decoded: DecodedImage | None = None) -> dict:
        """The collated one-study batch the model takes (same preprocessing as training); ``decoded``:
        the study's image decoded from memory (:meth:`decode`), else the study's image file is read."""
        dataset = build_dataset(
            [study], self.trained.tokenizer, self.labels, self.trained.config, train=False
        )
        if decoded is not None:
            dataset.preload(0, decoded)
        batch = default_collate([dataset[0]])
        device = next(self.trained.model.parameters()).device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "target_ids"}

    def decode(self, image: ImageSource | None) -> DecodedImage | None:
        """An in-memory image (array, PIL image, DICOM dataset) decoded; None for a path or no image.

        Raises:
            ValueError: the image cannot be decoded (the reason given).
        """
        if image is None or is_image_path(image):
            return None
        try:
            return decode_image(image, reduce_to=self.trained.config.data.image_size)
        except ImageReadError as err:
            raise ValueError(str(err)) from err

    def batch(self, image: ImageSource | None = None, text: str | dict[str, str] | None = None) -> dict:
        """The collated one-study batch of an image (any :data:`ImageSource`) and / or report text."""
        return self.batch_for(
            study_from_inputs(image, text, self.trained.config.data.text_fields), self.decode(image)
        )

    @torch.no_grad()
    def predict(
        self,
        image: ImageSource | None = None,
        text: str | dict[str, str] | None = None,
        *,
        beam_size: int | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """Label probabilities, boxes (pixels of the input image), generated report and word attention.

        ``image``: a file path (PNG / JPEG / TIFF / DICOM), a numpy array ``[H, W]`` / ``[H, W, 3]``,
        a Pillow image or a pydicom ``Dataset`` (see the module docstring); ``text``: a report (split
        into sections by its headers), plain text for the model's first input field, or a dict of sections.
        """
        cfg = self.trained.config
        if image is None and not text:
            raise ValueError("give an image, a text, or both")
        study = study_from_inputs(image, text, cfg.data.text_fields)
        decoded = self.decode(image)
        batch = self.batch_for(study, decoded)
        if image is not None and not bool(batch["has_image"][0]):
            raise ValueError(f"{image}: the image could not be read")
        out = self.trained.model(batch)
        # Per-label thresholds chosen by ``medmodal calibrate --thresholds best_f1``, else one value.
        decision = self.trained.decision_thresholds() if threshold is None else threshold
        per_label = decision if isinstance(decision, list) else [decision] * len(self.labels)
        probs = torch.sigmoid(out.logits[0]).tolist()
        result: dict[str, Any] = {
            "labels": {name: round(p, 6) for name, p in zip(self.labels, probs)},
            "predicted": [name for name, p, t in zip(self.labels, probs, per_label) if p >= t],
            "threshold": decision if not isinstance(decision, list) else dict(zip(self.labels, decision)),
            "calibrated": bool(getattr(self.trained, "calibrated", False)),
            "modalities": {"image": bool(batch["has_image"][0]), "text": bool(batch["has_text"][0])},
        }
        for name, logits in (("image_only", out.image_logits), ("text_only", out.text_logits)):
            if logits is not None:
                result.setdefault("unimodal", {})[name] = {
                    label: round(p, 6) for label, p in zip(self.labels, torch.sigmoid(logits[0]).tolist())
                }
        # Conflict flag (medmodal.explain.modality): image-only vs text-only view disagree strongly.
        # The conflict flag compares the uncalibrated unimodal heads at the single config threshold.
        result.update(
            conflicts_for_prediction(
                self.trained, batch, out, cfg.evaluate.threshold if threshold is None else threshold
            )
        )
        if out.boxes is not None and (size := self._image_size(study, decoded)) is not None:
            result["boxes"] = self._boxes_in_pixels(out.boxes[0], probs, size, result["predicted"])
        if cfg.model.heads.generation:
            gen = self.trained.model.generate(
                batch, max_len=cfg.evaluate.max_generate_tokens, beam_size=beam_size or cfg.evaluate.beam_size
            )
            result["report"] = self.trained.tokenizer.decode(gen.ids[0].tolist())
        if out.word_attention is not None and bool(batch["has_text"][0]):
            result["word_attention"] = self._word_attention(batch, out.word_attention[0])
        return result

    @staticmethod
    def _image_size(study: Study, decoded: DecodedImage | None) -> tuple[int, int] | None:
        """(H, W) of the given image: decoded in memory, else from its file's header; None without one."""
        if decoded is not None:
            return decoded.size
        return image_size(study.image) if study.image is not None else None

    def _boxes_in_pixels(
        self, boxes: torch.Tensor, probs: list[float], size: tuple[int, int], predicted: list[str]
    ) -> list[dict]:
        """Boxes [C, 4] (normalised xyxy) of the predicted labels in pixels of an image of ``size`` (H, W)."""
        height, width = size
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype)
        rows = []
        for i, name in enumerate(self.labels):
            if name in predicted:
                box = (boxes[i].cpu() * scale).tolist()
                rows.append(
                    {"label": name, "box": [round(v, 1) for v in box], "probability": round(probs[i], 6)}
                )
        return rows

    def _word_attention(self, batch: dict, attention: torch.Tensor) -> list[dict]:
        ids = batch["text_ids"][0][batch["text_mask"][0]].tolist()
        weights = attention[batch["text_mask"][0]].tolist()
        tokens = [self.trained.tokenizer.id_to_token(i) for i in ids]
        return [{"token": t, "weight": round(w, 6)} for t, w in zip(tokens, weights)]
