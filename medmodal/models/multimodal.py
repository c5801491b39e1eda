"""The multimodal model of arXiv 2405.17459, composed from registered parts.

::

    image [B,1,H,W] --image encoder--> ImageFeatures --(placeholder if missing)--+
                                                                                 +--fusion--> fused vector
    text ids [B,L]  --text encoder---> TextFeatures  --(placeholder if missing)--+      |
                                                                                        v
        classification head -> logits [B,C]            (late fusion: the fusion's own logits)
        localization head (grid, fused, image) -> centre heatmaps, sizes, offsets [B,*,H/s,W/s]
            -> top box per finding [B,C,4]; ``localizer.detect``: scored boxes [B,K] (peaks + NMS)
        report decoder (fused as context, memory regions) -> caption logits / generate()
            (``report_conditioning.mode: findings``: it also reads the findings, the true labels
            under teacher forcing, the predicted ones when generating; docs/reports.md)
        auxiliary unimodal heads: image vector -> image_logits, text vector -> text_logits

``cfg.modalities``:

- ``both``: both encoders and a fusion layer; auxiliary unimodal heads; the decoder attends
  over the image grid regions.
- ``image``: no text encoder and no fusion layer; the heads read a projection of the image
  vector; the decoder attends over the image grid.
- ``text``: no image encoder, no fusion layer, no localization head (boxes need an image);
  the heads read a projection of the text vector; the decoder attends over the text
  tokens (masked by the text mask).

Single-modality models have no auxiliary heads (their main head already is unimodal), so
``image_logits`` / ``text_logits`` are None there.

Missing modality: rows with ``has_image`` False use a learned image placeholder (vector and
grid), rows with ``has_text`` False a learned text placeholder, so every study gets a finite
prediction. Images are encoded only for rows that have one (zeros never reach BatchNorm
statistics, unless the whole batch lacks images). In training mode ``modality_dropout``
hides, per sample with that probability, one of its two modalities (chosen at random) the
same way. ``ModelOutput.image_present`` / ``text_present`` say what the model saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models import registry
from medmodal.models.calibration import LogitCalibration
from medmodal.models.heads import ClassificationHead
from medmodal.models.layers import ProjectionHead
from medmodal.models.localization import LocalizationHead
from medmodal.models.missing import ImagePlaceholder, TextPlaceholder, hide_one_modality
from medmodal.models.peak_evidence import PeakEvidence
from medmodal.models.pretrained import load_pretrained
from medmodal.models.report_bank import ReportBank
from medmodal.models.types import FusionOutput, GenerationOutput, ImageFeatures, ModelOutput, TextFeatures
from medmodal.models.wide import OUT_OF_FOLD, WideNgrams, WidePixels

if TYPE_CHECKING:  # the config imports the registry (name validation); keep the import one-way
    from medmodal.config import ModelConfig, PartConfig
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.models.decoders.base import ReportDecoder

Batch = Mapping[str, Any]


class MultimodalModel(nn.Module):
    """Encoders, fusion and heads composed (see the module docstring); build with :func:`create_model`.

    Args:
        num_labels: finding classes C.
        image_encoder / text_encoder: built encoders, None for a modality the model does not use.
        fusion: fusion layer, required with both encoders, None otherwise.
        decoder: report decoder (context = fused vector, memory = image grid or text tokens), or None.
        embed_dim: width of the projected vector of single-modality models.
        classification / localization: build these heads (localization needs an image encoder).
        localization_kwargs: keywords of :class:`LocalizationHead` (stride, score, ...; its defaults if None).
        peak_evidence: mix each finding's heatmap peak into its logit in eval mode
            (:class:`~medmodal.models.peak_evidence.PeakEvidence`, the identity until set); only
            models with both a classification and a localization head get it.
        dropout: of the heads and the single-modality projection.
        modality_dropout: probability of hiding one modality per training sample.
        image_channels: input channels of the image encoder; a grayscale batch is repeated into them.
        coordinated: also project each modality's vector into one ``embed_dim`` space (unit norm)
            for the image-report alignment loss (a coordinated representation); two-modality
            models only.
        condition_on_findings: diagnosis-driven generation (docs/reports.md): the decoder (built
            with ``condition_dim = num_labels``) reads the ground-truth labels under teacher forcing
            and the predicted findings (probability >= ``finding_thresholds``) when generating.
        part_names: registry names of the parts, for :meth:`describe`.
        report_bank: ``report_conditioning.reports: retrieved``: once filled, :meth:`generate` returns
            the training report nearest the predicted findings (:mod:`medmodal.models.report_bank`).
        wide_image / wide_text: wide (linear) pathways (:mod:`medmodal.models.wide`) whose logits
            [B, C] are added to the classification logits and to that modality's auxiliary logits;
            None = none (``model.wide``).
        fused_logits: two-modality models: ``"head"`` = the classification head on the fused vector
            (or the fusion layer's own logits); ``"with_unimodal"`` = that plus the image and the text
            auxiliary logits (each modality's evidence added in log-odds, as late fusion does, the
            fusion head learning the interactions on top).
    """

    # The C label names in logit order and the tokenizer, set by ``medmodal.create_model``.
    label_names: list[str] | None = None
    tokenizer: ReportTokenizer | None = None

    # The parts (set in ``__init__`` / :meth:`build_heads`; None where the model has none). The
    # registered parts are typed ``nn.Module``: their contract widths (``out_dim``, ``grid_dim``,
    # ``seq_dim``) are read as ``int`` below.
    image_encoder: nn.Module | None
    text_encoder: nn.Module | None
    fusion: nn.Module | None
    decoder: nn.Module | None
    wide_image: nn.Module | None
    wide_text: nn.Module | None
    image_placeholder: ImagePlaceholder | None
    text_placeholder: TextPlaceholder | None
    projection: nn.Sequential | None
    fused_dim: int
    classifier: ClassificationHead | None
    image_aux_head: ClassificationHead | None
    text_aux_head: ClassificationHead | None
    localizer: LocalizationHead | None
    peak_evidence: PeakEvidence | None
    image_projector: ProjectionHead | None
    text_projector: ProjectionHead | None
    alignment_log_scale: nn.Parameter | None
    finding_thresholds: Tensor  # buffer, models conditioned on the findings only

    def __init__(
        self,
        num_labels: int,
        image_encoder: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        fusion: nn.Module | None = None,
        decoder: nn.Module | None = None,
        *,
        embed_dim: int = 256,
        classification: bool = True,
        localization: bool = True,
        localization_kwargs: Mapping[str, Any] | None = None,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        coordinated: bool = False,
        image_channels: int = 1,
        condition_on_findings: bool = False,
        part_names: Mapping[str, str] | None = None,
        wide_image: nn.Module | None = None,
        wide_text: nn.Module | None = None,
        fused_logits: str = "head",
        report_bank: ReportBank | None = None,
        peak_evidence: bool = False,
    ) -> None:
        super().__init__()
        if image_encoder is None and text_encoder is None:
            raise ValueError("a model needs at least one encoder")
        both = image_encoder is not None and text_encoder is not None
        if both != (fusion is not None):
            raise ValueError("a fusion layer is needed exactly when both encoders are present")
        self.num_labels = num_labels
        self.modality_dropout = modality_dropout
        self.image_channels = image_channels
        self.part_names = dict(part_names or {})
        self.classification = classification
        if fused_logits not in ("head", "with_unimodal"):
            raise ValueError(f"fused_logits must be 'head' or 'with_unimodal', got {fused_logits!r}")
        if wide_image is not None and image_encoder is None:
            raise ValueError("a wide image pathway needs an image encoder (modalities image or both)")
        if wide_text is not None and text_encoder is None:
            raise ValueError("a wide text pathway needs a text encoder (modalities text or both)")
        self.fused_logits = fused_logits
        self.wide_image = wide_image
        self.wide_text = wide_text
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.decoder = decoder

        self.image_placeholder = self.text_placeholder = self.projection = None
        if image_encoder is not None:
            self.image_placeholder = ImagePlaceholder(
                cast(int, image_encoder.out_dim), cast(int, image_encoder.grid_dim)
            )
        if text_encoder is not None:
            self.text_placeholder = TextPlaceholder(
                cast(int, text_encoder.out_dim), cast(int, text_encoder.seq_dim)
            )
        if both:
            assert fusion is not None  # checked above: both encoders <=> a fusion layer
            self.fused_dim = cast(int, fusion.out_dim)
        else:
            encoder = image_encoder or text_encoder
            assert encoder is not None  # checked above: at least one encoder
            self.projection = nn.Sequential(
                nn.Linear(cast(int, encoder.out_dim), embed_dim), nn.GELU(), nn.Dropout(dropout)
            )
            self.fused_dim = embed_dim
        self.build_heads(classification, localization, dropout, localization_kwargs)
        # Post-hoc Platt scaling of the classification logits (``medmodal calibrate``): identity
        # until set, applied in eval mode only, saved with the weights (persistent buffers;
        # ``load_trained`` sets it from RUN/calibration.json).
        self.calibration = LogitCalibration(num_labels)
        # The box head's heatmap peaks as classification evidence (models/peak_evidence.py), set on
        # the validation split when training ends (training/peak_evidence.py).
        self.peak_evidence = (
            PeakEvidence(num_labels)
            if peak_evidence and classification and self.localizer is not None
            else None
        )
        self.image_projector = self.text_projector = self.alignment_log_scale = None
        if coordinated:
            if not both:
                raise ValueError("a coordinated representation needs both encoders")
            assert image_encoder is not None and text_encoder is not None  # both
            self.image_projector = ProjectionHead(cast(int, image_encoder.out_dim), embed_dim)
            self.text_projector = ProjectionHead(cast(int, text_encoder.out_dim), embed_dim)
            # CLIP's learnable temperature, initialised at 0.07.
            self.alignment_log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.condition_on_findings = condition_on_findings
        if condition_on_findings:
            if decoder is None or getattr(decoder, "condition_dim", 0) != num_labels:
                raise ValueError(
                    f"conditioning on the findings needs a decoder built with condition_dim={num_labels}"
                )
            # Per-finding probability at which a finding is "predicted" for the decoder; set from the
            # validation split during training (set_finding_thresholds), saved in the checkpoint.
            self.register_buffer("finding_thresholds", torch.full((num_labels,), 0.5))
        if report_bank is not None and not condition_on_findings:
            raise ValueError(
                "retrieving reports by their findings needs a decoder conditioned on the findings"
            )
        # Training reports retrieved by the predicted findings (models/report_bank.py), filled when
        # training ends; None = the decoder generates.
        self.report_bank = report_bank
        # Stacked wide pathways (model.wide.fit: stacked): in eval mode the deep head's logits are
        # scaled by this weight, chosen on the validation split after each epoch from
        # DEEP_WEIGHTS (medmodal.training.module), so the model is never worse there than the
        # stacked regressions alone (weight 0); saved in the checkpoint.
        self.deep_weight: Tensor | None
        if self.stacked:
            self.register_buffer("deep_weight", torch.tensor(1.0))
        else:
            self.deep_weight = None

    def classification_logits(
        self,
        vector: Tensor,
        fusion_output: FusionOutput | None,
        added: Tensor | None = None,
        peaks: Tensor | None = None,
        seen: Tensor | None = None,
    ) -> Tensor | None:
        """[B, C] classification logits from the fused vector [B, D] (or the fusion layer's own
        logits) plus ``added`` [B, C] (wide / unimodal logits, :meth:`unimodal_logits`), mixed with
        the box head's heatmap ``peaks`` [B, C] when given (:attr:`peak_evidence`; only on the rows
        ``seen`` [B] whose image the model saw), calibrated in eval mode (:meth:`set_calibration`);
        None without the head."""
        if not self.classification:
            return None
        return self.calibrated(self.uncalibrated_logits(vector, fusion_output, added, peaks, seen))

    def calibrated(self, logits: Tensor) -> Tensor:
        """Classification logits [B, C] -> calibrated in eval mode (:meth:`set_calibration`), as they are
        in training mode."""
        return logits if self.training else self.calibration(logits)

    def uncalibrated_logits(
        self,
        vector: Tensor,
        fusion_output: FusionOutput | None,
        added: Tensor | None = None,
        peaks: Tensor | None = None,
        seen: Tensor | None = None,
    ) -> Tensor:
        """[B, C] classification logits before any calibration: the head's, or the fusion layer's own,
        plus ``added`` [B, C] when given, mixed with the heatmap ``peaks`` [B, C] of the rows ``seen``
        [B] in eval mode when given and the model has :attr:`peak_evidence`."""
        if self.classifier is not None:
            logits = self.classifier(vector)
        else:  # no head: the fusion layer classifies itself (``produces_logits``, build_heads)
            assert fusion_output is not None and fusion_output.logits is not None
            logits = fusion_output.logits
        if self.deep_weight is not None and not self.training:
            logits = logits * self.deep_weight
        logits = logits if added is None else logits + added
        if self.peak_evidence is not None and peaks is not None:
            logits = self.peak_evidence(logits, peaks, seen)
        return logits

    @property
    def stacked(self) -> bool:
        """Whether a wide pathway is stacked (``model.wide.fit: stacked``, :mod:`medmodal.models.wide`)."""
        return any(getattr(p, "stacking", None) is not None for p in (self.wide_image, self.wide_text))

    def set_finding_thresholds(self, thresholds: Tensor | list[float]) -> None:
        """Per-finding probabilities [C] at which a finding is passed to a conditioned decoder as present."""
        if not self.condition_on_findings:
            raise RuntimeError("this model's decoder is not conditioned on the findings")
        values = torch.as_tensor(
            thresholds, dtype=self.finding_thresholds.dtype, device=self.finding_thresholds.device
        )
        if values.shape != self.finding_thresholds.shape:
            raise ValueError(
                f"finding thresholds: expected {self.num_labels} values, got {tuple(values.shape)}"
            )
        self.finding_thresholds.copy_(values)

    def finding_probabilities(
        self,
        vector: Tensor,
        fusion_output: FusionOutput | None,
        added: Tensor | None = None,
        peaks: Tensor | None = None,
        seen: Tensor | None = None,
    ) -> Tensor:
        """[B, C] the classifier's probabilities (uncalibrated; ``added`` logits and the heatmap
        ``peaks`` of the rows ``seen`` included) that the report conditioning reads."""
        return torch.sigmoid(self.uncalibrated_logits(vector, fusion_output, added, peaks, seen))

    @torch.no_grad()
    def retrieval_inputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """probs [B, C] (:meth:`finding_probabilities`) and the joint vector [B, D] of a batch, no
        modality dropout: what the report bank chooses by (medmodal.training.report_bank)."""
        _, _, vector, probs = self._report_inputs(batch)
        assert probs is not None  # only banks of conditioned models retrieve
        return probs, vector

    def _report_inputs(
        self, batch: Batch
    ) -> tuple[ImageFeatures | None, TextFeatures | None, Tensor, Tensor | None]:
        """What a report is written or retrieved from, no modality dropout: the encoders' features,
        the joint vector [B, D] and, for a model conditioned on the findings, the classifier's
        probabilities [B, C] (:meth:`finding_probabilities`; None otherwise)."""
        image, text, image_present, text_present = self.encode(batch, modality_dropout=False)
        vector, fusion_output = self.fuse(image, text)
        probs = None
        if self.condition_on_findings:
            added = self.unimodal_logits(batch, image, text, image_present, text_present)[2]
            peaks = self.heatmap_peaks(image, vector, batch)
            probs = self.finding_probabilities(vector, fusion_output, added, peaks, image_present)
        return image, text, vector, probs

    def set_calibration(self, scale: Tensor | list[float], bias: Tensor | list[float]) -> None:
        """Per-label affine map ``logit * scale + bias`` [C] applied to the classification logits
        in eval mode (Platt scaling; ``scale`` > 0 keeps each label's ranking, so AUROC is unchanged).
        Saved with the weights (``calibration.scale`` / ``calibration.bias`` in ``state_dict()``)."""
        self.calibration.set(scale, bias)

    @property
    def calibration_scale(self) -> Tensor:
        """[C] scales of :meth:`set_calibration` (ones until set)."""
        return self.calibration.scale

    @property
    def calibration_bias(self) -> Tensor:
        """[C] biases of :meth:`set_calibration` (zeros until set)."""
        return self.calibration.bias

    def build_heads(
        self,
        classification: bool,
        localization: bool,
        dropout: float,
        localization_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """The classification head (unless the fusion layer classifies itself), the auxiliary
        unimodal heads (two-modality models) and the localization head (models with images)."""
        both = self.fusion is not None
        self.classifier = self.image_aux_head = self.text_aux_head = self.localizer = None
        if classification and not getattr(self.fusion, "produces_logits", False):
            self.classifier = ClassificationHead(self.fused_dim, self.num_labels, dropout=dropout)
        if classification and both:
            # a fusion layer exists exactly when both encoders do (checked in __init__)
            assert self.image_encoder is not None and self.text_encoder is not None
            self.image_aux_head = ClassificationHead(
                cast(int, self.image_encoder.out_dim), self.num_labels, dropout=dropout
            )
            self.text_aux_head = ClassificationHead(
                cast(int, self.text_encoder.out_dim), self.num_labels, dropout=dropout
            )
        if localization and self.image_encoder is not None:
            self.localizer = LocalizationHead(
                cast(int, self.image_encoder.grid_dim),
                self.fused_dim,
                self.num_labels,
                dropout=dropout,
                **dict(localization_kwargs or {}),
            )

    # ------------------------------------------------------------------ structure
    @property
    def modalities(self) -> str:
        """``"both"``, ``"image"`` or ``"text"``."""
        if self.image_encoder is not None and self.text_encoder is not None:
            return "both"
        return "image" if self.image_encoder is not None else "text"

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level part (encoders, fusion, decoder, heads, placeholders) and ``total``."""
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    def describe(self) -> str:
        """A short table of the parts, their registry names and parameter counts."""
        lines = [f"MultimodalModel (modalities: {self.modalities}, labels: {self.num_labels})"]
        for name, count in self.parameter_counts().items():
            label = self.part_names.get(name, "")
            lines.append(f"  {name:<18} {label:<18} {count / 1e6:8.3f} M")
        return "\n".join(lines)

    # -------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> ModelOutput:
        """Batch dict (DEVELOPERS.md keys: ``image``, ``has_image``, ``text_ids``, ``text_mask``,
        ``has_text``, optional ``target_ids``) -> :class:`ModelOutput`."""
        image, text, image_present, text_present = self.encode(batch, modality_dropout=self.training)
        vector, fusion_output = self.fuse(image, text)
        # The auxiliary heads draw dropout masks: they run first only when the main logits need
        # them, else last, so a seeded run without model.wide / fused_logits: with_unimodal draws
        # its random numbers in the same order as before those options existed.
        unimodal_first = self.main_logits_use_unimodal()
        added = None
        if unimodal_first:
            image_logits, text_logits, added = self.unimodal_logits(
                batch, image, text, image_present, text_present
            )
        raw = self.uncalibrated_logits(vector, fusion_output, added) if self.classification else None
        logits = self.calibrated(raw) if raw is not None else None
        localization = None
        if self.localizer is not None:
            assert image is not None  # a localization head is built only with an image encoder
            localization = self.localizer(image.grid, vector, batch["image"], logits)
            if self.peak_evidence is not None and raw is not None and not self.training:
                # the head's peaks mixed into the same logits (eval mode only); the boxes keep the
                # classifier's own gate
                logits = self.calibrated(self.peak_evidence(raw, localization.peaks, image_present))
        caption_logits = None
        if self.decoder is not None and batch.get("target_ids") is not None:
            memory, memory_mask = self.decoder_memory(image, text)
            condition = (
                batch["labels"].to(vector.dtype) if self.condition_on_findings else None
            )  # teacher forcing
            caption_logits = self.decoder(
                batch["target_ids"], vector, memory, memory_mask, condition=condition
            )
        if not unimodal_first:
            image_logits, text_logits, _ = self.unimodal_logits(
                batch, image, text, image_present, text_present
            )
        return ModelOutput(
            logits=logits,
            image_logits=image_logits,
            text_logits=text_logits,
            boxes=localization.boxes if localization is not None else None,
            box_heatmaps=localization.heatmaps if localization is not None else None,
            localization=localization,
            caption_logits=caption_logits,
            word_attention=text.attention if text is not None else None,
            fusion=fusion_output,
            image_present=image_present,
            text_present=text_present,
            fused=vector,
            **self.coordinated_embeddings(image, text),
            stacked_logits=added if self.stacked else None,
        )

    def main_logits_use_unimodal(self) -> bool:
        """Whether the classification logits add wide-pathway or auxiliary-head logits."""
        with_unimodal = self.fused_logits == "with_unimodal" and self.fusion is not None
        return self.wide_image is not None or self.wide_text is not None or with_unimodal

    def heatmap_peaks(self, image: ImageFeatures | None, vector: Tensor, batch: Batch) -> Tensor | None:
        """[B, C] each finding's highest heatmap logit of the box head, for a model with
        :attr:`peak_evidence` (None otherwise)."""
        if self.peak_evidence is None:
            return None
        assert image is not None and self.localizer is not None  # peak evidence needs the box head
        return self.localizer(image.grid, vector, batch["image"]).peaks

    def unimodal_logits(
        self,
        batch: Batch,
        image: ImageFeatures | None,
        text: TextFeatures | None,
        image_present: Tensor | None,
        text_present: Tensor | None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """(image auxiliary logits [B, C], text auxiliary logits [B, C], logits added to the main
        ones [B, C]); each None where absent. A modality's auxiliary logits include its wide
        pathway; the added logits are the wide pathways' (zero on rows without that modality), or
        with ``fused_logits: with_unimodal`` both auxiliary logits."""
        wide_image = wide_text = None
        if self.wide_image is not None:
            assert image_present is not None  # a wide image pathway needs an image encoder (__init__)
            wide_image = self.wide_image(batch["image"], batch.get(OUT_OF_FOLD["image"]))
            wide_image = wide_image * image_present[:, None].to(wide_image.dtype)
        if self.wide_text is not None:
            assert text_present is not None  # a wide text pathway needs a text encoder (__init__)
            wide_text = self.wide_text(batch["text_ids"], batch["text_mask"], batch.get(OUT_OF_FOLD["text"]))
            wide_text = wide_text * text_present[:, None].to(wide_text.dtype)
        # auxiliary heads exist only with both encoders, hence both features (build_heads, encode)
        image_aux = (
            self.image_aux_head(cast(ImageFeatures, image).vector)
            if self.image_aux_head is not None
            else None
        )
        text_aux = (
            self.text_aux_head(cast(TextFeatures, text).vector) if self.text_aux_head is not None else None
        )
        image_logits, text_logits = _plus(image_aux, wide_image), _plus(text_aux, wide_text)
        if self.fused_logits == "with_unimodal" and self.fusion is not None and image_logits is not None:
            # the text auxiliary logits exist with the image ones (classification heads; the config
            # always builds them)
            return image_logits, text_logits, image_logits + cast(Tensor, text_logits)
        return image_logits, text_logits, _plus(wide_image, wide_text)

    def coordinated_embeddings(
        self, image: ImageFeatures | None, text: TextFeatures | None
    ) -> dict[str, Tensor]:
        """``image_embedding`` / ``text_embedding`` [B, P] (unit norm) and ``alignment_scale`` of a
        coordinated model; an empty dict for a joint one."""
        if self.image_projector is None:
            return {}
        # a coordinated model has both encoders (so both features), both projectors and the scale
        assert image is not None and text is not None
        assert self.text_projector is not None and self.alignment_log_scale is not None
        return {
            "image_embedding": F.normalize(self.image_projector(image.vector), dim=-1),
            "text_embedding": F.normalize(self.text_projector(text.vector), dim=-1),
            "alignment_scale": self.alignment_log_scale.exp().clamp(max=100.0),
        }

    @torch.no_grad()
    def generate(
        self, batch: Batch, max_len: int = 80, beam_size: int = 1, length_penalty: float = 1.0
    ) -> GenerationOutput:
        """Generate reports for a batch (no modality dropout): see ``ReportDecoder.generate``.
        A decoder conditioned on the findings gets the predicted ones (:meth:`finding_probabilities`
        >= ``finding_thresholds``); a filled report bank returns training reports chosen by them (or by
        the probabilities, ``retrieve_by: expected_reading``) instead."""
        if self.decoder is None:
            raise RuntimeError("this model was built without a report decoder (heads.generation: false)")
        image, text, vector, probs = self._report_inputs(batch)
        condition = None if probs is None else (probs >= self.finding_thresholds).to(vector.dtype)
        if self.report_bank is not None and len(self.report_bank) > 0:
            return self.report_bank.retrieve(cast(Tensor, condition), vector, max_len=max_len, probs=probs)
        memory, memory_mask = self.decoder_memory(image, text)
        decoder = cast("ReportDecoder", self.decoder)  # every registered decoder is a ReportDecoder
        return decoder.generate(
            vector,
            memory,
            memory_mask,
            max_len=max_len,
            beam_size=beam_size,
            length_penalty=length_penalty,
            condition=condition,
        )

    @torch.no_grad()
    def joint_vector(self, batch: Batch) -> Tensor:
        """[B, D] the fused vector (the decoder's context) of a batch, no modality dropout."""
        image, text, _, _ = self.encode(batch, modality_dropout=False)
        return self.fuse(image, text)[0]

    # ------------------------------------------------------------------- pieces
    def encode(
        self, batch: Batch, modality_dropout: bool
    ) -> tuple[ImageFeatures | None, TextFeatures | None, Tensor | None, Tensor | None]:
        """Encode the modalities the model has, placeholders standing in for missing ones.

        Returns (image features, text features, image present [B], text present [B]);
        None for a branch the model does not have.
        """
        has_image, has_text = self.present_modalities(batch)
        if modality_dropout and self.modality_dropout > 0 and self.modalities == "both":
            has_image, has_text = hide_one_modality(has_image, has_text, self.modality_dropout)
        image = text = None
        if self.image_encoder is not None:
            assert self.image_placeholder is not None  # built with the image encoder (__init__)
            image = self.image_placeholder.fill(self.encode_images(batch["image"], has_image), has_image)
        if self.text_encoder is not None:
            assert self.text_placeholder is not None  # built with the text encoder (__init__)
            text = self.text_placeholder.fill(
                self.text_encoder(batch["text_ids"], batch["text_mask"]), has_text
            )
        return (image, text, has_image if image is not None else None, has_text if text is not None else None)

    def present_modalities(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(has_image [B], has_text [B]) bool from the batch; all True where a key is absent."""
        reference = batch["image"] if "image" in batch else batch["text_ids"]
        size, device = reference.shape[0], reference.device
        has_image = batch.get("has_image")
        has_text = batch.get("has_text")
        all_true = torch.ones(size, dtype=torch.bool, device=device)
        return (
            all_true if has_image is None else has_image.bool().to(device),
            all_true if has_text is None else has_text.bool().to(device),
        )

    def encoder_input(self, images: Tensor) -> Tensor:
        """[B, c, H, W] -> [B, image_channels, H, W]: a grayscale batch (c = 1) repeated into each channel."""
        channels, wanted = images.shape[1], self.image_channels
        if channels == wanted:
            return images
        if channels == 1:
            return images.expand(-1, wanted, -1, -1)
        raise ValueError(
            f"the image encoder takes {wanted} channels (or 1, repeated); the images have {channels}"
        )

    def encode_images(self, images: Tensor, present: Tensor) -> ImageFeatures:
        """Encode only the rows of ``images`` [B, 1, H, W] that are present; other rows are zeros
        (replaced by the placeholder afterwards). With no or all rows present, encodes all.
        The image encoder sees :meth:`encoder_input` of them."""
        images = self.encoder_input(images)
        encoder = cast(nn.Module, self.image_encoder)  # called only by a model with an image encoder (encode)
        if bool(present.all()) or not bool(present.any()):
            return encoder(images)
        subset = encoder(images[present])
        vector = subset.vector.new_zeros((images.shape[0], *subset.vector.shape[1:]))
        grid = subset.grid.new_zeros((images.shape[0], *subset.grid.shape[1:]))
        vector[present] = subset.vector
        grid[present] = subset.grid
        return ImageFeatures(vector=vector, grid=grid)

    def fuse(
        self, image: ImageFeatures | None, text: TextFeatures | None
    ) -> tuple[Tensor, FusionOutput | None]:
        """-> (vector [B, fused_dim] the heads read, the fusion output or None for one modality)."""
        if self.fusion is not None:
            output = self.fusion(image, text)
            return output.vector, output
        features = image if image is not None else text
        # one modality: the projection exists, and so do that modality's features (encode)
        assert features is not None and self.projection is not None
        return self.projection(features.vector), None

    def decoder_memory(
        self, image: ImageFeatures | None, text: TextFeatures | None
    ) -> tuple[Tensor, Tensor | None]:
        """Regions the decoder attends over: image grid cells [B, h*w, G] (mask None), or for a
        text-only model the text tokens [B, L, S] with the text mask."""
        if image is not None:
            return image.grid.flatten(2).transpose(1, 2), None
        assert text is not None  # a model without images has a text encoder
        return text.sequence, text.mask


def _plus(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """a + b where both exist, else the one that does (None if neither)."""
    if a is None or b is None:
        return a if b is None else b
    return a + b


# ------------------------------------------------------------------------ factory
def create_model(
    cfg: ModelConfig, *, vocab_size: int, num_labels: int, pad_id: int, bos_id: int, eos_id: int
) -> MultimodalModel:
    """Build a :class:`MultimodalModel` from its config, every part by registry name.

    Each part gets the contract arguments (dimensions wired from the parts before it),
    ``cfg.embed_dim`` as its default width (``out_dim`` / ``embed_dim``; a part's
    ``kwargs`` may override these, but not the wired arguments), then its ``kwargs``;
    a part with ``pretrained_path`` loads those local weights.
    """
    registry.check_part_names(cfg)
    uses_image = cfg.modalities in ("image", "both")
    uses_text = cfg.modalities in ("text", "both")
    width = cfg.embed_dim
    image_encoder = text_encoder = fusion = decoder = None
    if uses_image:
        image_encoder = build_part(
            "image_encoder",
            cfg.image_encoder,
            wired={"in_channels": cfg.image_channels},
            defaults={"out_dim": width},
        )
    if uses_text:
        text_encoder = build_part(
            "text_encoder",
            cfg.text_encoder,
            wired={"vocab_size": vocab_size, "pad_id": pad_id},
            defaults={"out_dim": width},
        )
    if uses_image and uses_text:
        assert image_encoder is not None and text_encoder is not None  # built just above
        wired = {
            "image_dim": image_encoder.out_dim,
            "text_dim": text_encoder.out_dim,
            "grid_dim": image_encoder.grid_dim,
            "seq_dim": text_encoder.seq_dim,
            "num_labels": num_labels,
        }
        fusion = build_part("fusion", cfg.fusion, wired=wired, defaults={"out_dim": width})
    conditioned = cfg.heads.generation and cfg.report_conditioning.mode == "findings"
    if cfg.heads.generation:
        wired = {
            "vocab_size": vocab_size,
            "context_dim": fusion.out_dim if fusion is not None else width,
            "memory_dim": image_encoder.grid_dim
            if image_encoder is not None
            else cast(nn.Module, text_encoder).seq_dim,
            "pad_id": pad_id,
            "bos_id": bos_id,
            "eos_id": eos_id,
        }
        if conditioned:
            wired["condition_dim"] = num_labels
        decoder = build_part("decoder", cfg.decoder, wired=wired, defaults={"embed_dim": width})
    part_names = {
        name: part.name
        for name, part, built in (
            ("image_encoder", cfg.image_encoder, image_encoder),
            ("text_encoder", cfg.text_encoder, text_encoder),
            ("fusion", cfg.fusion, fusion),
            ("decoder", cfg.decoder, decoder),
        )
        if built is not None
    }
    model = MultimodalModel(
        num_labels,
        image_encoder,
        text_encoder,
        fusion,
        decoder,
        embed_dim=width,
        classification=cfg.heads.classification,
        localization=cfg.heads.localization,
        localization_kwargs=cfg.localization.model_dump(exclude={"peak_evidence"}),
        peak_evidence=cfg.localization.peak_evidence,
        dropout=cfg.dropout,
        modality_dropout=cfg.modality_dropout,
        coordinated=cfg.representation == "coordinated",
        image_channels=cfg.image_channels,
        condition_on_findings=conditioned,
        part_names=part_names,
        **wide_pathways(cfg, vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id),
        fused_logits=cfg.fused_logits,
        report_bank=ReportBank(
            num_labels,
            key_dim=cast(int, fusion.out_dim) if fusion is not None else width,
            vocab_size=vocab_size,
            pad_id=pad_id,
            capacity=cfg.report_conditioning.bank_size,
            by_expected_reading=cfg.report_conditioning.retrieve_by == "expected_reading",
        )
        if conditioned and cfg.report_conditioning.reports == "retrieved"
        else None,
    )
    if cfg.wide.fit == "stacked" and model.classifier is not None:
        # The model starts as the stacked regressions alone; the deep head learns what they miss.
        last = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    threshold = cfg.report_conditioning.threshold
    if conditioned and isinstance(threshold, float):
        model.set_finding_thresholds([float(threshold)] * num_labels)
    return model


def wide_pathways(
    cfg: ModelConfig, *, vocab_size: int, num_labels: int, pad_id: int
) -> dict[str, nn.Module | None]:
    """``wide_image`` / ``wide_text`` modules of ``cfg.wide`` for the modalities the model has (None = off)."""
    wide = cfg.wide
    image = wide.pixels > 0 and cfg.modalities in ("image", "both")
    text = wide.ngrams and cfg.modalities in ("text", "both")
    stacked = wide.fit == "stacked"
    return {
        "wide_image": WidePixels(num_labels, wide.pixels, stacked=stacked) if image else None,
        "wide_text": WideNgrams(vocab_size, num_labels, pad_id, wide.ngram_buckets, stacked=stacked)
        if text
        else None,
    }


def build_part(kind: str, part: PartConfig, wired: dict[str, Any], defaults: dict[str, Any]) -> nn.Module:
    """``registry.create(kind, part.name, **wired, **defaults overridden by part.kwargs)``, then
    the local ``pretrained_path`` weights if any."""
    clash = sorted(set(part.kwargs) & set(wired))
    if clash:
        raise ValueError(f"{kind} '{part.name}': kwargs {clash} are set by the model factory; remove them")
    module = registry.create(kind, part.name, **wired, **{**defaults, **part.kwargs})
    if part.pretrained_path:
        # a part whose weights file has its own layout (a BERT file for models/peers/transchex.py) loads it itself
        loader = getattr(module, "load_local_weights", None)
        if loader is not None:
            loader(part.pretrained_path)
        else:
            load_pretrained(module, part.pretrained_path)
    return module
