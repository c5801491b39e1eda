"""Classification evidence from the box head: each finding's heatmap peak, mixed into its logit.

The dense box head is trained on every cell of the image (a Gaussian at each true box centre,
focal loss), the classifier on one label per study. On the demo's data the head's highest
heatmap logit per finding ranks the studies far better than the classifier does for the findings
a global pooling misses (consolidation, nodule, pneumothorax: docs/diagnosis.md, round 7). So with
``model.localization.peak_evidence: true`` the logit of each finding the head was trained on is,
in eval mode,

    z'_c = (1 - w) z_c + w (a_c h_c + b_c),

``z_c`` the classifier's logit, ``h_c`` the highest logit of finding c's heatmap, ``(a_c, b_c)``
Platt scaling of ``h_c`` and ``w`` one weight in [0, 1], all fitted on the validation split when
training ends (:mod:`medmodal.training.peak_evidence`). Findings without training boxes keep
``z_c``, and so do studies whose image the model did not see (a missing image's heatmaps are
those of the placeholder, not evidence). Until then (``w = 0``) the map is the identity, and training mode never mixes, so the
classification loss never reaches the box head through it.

The buffers are saved with the weights; a checkpoint from elsewhere whose weight is outside
[0, 1], or whose scales or biases are not finite, is refused when loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class PeakEvidence(nn.Module):
    """logits [B, C], peaks [B, C] (each finding's highest heatmap logit) -> logits [B, C] (module docstring).

    Buffers: ``weight`` (scalar w), ``scale`` and ``bias`` [C] (Platt scaling of the peaks),
    ``boxed`` [C] bool (findings the box head was trained on).
    """

    weight: Tensor
    scale: Tensor
    bias: Tensor
    boxed: Tensor

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(0.0))
        self.register_buffer("scale", torch.ones(num_labels))
        self.register_buffer("bias", torch.zeros(num_labels))
        self.register_buffer("boxed", torch.zeros(num_labels, dtype=torch.bool))

    def forward(self, logits: Tensor, peaks: Tensor, seen: Tensor | None = None) -> Tensor:
        return logits if self.training else self.mix(logits, peaks, seen)

    def mix(self, logits: Tensor, peaks: Tensor, seen: Tensor | None = None) -> Tensor:
        """logits, peaks [B, C], ``seen`` [B] bool (rows whose image the model saw; all if None)
        -> (1 - w) z + w (a h + b) for the boxed findings of seen rows, z elsewhere."""
        share = self.weight * self.boxed.to(logits.dtype)[None, :]  # [1, C]: w for boxed findings, else 0
        if seen is not None:
            share = share * seen.to(logits.dtype)[:, None]
        scale, bias = self.scale.to(logits.dtype), self.bias.to(logits.dtype)
        # not detached: gradient explanations (Grad-CAM) see the evidence; training mode never mixes
        return logits + share * (scale * peaks + bias - logits)

    def set(self, weight: float, scale: Tensor, bias: Tensor, boxed: Tensor) -> None:
        """Set w, the Platt scales and biases [C] and the boxed findings [C] (checked as on load)."""
        problem = _problem(torch.as_tensor(float(weight)), scale, bias, boxed, len(self.scale))
        if problem:
            raise ValueError(f"peak evidence: {problem}")
        self.weight.fill_(float(weight))
        self.scale.copy_(scale)
        self.bias.copy_(bias)
        self.boxed.copy_(boxed)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        weight, scale, bias, boxed = (
            state_dict.get(prefix + name) for name in ("weight", "scale", "bias", "boxed")
        )
        if (
            isinstance(weight, Tensor)
            and isinstance(scale, Tensor)
            and isinstance(bias, Tensor)
            and isinstance(boxed, Tensor)
        ):
            problem = _problem(weight, scale, bias, boxed, len(self.scale))
            if problem:
                raise ValueError(f"peak evidence (checkpoint): {problem}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _problem(weight: Tensor, scale: Tensor, bias: Tensor, boxed: Tensor, num_labels: int) -> str | None:
    """What is wrong with these values (None: nothing). NaN fails every check."""
    if weight.numel() != 1 or not 0.0 <= float(weight) <= 1.0:
        return f"weight {weight.tolist()} is not one number in [0, 1]"
    for name, values in (("scale", scale), ("bias", bias), ("boxed", boxed)):
        if tuple(values.shape) != (num_labels,):
            return f"{name} has shape {tuple(values.shape)}, expected ({num_labels},)"
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        return f"scales {scale.tolist()} must be finite and > 0"
    if not bool(torch.isfinite(bias).all()):
        return f"biases {bias.tolist()} must be finite"
    return None
