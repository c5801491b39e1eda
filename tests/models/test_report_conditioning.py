"""Diagnosis-driven report generation: decoders conditioned on the findings (docs/reports.md)."""

import pytest
import torch

from medmodal.models import available, create_model

from .helpers import BOS, EOS, NUM_LABELS, PAD, VOCAB, make_batch
from .test_decoders import build as build_decoder
from .test_decoders import inputs
from .test_multimodal import model_config

NAMES = available("decoder")
K = 4


def conditions(batch_size=3, seed=1):
    return torch.randint(0, 2, (batch_size, K), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("name", NAMES)
def test_unconditioned_decoder_has_no_conditioning_parameters(name):
    decoder = build_decoder(name)
    assert decoder.condition_dim == 0
    assert not [k for k in decoder.state_dict() if "condition" in k or "prompt" in k]
    targets, context, memory = inputs()
    with pytest.raises(ValueError, match="without conditioning"):
        decoder(targets, context, memory, condition=conditions())


@pytest.mark.parametrize("name", NAMES)
def test_conditioned_decoder_reads_the_findings(name):
    decoder = build_decoder(name, condition_dim=K).eval()
    targets, context, memory = inputs()
    cond = conditions()
    flipped = 1 - cond
    assert not torch.allclose(decoder(targets, context, memory, condition=cond),
                              decoder(targets, context, memory, condition=flipped))  # fmt: skip
    with pytest.raises(ValueError, match=r"condition must be \[3, 4\]"):
        decoder(targets, context, memory)
    with pytest.raises(ValueError, match=r"condition must be \[3, 4\]"):
        decoder.generate(context, memory, condition=cond[:, :2])


@pytest.mark.parametrize("name", NAMES)
def test_conditioned_step_agrees_with_teacher_forcing(name):
    decoder = build_decoder(name, condition_dim=K).eval()
    targets, context, memory = inputs()
    cond = conditions()
    expected = torch.log_softmax(decoder(targets, context, memory, condition=cond), dim=-1)
    state = decoder.init_state(context, memory, None, cond)
    for t in range(targets.shape[1] - 1):
        log_probs, state, _ = decoder.step(state, targets[:, t])
        assert torch.allclose(log_probs, expected[:, t], atol=1e-4), t
    greedy = decoder.generate(context, memory, max_len=6, beam_size=1, condition=cond)
    beam = decoder.generate(context, memory, max_len=6, beam_size=3, condition=cond)
    assert greedy.ids.shape[0] == beam.ids.shape[0] == 3


@pytest.mark.parametrize("name", NAMES)
def test_conditioned_decoder_learns_to_report_the_given_finding(name):
    """Same image and context, two findings: only the condition tells which report to write."""
    torch.manual_seed(0)
    decoder = build_decoder(name, condition_dim=2).train()
    reports = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, 9, 10, EOS]])
    cond = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, context, memory = inputs(batch_size=1)
    context, memory = context.expand(2, -1), memory.expand(2, -1, -1)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(150):
        logits = decoder(reports, context, memory, condition=cond)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), reports[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    decoder.eval()
    out = decoder.generate(context, memory, max_len=6, beam_size=2, condition=cond)
    assert out.ids[:, :4].tolist() == reports[:, 1:].tolist()


def conditioned_model(**overrides):
    config = model_config(report_conditioning={"mode": "findings", **overrides})
    return create_model(config, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS)


def test_conditioning_is_the_default_and_none_builds_the_unconditioned_decoder():
    assert (
        conditioned_model().condition_on_findings
        == create_model(
            model_config(), vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS
        ).condition_on_findings
    )
    model = create_model(
        model_config(report_conditioning={"mode": "none"}),
        vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )  # fmt: skip
    assert not model.condition_on_findings and model.decoder.condition_dim == 0
    assert "finding_thresholds" not in model.state_dict()
    with pytest.raises(RuntimeError, match="not conditioned"):
        model.set_finding_thresholds([0.5] * NUM_LABELS)


def test_training_reads_the_true_labels():
    model = conditioned_model().eval()
    batch = make_batch()
    other = {**batch, "labels": 1 - batch["labels"]}
    with torch.no_grad():
        assert not torch.allclose(model(batch).caption_logits, model(other).caption_logits)
        assert torch.equal(model(batch).logits, model(other).logits)  # labels reach only the decoder


@pytest.mark.parametrize("decoder", NAMES)
def test_generation_reads_the_predicted_findings_at_the_thresholds(decoder, monkeypatch):
    kwargs = {"num_heads": 2} if decoder == "transformer" else {"attn_dim": 16}
    config = model_config(
        decoder={"name": decoder, "kwargs": kwargs}, report_conditioning={"mode": "findings"}
    )
    model = create_model(
        config, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS
    ).eval()
    batch = {k: v for k, v in make_batch().items() if k != "target_ids"}
    seen = []
    original = model.decoder.generate
    monkeypatch.setattr(
        model.decoder, "generate", lambda *a, **kw: seen.append(kw["condition"]) or original(*a, **kw)
    )
    with torch.no_grad():
        probs = torch.sigmoid(model(batch).logits)
        thresholds = probs[0]  # the first study is exactly at every threshold: all its findings present
        model.set_finding_thresholds(thresholds)
        model.generate(batch, max_len=5, beam_size=2)
        model.set_calibration(torch.full((NUM_LABELS,), 3.0), torch.full((NUM_LABELS,), -5.0))
        model.generate(batch, max_len=5, beam_size=1)
    assert torch.equal(seen[0], (probs >= thresholds).float())
    assert seen[0][0].tolist() == [1.0] * NUM_LABELS
    assert torch.equal(seen[1], seen[0])  # calibration changes the reported probabilities, not the findings


def test_fixed_threshold_and_threshold_checks():
    model = conditioned_model(threshold=0.3)
    assert model.finding_thresholds.tolist() == pytest.approx([0.3] * NUM_LABELS)
    with pytest.raises(ValueError, match=f"expected {NUM_LABELS} values"):
        model.set_finding_thresholds([0.5])
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="report_conditioning.threshold"):
        model_config(report_conditioning={"mode": "findings", "threshold": 1.0})
