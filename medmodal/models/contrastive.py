"""Coordinated image-report representations: contrastive pretraining (CLIP / ConVIRT, GLoRIA).

::

    image [B,1,H,W] --image encoder--> vector [B,D] --projection--> image embedding [B,P] (unit norm)
                                       grid [B,G,h,w] --region projection--> regions [B,h*w,P]   (local loss)
    report ids [B,L] --text encoder--> vector [B,D] --projection--> text embedding [B,P]  (unit norm)
                                       sequence [B,L,S] --word projection--> words [B,L,P]         (local loss)

The encoders are the registry's (``model.image_encoder`` / ``model.text_encoder`` at
``model.embed_dim``), so after pretraining their weights load unchanged into the supervised
:class:`~medmodal.models.multimodal.MultimodalModel` (``PartConfig.pretrained_path``).

Losses:

- :func:`info_nce_loss`: symmetric InfoNCE over the in-batch image-report similarity matrix
  (Radford et al. 2021; Zhang et al., ConVIRT 2020), with a learnable temperature.
- :func:`local_alignment_loss`: GLoRIA's local loss (Huang et al. 2021): each word attends over
  the image regions, the attended region feature is compared with the word, word scores are
  aggregated (log-sum-exp) into one image-report score, and those scores go through the same
  symmetric InfoNCE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.layers import ProjectionHead
from medmodal.models.multimodal import build_part

if TYPE_CHECKING:
    from medmodal.config import Config

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of the learnt 1 / temperature


# --------------------------------------------------------------------------- losses
def info_nce_loss(image_embeddings: Tensor, text_embeddings: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE (CLIP): row i of each side is the positive of row i of the other.

    Args:
        image_embeddings: [B, P] unit-norm image embeddings.
        text_embeddings: [B, P] unit-norm text embeddings.
        logit_scale: 1 / temperature (scalar).

    Returns:
        scalar ``(CE(image->text) + CE(text->image)) / 2`` over the [B, B] logits.
    """
    logits = logit_scale * image_embeddings @ text_embeddings.t()
    return symmetric_cross_entropy(logits)


def symmetric_cross_entropy(logits: Tensor) -> Tensor:
    """logits [B, B] (rows: images, columns: reports; pairs on the diagonal) -> mean of both CEs."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def local_similarity(
    regions: Tensor, words: Tensor, word_mask: Tensor, attention_temperature: float, word_temperature: float
) -> Tensor:
    """GLoRIA image-report scores from word-region attention.

    Args:
        regions: [B, N, P] unit-norm region features of B images.
        words: [B, L, P] unit-norm word features of B reports.
        word_mask: [B, L] bool, True at real words.
        attention_temperature: sharpness of each word's attention over regions (GLoRIA tau_1).
        word_temperature: sharpness of the log-sum-exp over words (GLoRIA tau_2).

    Returns:
        [B_images, B_reports] scores: for report j and image i, each word of j attends over
        the regions of i, the attended feature's cosine with the word is aggregated over the
        real words of j as ``log(sum exp(tau_2 * cos)) / tau_2``.
    """
    word_region = torch.einsum("jld,ind->ijln", words, regions)  # [Bi, Bj, L, N]
    attention = torch.softmax(attention_temperature * word_region, dim=-1)
    attended = torch.einsum("ijln,ind->ijld", attention, regions)  # [Bi, Bj, L, P]
    word_scores = F.cosine_similarity(attended, words.unsqueeze(0), dim=-1)  # [Bi, Bj, L]
    word_scores = word_scores.masked_fill(~word_mask.unsqueeze(0), float("-inf"))
    scores = torch.logsumexp(word_temperature * word_scores, dim=-1) / word_temperature
    # A report without words (all masked) would be -inf everywhere: give it a neutral 0.
    return torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))


def local_alignment_loss(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    attention_temperature: float = 4.0,
    word_temperature: float = 5.0,
    logit_temperature: float = 10.0,
) -> Tensor:
    """GLoRIA local loss: symmetric InfoNCE over ``logit_temperature * local_similarity(...)``.

    Shapes as in :func:`local_similarity`; returns a scalar.
    """
    scores = local_similarity(regions, words, word_mask, attention_temperature, word_temperature)
    return symmetric_cross_entropy(logit_temperature * scores)


# ---------------------------------------------------------------------------- model
@dataclass
class ContrastiveOutput:
    """What :class:`ContrastiveModel` returns for a batch.

    image_embeddings / text_embeddings: [B, P] unit norm.
    logit_scale: scalar, 1 / temperature.
    regions: [B, h*w, P] unit-norm region features (None without the local loss).
    words: [B, L, P] unit-norm word features, word_mask [B, L] (None without the local loss).
    """

    image_embeddings: Tensor
    text_embeddings: Tensor
    logit_scale: Tensor
    regions: Tensor | None = None
    words: Tensor | None = None
    word_mask: Tensor | None = None


class ContrastiveModel(nn.Module):
    """Image and text encoders + projection heads into one space + a learnable temperature.

    Args:
        image_encoder / text_encoder: registry encoders (attributes ``out_dim``, ``grid_dim``,
            ``seq_dim``; see DEVELOPERS.md).
        projection_dim: P, width of the joint space.
        temperature: initial softmax temperature (``logit_scale = 1 / temperature``).
        learn_temperature: learn it (clamped to ``logit_scale <= 100``) or keep it fixed.
        local: build the region / word projections of the GLoRIA local loss.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        projection_dim: int = 128,
        temperature: float = 0.1,
        learn_temperature: bool = True,
        local: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        # The encoders' widths are plain int attributes (the registry encoder contract).
        self.image_projection = ProjectionHead(cast(int, image_encoder.out_dim), projection_dim)
        self.text_projection = ProjectionHead(cast(int, text_encoder.out_dim), projection_dim)
        self.region_projection = (
            nn.Linear(cast(int, image_encoder.grid_dim), projection_dim) if local else None
        )
        self.word_projection = nn.Linear(cast(int, text_encoder.seq_dim), projection_dim) if local else None
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self.projection_dim = projection_dim

    @property
    def logit_scale(self) -> Tensor:
        """1 / temperature, at most :data:`MAX_LOGIT_SCALE`."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed_images(self, images: Tensor) -> Tensor:
        """images [B, 1, H, W] (normalised) -> unit-norm embeddings [B, P]."""
        return F.normalize(self.image_projection(self.image_encoder(images).vector), dim=-1)

    def embed_texts(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L], mask [B, L] -> unit-norm embeddings [B, P]."""
        return F.normalize(self.text_projection(self.text_encoder(ids, mask).vector), dim=-1)

    def forward(self, batch: dict[str, Any]) -> ContrastiveOutput:
        """Batch dict (``image``, ``text_ids``, ``text_mask``) -> :class:`ContrastiveOutput`."""
        image = self.image_encoder(batch["image"])
        text = self.text_encoder(batch["text_ids"], batch["text_mask"])
        output = ContrastiveOutput(
            image_embeddings=F.normalize(self.image_projection(image.vector), dim=-1),
            text_embeddings=F.normalize(self.text_projection(text.vector), dim=-1),
            logit_scale=self.logit_scale,
        )
        if self.region_projection is not None:
            assert self.word_projection is not None  # both are built when local
            regions = image.grid.flatten(2).transpose(1, 2)  # [B, h*w, G]
            output.regions = F.normalize(self.region_projection(regions), dim=-1)
            output.words = F.normalize(self.word_projection(text.sequence), dim=-1)
            output.word_mask = text.mask.bool()
        return output


