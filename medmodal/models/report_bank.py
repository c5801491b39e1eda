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

**By expected reading** (``report_conditioning.retrieve_by: expected_reading``). Clinical efficacy
scores what the report labeler reads in a report, not the study's labels: a consolidation report
often also states "opacity" or "pneumonia", a nodule report "opacity", and a reference may hedge.
So the bank also keeps each report's reading ``readings`` [N, R] (the labeler's R findings, stated =
1), and for a study with the classifier's probabilities ``p`` [C]:

1. ``q`` [R], the probability that the study's own report states each reading finding, is the
   mixture of the bank's mean reading per distinct label set ``s``, weighted by the probability of
   that set under ``p`` (labels independent given ``p``: prod p^s (1 - p)^(1 - s)), normalised over
   the sets the bank holds. Each set counts once: the bank's frequency of a set is not weighed in
   again, ``p`` already carries the prior.
2. The chosen report maximises ``sum_f reading_f (q_f - t)``: it states what is more likely than
   ``t``, as nearly as a training report does; ties (the same reading) are broken by the cosine.
   ``t`` is chosen on validation CE F1 (:mod:`medmodal.training.report_bank`). For calibrated ``q``
   the micro F1 is maximised by stating a finding when ``q_f > F*/2``, half the F1 reached (Lipton
   et al., "Optimal thresholding of classifiers to maximize F1", 2014): about 0.3 here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.types import GenerationOutput

BUFFERS = ("ids", "findings", "keys")
# t until validation sets it: F1 0.6 / 2, the optimal-threshold rule at the CE F1 the demo reaches
DEFAULT_READING_THRESHOLD = 0.3
MAX_READING_FINDINGS = 1024  # R of a checkpoint's readings (the labeler has 19): bounds [sets, R] work


