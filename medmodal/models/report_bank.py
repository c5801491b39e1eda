"""Reports retrieved by their findings: the training report whose findings are nearest the predicted ones.

``model.report_conditioning.reports: retrieved`` (docs/reports.md). A report generated word by
word from a few hundred training reports states the findings it was conditioned on unreliably
(demo validation: CE precision 0.77, recall 0.27, docs/diagnosis.md "Round 4"); a report of the
training split whose labels are the predicted findings states them in a radiologist's words,
including what those words co-state (a consolidation report also says "opacity" or
"pneumonia"). This is retrieval-based report generation (e.g. Endo et al., CXR-RePaiR, ML4H
2021) keyed by the classifier's findings as diagnosis-driven prompting keys a decoder.

For a study with predicted findings ``s`` [C] (0/1) and joint vector ``v`` [D], the bank returns
the report ``i`` that minimises the number of findings on which ``s`` and the report's labels
differ (Hamming distance), ties broken by the highest cosine of ``v`` and the report's key (the
training study's joint vector under the same weights, so studies that look and read alike get
alike reports: more variety than one report per set of findings).

The bank lives in buffers (token ids, labels, keys), so a checkpoint carries it; their row count is
that of the training split, unknown when the model is built, so loading resizes them to the
checkpoint's (checked: consistent shapes, at most ``capacity`` rows, ids inside the vocabulary).
An empty bank (a model not yet filled by :mod:`medmodal.training.report_bank`) retrieves nothing
and the model's decoder generates instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.types import GenerationOutput

BUFFERS = ("ids", "findings", "keys")


class ReportBank(nn.Module):
    """Training reports keyed by their findings and joint vectors (module docstring).

    Args:
        num_labels: C, the findings.
        key_dim: D, width of the joint vector.
        vocab_size: the tokenizer's vocabulary (ids are checked against it on load).
        pad_id: the padding id of the stored reports.
        capacity: most reports a bank may hold (``report_conditioning.bank_size``).
    """

    variable_shape_buffers = BUFFERS  # rows set by the checkpoint (medmodal.training.checkpoints)
    ids: Tensor  # [N, T] int64 report token ids without BOS, ending at EOS, padded with pad_id
    findings: Tensor  # [N, C] bool, the report's training labels
    keys: Tensor  # [N, D] float, the training study's L2-normalised joint vector

    def __init__(self, num_labels: int, key_dim: int, vocab_size: int, pad_id: int, capacity: int) -> None:
        super().__init__()
        self.num_labels, self.key_dim, self.vocab_size, self.pad_id = num_labels, key_dim, vocab_size, pad_id
        self.capacity = capacity
        self.register_buffer("ids", torch.zeros(0, 0, dtype=torch.long))
        self.register_buffer("findings", torch.zeros(0, num_labels, dtype=torch.bool))
        self.register_buffer("keys", torch.zeros(0, key_dim))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def fill(self, ids: Tensor, findings: Tensor, keys: Tensor) -> None:
        """Replace the bank: ids [N, T] (no BOS), findings [N, C] 0/1, keys [N, D] (normalised here)."""
        self._check(ids, findings, keys, source="fill")
        self.ids = ids.to(self.ids.device, torch.long)
        self.findings = findings.to(self.findings.device).bool()
        self.keys = F.normalize(keys.to(self.keys.device, torch.float32), dim=-1)

    @torch.no_grad()
    def retrieve(self, findings: Tensor, vector: Tensor, max_len: int | None = None) -> GenerationOutput:
        """findings [B, C] 0/1 (predicted), vector [B, D] -> the nearest reports (module docstring),
        cut to ``max_len`` tokens like a generated one.

        Returns:
            GenerationOutput(ids [B, T'], attention None, scores [B] = the chosen report's cosine).
        """
        if len(self) == 0:
            raise RuntimeError("the report bank is empty (filled when training ends)")
        differing = (findings.bool()[:, None, :] != self.findings[None]).sum(-1)  # [B, N]
        cosine = F.normalize(vector.float(), dim=-1) @ self.keys.T  # [B, N] in [-1, 1]
        # Fewest differing findings first; the cosine (|.| <= 1 < 3) only breaks ties among those.
        chosen = torch.argmax(cosine - 3.0 * differing, dim=1)
        return GenerationOutput(
            ids=self.ids[chosen, :max_len],
            attention=None,
            scores=cosine.gather(1, chosen[:, None]).squeeze(1),
        )

    def _check(self, ids: Tensor, findings: Tensor, keys: Tensor, source: str) -> None:
        rows = ids.shape[0]
        problems = []
        if ids.ndim != 2 or findings.shape != (rows, self.num_labels) or keys.shape != (rows, self.key_dim):
            problems.append(
                f"shapes ids {tuple(ids.shape)}, findings {tuple(findings.shape)}, keys {tuple(keys.shape)} "
                f"are not [N, T], [N, {self.num_labels}], [N, {self.key_dim}]"
            )
        elif rows > self.capacity:
            problems.append(f"{rows} reports, more than the bank_size {self.capacity}")
        elif ids.is_floating_point() or (
            ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < self.vocab_size)
        ):
            problems.append(f"token ids outside the vocabulary [0, {self.vocab_size})")
        elif not torch.isfinite(keys.float()).all():
            problems.append("keys hold NaN or inf")
        if problems:
            raise ValueError(f"report bank ({source}): {problems[0]}")

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The row count comes from the checkpoint: resize the buffers to it (after the checks)
        # before the default load copies into them.
        ids, findings, keys = (state_dict.get(prefix + name) for name in BUFFERS)
        if isinstance(ids, Tensor) and isinstance(findings, Tensor) and isinstance(keys, Tensor):
            self._check(ids, findings, keys, source="checkpoint")
            self.ids = torch.empty(ids.shape, dtype=torch.long, device=self.ids.device)
            self.findings = torch.empty(findings.shape, dtype=torch.bool, device=self.findings.device)
            self.keys = torch.empty(keys.shape, dtype=self.keys.dtype, device=self.keys.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
