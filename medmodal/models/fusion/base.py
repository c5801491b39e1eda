"""The fusion contract, shared by every file of this package.

The registry builds a fusion layer with the keywords ``(image_dim, text_dim, grid_dim, seq_dim,
out_dim, num_labels, **kwargs)``: the model factory wires the first five from the encoders and the
label count (:class:`FusionDims`), ``out_dim`` defaults to the model width and ``kwargs`` come from
the config. The classes of this package take the wired widths as one :class:`FusionDims` and are
registered with :func:`register_fusion`, which accepts those keywords:
``cls(dims: FusionDims, out_dim: int, **kwargs)``.

Every fusion layer has the attribute ``out_dim`` and
``forward(image: ImageFeatures, text: TextFeatures) -> FusionOutput`` with ``vector`` [B, out_dim]
(the joint representation the heads read), ``logits`` [B, num_labels] for decision-level fusion
(else None) and ``extras`` (gates, attention maps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import Tensor, nn

from medmodal.models.registry import register_with_dims
from medmodal.models.types import ImageFeatures, TextFeatures


@dataclass(frozen=True)
class FusionDims:
    """The widths the model factory wires into a fusion layer.

    Attributes:
        image_dim, text_dim: widths of the modality vectors.
        grid_dim: channels of the image grid; seq_dim: width of the token features.
        num_labels: classes C (read by decision-level fusion).
    """

    image_dim: int
    text_dim: int
    grid_dim: int
    seq_dim: int
    num_labels: int

    @property
    def joint_dim(self) -> int:
        """Width of the concatenated modality vectors ``[x_image; x_text]``."""
        return self.image_dim + self.text_dim


class FusionLayer(nn.Module):
    """Base class of the fusion layers; sets ``out_dim``, the width of the fused vector.

    ``produces_logits``: True for decision-level fusion, whose ``FusionOutput.logits``
    are the model's classification logits (no separate classification head is built).
    """

    produces_logits: bool = False
    out_dim: int

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim


Layer = TypeVar("Layer", bound=FusionLayer)


def register_fusion(name: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: registers ``cls`` as fusion ``name``, built from the registry's keywords
    as ``cls(FusionDims(...the fields of FusionDims...), **the others)`` (``out_dim`` and the
    layer's options)."""
    return register_with_dims("fusion", name, FusionDims)


class DecisionFusion(FusionLayer):
    """Base of the decision-level fusions (``late``, ``stacked``); ``FusionOutput.logits`` are the
    model's logits.

    Builds first one linear classifier per modality, ``image_classifier`` and ``text_classifier``
    (dropout, then Linear to the C classes). The subclass builds its combination of their logits,
    then, last, ``projection`` (:func:`joint_projection`): the ``vector`` [B, out_dim] the other heads
    (localization, generation) read.
    """

    produces_logits = True
    projection: nn.Sequential

    def __init__(self, dims: FusionDims, out_dim: int, dropout: float) -> None:
        super().__init__(out_dim)
        self.image_classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.image_dim, dims.num_labels))
        self.text_classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.text_dim, dims.num_labels))

    def unimodal_logits(self, image: ImageFeatures, text: TextFeatures) -> tuple[Tensor, Tensor]:
        """[B, C] logits of the image classifier, then of the text classifier."""
        return self.image_classifier(image.vector), self.text_classifier(text.vector)


def joint_projection(dims: FusionDims, out_dim: int, dropout: float) -> nn.Sequential:
    """Dropout, Linear and GELU: ``[x_image; x_text]`` [B, joint_dim] -> [B, out_dim]."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.joint_dim, out_dim), nn.GELU())
