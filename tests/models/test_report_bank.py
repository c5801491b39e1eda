"""The report bank (models/report_bank.py): retrieval by the predicted findings, then by the joint
vector; its checkpoint round trip and the checks on a hostile one."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from medmodal.config import ConfigError
from medmodal.models.multimodal import create_model
from medmodal.models.report_bank import ReportBank
from medmodal.training.checkpoints import variable_shape_buffers


def _bank(capacity: int = 10) -> ReportBank:
    bank = ReportBank(num_labels=3, key_dim=2, vocab_size=50, pad_id=0, capacity=capacity)
    ids = torch.tensor([[11, 2, 0], [12, 2, 0], [13, 14, 2], [15, 2, 0]])
    findings = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 3.0], [3.0, 0.0], [1.0, 1.0]])
    bank.fill(ids, findings, keys)
    return bank


def test_the_report_with_the_predicted_findings_is_chosen_then_the_nearest_vector():
    bank = _bank()
    out = bank.retrieve(
        torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [0.0, 0, 1]]),
        torch.tensor([[0.1, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 0.0]]),
    )
    # Study 0 and 1: two reports state exactly {finding 0}; the nearer key decides (not the
    # normal report 0 although study 1's vector is nearest it). Study 2: the only normal report,
    # whatever its cosine (-1). Study 3: no report states finding 2 alone; one finding differs
    # from report 0 (normal), two or more from the others.
    assert out.ids[:, 0].tolist() == [12, 13, 11, 11]
    assert out.attention is None
    assert torch.allclose(out.scores[:3], torch.tensor([1.0 / (1.01**0.5), 1.0 / (1.01**0.5), -1.0]))


def test_retrieved_reports_are_cut_to_max_len_like_generated_ones():
    out = _bank().retrieve(torch.tensor([[1.0, 0, 0]]), torch.tensor([[1.0, 0.0]]), max_len=2)
    assert out.ids.tolist() == [[13, 14]]


def test_the_keys_are_stored_unit_norm():
    assert torch.allclose(_bank().keys.norm(dim=1), torch.ones(4))


def test_an_empty_bank_retrieves_nothing():
    bank = ReportBank(num_labels=3, key_dim=2, vocab_size=50, pad_id=0, capacity=10)
    with pytest.raises(RuntimeError, match="empty"):
        bank.retrieve(torch.zeros(1, 3), torch.ones(1, 2))


def test_a_filled_bank_round_trips_through_a_state_dict_of_another_size():
    bank = _bank()
    fresh = ReportBank(num_labels=3, key_dim=2, vocab_size=50, pad_id=0, capacity=10)
    fresh.load_state_dict(bank.state_dict())
    assert len(fresh) == 4
    for name in ("ids", "findings", "keys"):
        assert torch.equal(getattr(fresh, name), getattr(bank, name))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ids": torch.full((4, 3), 50)}, "outside the vocabulary"),
        ({"ids": torch.full((4, 3), -1)}, "outside the vocabulary"),
        ({"ids": torch.zeros(4, 3)}, "outside the vocabulary"),  # float ids
        ({"findings": torch.zeros(4, 2, dtype=torch.bool)}, "shapes"),
        ({"keys": torch.zeros(3, 2)}, "shapes"),
        ({"keys": torch.full((4, 2), float("nan"))}, "NaN"),
    ],
)
def test_a_hostile_checkpoint_bank_is_refused(change, message):
    state = {**_bank().state_dict(), **change}
    fresh = ReportBank(num_labels=3, key_dim=2, vocab_size=50, pad_id=0, capacity=10)
    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(state)


def test_a_bank_larger_than_its_capacity_is_refused():
    state = _bank().state_dict()
    small = ReportBank(num_labels=3, key_dim=2, vocab_size=50, pad_id=0, capacity=3)
    with pytest.raises(ValueError, match="more than the bank_size 3"):
        small.load_state_dict(state)


RETRIEVED = {
    "model.heads.generation": True,
    "model.report_conditioning.reports": "retrieved",
    "model.report_conditioning.threshold": "val_micro_f1",
}


def test_a_retrieving_model_declares_its_bank_buffers_variable():
    model = create_model(
        tiny_config(**RETRIEVED).model, vocab_size=40, num_labels=3, pad_id=0, bos_id=1, eos_id=2
    )
    assert model.report_bank is not None
    assert variable_shape_buffers(model) == {f"report_bank.{n}" for n in ("ids", "findings", "keys")}
    generated = create_model(tiny_config().model, vocab_size=40, num_labels=3, pad_id=0, bos_id=1, eos_id=2)
    assert generated.report_bank is None and variable_shape_buffers(generated) == set()


def test_retrieval_needs_reports_conditioned_on_the_findings():
    with pytest.raises(ConfigError, match="mode: findings"):
        tiny_config(**{**RETRIEVED, "model.report_conditioning.mode": "none"})


# --------------------------------------------------------------- retrieve_by: expected_reading
def _reading_bank(threshold: float = 0.3) -> ReportBank:
    """Label sets {} x3, {0}, {0}, {0, 1}; readings over R = 3 labeler findings (the third, e.g.
    "opacity", stated by one of the two {0} reports and by the {0, 1} one)."""
    bank = ReportBank(num_labels=2, key_dim=2, vocab_size=50, pad_id=0, capacity=10, by_expected_reading=True)
    ids = torch.tensor([[11, 2], [12, 2], [13, 2], [14, 2], [15, 2], [16, 2]])
    findings = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [1, 1]])
    readings = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bank.fill(ids, findings, keys, readings)
    bank.set_reading_threshold(threshold)
    return bank


def test_the_expected_reading_mixes_each_label_set_once_by_its_probability():
    p0, p1 = 0.6, 0.2
    q = _reading_bank().expected_readings(torch.tensor([[p0, p1]]))[0]
    # P(set) under independent labels, over the three sets the bank holds, each counted once
    # (the empty set's three copies do not triple its weight; set {1} is not in the bank).
    empty, zero, both = (1 - p0) * (1 - p1), p0 * (1 - p1), p0 * p1
    total = empty + zero + both
    # mean reading of the two {0} reports: [1, 0, 0.5]; of {0, 1}: [1, 1, 1]
    expected = torch.tensor([(zero + both) / total, both / total, (0.5 * zero + both) / total])
    assert torch.allclose(q, expected, atol=1e-5)


def test_the_report_stating_what_is_likelier_than_t_is_chosen_then_the_nearest_vector():
    bank = _reading_bank()
    cosine = bank.cosine(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    q = torch.tensor([[0.9, 0.1, 0.6], [0.9, 0.1, 0.2], [0.1, 0.1, 0.1], [0.9, 0.8, 0.8]])
    chosen = bank.choose_by_reading(q, cosine, threshold=0.3)
    # 0: finding 0 and the third: report 4 (the only one reading exactly so). 1: finding 0 only:
    # report 3. 2: nothing: the normal report nearest [1, 0], report 0. 3: all three: report 5.
    assert chosen.tolist() == [4, 3, 0, 5]
    # the same q at a higher t states less: study 0 then reads finding 0 only
    assert bank.choose_by_reading(q, cosine, threshold=0.7).tolist()[0] == 3


def test_an_expected_reading_bank_retrieves_by_the_probabilities():
    bank = _reading_bank()
    out = bank.retrieve(
        torch.zeros(2, 2),
        torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
        probs=torch.tensor([[0.99, 0.01], [0.01, 0.01]]),
    )
    # study 0: finding 0 certain, the third finding at 0.5 > t: report 15 (ids [15, 2]); study 1: normal, nearest key
    assert out.ids[:, 0].tolist() == [15, 13]
    with pytest.raises(ValueError, match="needs the probabilities"):
        bank.retrieve(torch.zeros(1, 2), torch.ones(1, 2))


def test_an_expected_reading_bank_round_trips_and_refuses_a_bad_reading():
    bank = _reading_bank(threshold=0.25)
    fresh = ReportBank(
        num_labels=2, key_dim=2, vocab_size=50, pad_id=0, capacity=10, by_expected_reading=True
    )
    fresh.load_state_dict(bank.state_dict())
    assert torch.equal(fresh.readings, bank.readings) and float(fresh.reading_threshold) == 0.25
    # an empty bank (a checkpoint written before the fill at the end of training) loads too
    empty = ReportBank(
        num_labels=2, key_dim=2, vocab_size=50, pad_id=0, capacity=10, by_expected_reading=True
    )
    fresh.load_state_dict(empty.state_dict())
    assert len(fresh) == 0 and fresh.readings.shape == (0, 0)
    # a row count other than the bank's, no finding, or more findings than any labeler has
    for bad in [torch.zeros(5, 3), torch.zeros(6, 0), torch.zeros(6, 2000)]:
        state = {**bank.state_dict(), "readings": bad.bool()}
        with pytest.raises(ValueError, match="readings of shape"):
            ReportBank(
                num_labels=2, key_dim=2, vocab_size=50, pad_id=0, capacity=10, by_expected_reading=True
            ).load_state_dict(state)
    with pytest.raises(ValueError, match=r"not in \(0, 1\)"):
        bank.set_reading_threshold(1.0)
    for bad in [torch.tensor(float("nan")), torch.tensor(2.0), torch.tensor([0.3, 0.3])]:
        state = {**bank.state_dict(), "reading_threshold": bad}
        with pytest.raises(ValueError, match="reading threshold"):
            ReportBank(
                num_labels=2, key_dim=2, vocab_size=50, pad_id=0, capacity=10, by_expected_reading=True
            ).load_state_dict(state)
    with pytest.raises(RuntimeError, match="retrieve_by: findings"):
        _bank().set_reading_threshold(0.3)


def test_expected_reading_needs_retrieved_reports():
    with pytest.raises(ConfigError, match="needs reports: retrieved"):
        tiny_config(**{"model.report_conditioning.retrieve_by": "expected_reading"})
    model = create_model(
        tiny_config(**RETRIEVED, **{"model.report_conditioning.retrieve_by": "expected_reading"}).model,
        vocab_size=40,
        num_labels=3,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    assert model.report_bank is not None and model.report_bank.by_expected_reading
    assert variable_shape_buffers(model) == {
        f"report_bank.{n}" for n in ("ids", "findings", "keys", "readings")
    }