class ContrastiveLoss(nn.Module):
    """Global InfoNCE + ``local_weight`` x GLoRIA local loss, on the rows with both modalities.

    ``forward(output, pair_mask [B] bool) -> (total, parts dict)``; fewer than two complete
    pairs give a zero loss (an InfoNCE over one pair has no negatives).
    """

    def __init__(
        self,
        local_weight: float = 0.0,
        attention_temperature: float = 4.0,
        word_temperature: float = 5.0,
        logit_temperature: float = 10.0,
    ) -> None:
        super().__init__()
        self.local_weight = local_weight
        self.attention_temperature = attention_temperature
        self.word_temperature = word_temperature
        self.logit_temperature = logit_temperature

    def forward(self, output: ContrastiveOutput, pair_mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        keep = pair_mask.bool()
        if int(keep.sum()) < 2:
            zero = output.image_embeddings.sum() * 0.0
            return zero, {"global": zero.detach()}
        image, text = output.image_embeddings[keep], output.text_embeddings[keep]
        global_loss = info_nce_loss(image, text, output.logit_scale)
        parts = {"global": global_loss.detach()}
        total = global_loss
        if self.local_weight > 0 and output.regions is not None:
            assert output.words is not None and output.word_mask is not None  # set with regions
            local = local_alignment_loss(
                output.regions[keep], output.words[keep], output.word_mask[keep],
                self.attention_temperature, self.word_temperature, self.logit_temperature,
            )  # fmt: skip
            parts["local"] = local.detach()
            total = total + self.local_weight * local
        return total, parts


def create_contrastive_model(config: Config, *, vocab_size: int, pad_id: int) -> ContrastiveModel:
    """Build the encoders exactly as :func:`~medmodal.models.multimodal.create_model` does (same
    names, kwargs, ``model.embed_dim``, optional ``pretrained_path``) and wrap them."""
    width = config.model.embed_dim
    image_encoder = build_part(
        "image_encoder", config.model.image_encoder, wired={"in_channels": 1}, defaults={"out_dim": width}
    )
    text_encoder = build_part(
        "text_encoder",
        config.model.text_encoder,
        wired={"vocab_size": vocab_size, "pad_id": pad_id},
        defaults={"out_dim": width},
    )
    p = config.pretrain
    return ContrastiveModel(
        image_encoder,
        text_encoder,
        projection_dim=p.projection_dim,
        temperature=p.temperature,
        learn_temperature=p.learn_temperature,
        local=p.local_loss_weight > 0,
    )