class ReportBank(nn.Module):
    """Training reports keyed by their findings and joint vectors (module docstring).

    Args:
        num_labels: C, the findings.
        key_dim: D, width of the joint vector.
        vocab_size: the tokenizer's vocabulary (ids are checked against it on load).
        pad_id: the padding id of the stored reports.
        capacity: most reports a bank may hold (``report_conditioning.bank_size``).
        by_expected_reading: keep the reports' readings and choose by expected reading
            (``report_conditioning.retrieve_by: expected_reading``).
    """

    variable_shape_buffers: tuple[str, ...] = BUFFERS  # rows set by the checkpoint (training.checkpoints)
    ids: Tensor  # [N, T] int64 report token ids without BOS, ending at EOS, padded with pad_id
    findings: Tensor  # [N, C] bool, the report's training labels
    keys: Tensor  # [N, D] float, the training study's L2-normalised joint vector
    readings: Tensor  # [N, R] bool, what the labeler reads in the report (by expected reading only)
    reading_threshold: Tensor  # scalar t of the expected-reading rule (by expected reading only)
    set_labels: Tensor  # [S, C] float, the bank's distinct label sets (derived, not saved)
    set_readings: Tensor  # [S, R] float, the mean reading of each set's reports (derived, not saved)

    def __init__(
        self,
        num_labels: int,
        key_dim: int,
        vocab_size: int,
        pad_id: int,
        capacity: int,
        by_expected_reading: bool = False,
    ) -> None:
        super().__init__()
        self.num_labels, self.key_dim, self.vocab_size, self.pad_id = num_labels, key_dim, vocab_size, pad_id
        self.capacity = capacity
        self.by_expected_reading = by_expected_reading
        self.register_buffer("ids", torch.zeros(0, 0, dtype=torch.long))
        self.register_buffer("findings", torch.zeros(0, num_labels, dtype=torch.bool))
        self.register_buffer("keys", torch.zeros(0, key_dim))
        if by_expected_reading:  # only then, so checkpoints of the findings rule load as before
            self.variable_shape_buffers = (*BUFFERS, "readings")
            self.register_buffer("readings", torch.zeros(0, 0, dtype=torch.bool))  # [N, R]
            self.register_buffer("reading_threshold", torch.tensor(DEFAULT_READING_THRESHOLD))
            # Derived from findings and readings when they change (fill, load), not saved: the
            # distinct label sets [S, C] and their mean readings [S, R] that every retrieval mixes.
            self.register_buffer("set_labels", torch.zeros(0, num_labels), persistent=False)
            self.register_buffer("set_readings", torch.zeros(0, 0), persistent=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def fill(self, ids: Tensor, findings: Tensor, keys: Tensor, readings: Tensor | None = None) -> None:
        """Replace the bank: ids [N, T] (no BOS), findings [N, C] 0/1, keys [N, D] (normalised here),
        and for a bank that retrieves by expected reading, readings [N, R] 0/1."""
        self._check(ids, findings, keys, source="fill", readings=readings)
        self.ids = ids.to(self.ids.device, torch.long)
        self.findings = findings.to(self.findings.device).bool()
        self.keys = F.normalize(keys.to(self.keys.device, torch.float32), dim=-1)
        if self.by_expected_reading:
            assert readings is not None  # _check refuses a missing one
            self.readings = readings.to(self.readings.device).bool()
            self._index_label_sets()

    def _index_label_sets(self) -> None:
        """``set_labels`` / ``set_readings`` from the current findings and readings."""
        sets, which, counts = torch.unique(self.findings, dim=0, return_inverse=True, return_counts=True)
        mean_reading = torch.zeros(len(sets), self.readings.shape[1], device=sets.device)
        mean_reading.index_add_(0, which.reshape(-1), self.readings.float())
        self.set_labels, self.set_readings = sets.float(), mean_reading / counts[:, None]

    def set_reading_threshold(self, threshold: float) -> None:
        """t of the expected-reading rule (module docstring), in (0, 1)."""
        if not self.by_expected_reading:
            raise RuntimeError("this bank retrieves by the findings (retrieve_by: findings)")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"reading threshold {threshold} is not in (0, 1)")
        self.reading_threshold.fill_(threshold)

    @torch.no_grad()
    def retrieve(
        self, findings: Tensor, vector: Tensor, max_len: int | None = None, probs: Tensor | None = None
    ) -> GenerationOutput:
        """findings [B, C] 0/1 (predicted), vector [B, D], and for a bank by expected reading the
        classifier's probabilities probs [B, C] -> the chosen reports (module docstring), cut to
        ``max_len`` tokens like a generated one.

        Returns:
            GenerationOutput(ids [B, T'], attention None, scores [B] = the chosen report's cosine).
        """
        if len(self) == 0:
            raise RuntimeError("the report bank is empty (filled when training ends)")
        cosine = self.cosine(vector)
        if self.by_expected_reading:
            if probs is None:
                raise ValueError("a bank that retrieves by expected reading needs the probabilities")
            chosen = self.choose_by_reading(
                self.expected_readings(probs), cosine, float(self.reading_threshold)
            )
        else:
            chosen = self.choose_by_findings(findings, cosine)
        return GenerationOutput(
            ids=self.ids[chosen, :max_len],
            attention=None,
            scores=cosine.gather(1, chosen[:, None]).squeeze(1),
        )

    def cosine(self, vector: Tensor) -> Tensor:
        """vector [B, D] -> [B, N] its cosine with every report's key, in [-1, 1]."""
        return F.normalize(vector.float(), dim=-1) @ self.keys.T

    def choose_by_findings(self, findings: Tensor, cosine: Tensor) -> Tensor:
        """findings [B, C] 0/1, cosine [B, N] -> [B] the report with the fewest differing findings."""
        differing = (findings.bool()[:, None, :] != self.findings[None]).sum(-1)  # [B, N]
        # Fewest differing findings first; the cosine (|.| <= 1 < 3) only breaks ties among those.
        return torch.argmax(cosine - 3.0 * differing, dim=1)

    def expected_readings(self, probs: Tensor) -> Tensor:
        """probs [B, C] -> q [B, R]: the probability that the study's report states each reading
        finding (module docstring, step 1)."""
        sets = self.set_labels  # [S, C], their mean readings [S, R] (_index_label_sets)
        p = probs.float().clamp(1e-6, 1.0 - 1e-6)
        log_likelihood = p.log() @ sets.T + (1.0 - p).log() @ (1.0 - sets).T  # [B, S]
        return torch.softmax(log_likelihood, dim=1) @ self.set_readings

    def choose_by_reading(self, expected: Tensor, cosine: Tensor, threshold: float) -> Tensor:
        """expected q [B, R], cosine [B, N] -> [B] the report maximising sum_f reading_f (q_f - t),
        the highest cosine among equal gains (module docstring, step 2)."""
        gain = (expected - threshold) @ self.readings.float().T  # [B, N]
        best = gain.max(dim=1, keepdim=True).values
        return torch.argmax(torch.where(gain >= best - 1e-6, cosine, -torch.inf), dim=1)

    def _check(
        self, ids: Tensor, findings: Tensor, keys: Tensor, source: str, readings: Tensor | None = None
    ) -> None:
        rows = ids.shape[0]
        problems = []
        if ids.ndim != 2 or findings.shape != (rows, self.num_labels) or keys.shape != (rows, self.key_dim):
            problems.append(
                f"shapes ids {tuple(ids.shape)}, findings {tuple(findings.shape)}, keys {tuple(keys.shape)} "
                f"are not [N, T], [N, {self.num_labels}], [N, {self.key_dim}]"
            )
        elif self.by_expected_reading and (
            readings is None
            or readings.ndim != 2
            or readings.shape[0] != rows
            or readings.shape[1] > MAX_READING_FINDINGS
            or (rows > 0 and readings.shape[1] == 0)  # an empty bank (not yet filled) has [0, 0]
        ):
            shape = None if readings is None else tuple(readings.shape)
            problems.append(
                f"readings of shape {shape} are not [N, R] for the {rows} reports, 0 < R <= {MAX_READING_FINDINGS}"
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
        readings = state_dict.get(prefix + "readings")
        if isinstance(ids, Tensor) and isinstance(findings, Tensor) and isinstance(keys, Tensor):
            self._check(ids, findings, keys, source="checkpoint", readings=readings)
            self.ids = torch.empty(ids.shape, dtype=torch.long, device=self.ids.device)
            self.findings = torch.empty(findings.shape, dtype=torch.bool, device=self.findings.device)
            self.keys = torch.empty(keys.shape, dtype=self.keys.dtype, device=self.keys.device)
            if self.by_expected_reading and isinstance(readings, Tensor):
                self.readings = torch.empty(readings.shape, dtype=torch.bool, device=self.readings.device)
        threshold = state_dict.get(prefix + "reading_threshold")
        if (
            self.by_expected_reading
            and isinstance(threshold, Tensor)
            and (threshold.numel() != 1 or not 0.0 < float(threshold) < 1.0)  # NaN fails too
        ):
            raise ValueError(
                f"report bank (checkpoint): reading threshold {threshold.tolist()} is not in (0, 1)"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.by_expected_reading:
            self._index_label_sets()
