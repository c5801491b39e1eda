"""The VQA network: shapes, gradient flow to every part, the question-only variant ignores the image."""

from __future__ import annotations

import pytest
import torch

from medmodal.config import PartConfig
from medmodal.models.vqa import VQAModel

SMALL_CNN = PartConfig(name="small_cnn", kwargs={"widths": [8, 16], "stem_width": 8})
QUESTION = PartConfig(name="bilstm_attention")


def _model(fusion: str = "concat", use_image: bool = True, num_answers: int = 7) -> VQAModel:
    return VQAModel(SMALL_CNN, QUESTION, PartConfig(name=fusion), vocab_size=30, pad_id=0, num_answers=num_answers,
                    embed_dim=16, use_image=use_image)  # fmt: skip


@pytest.mark.parametrize("fusion", ["concat", "cross_attention"])
def test_model_shapes_and_gradients_reach_every_part(fusion):
    torch.manual_seed(0)
    model = _model(fusion)
    image = torch.randn(2, 1, 32, 32)
    ids = torch.randint(5, 30, (5, 6))
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[1, 3:] = False
    image_index = torch.tensor([0, 0, 1, 1, 1])
    logits = model(image, ids, mask, image_index)
    assert logits.shape == (5, 7)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 4])).backward()
    for part in (model.image_encoder, model.question_encoder, model.fusion, model.classifier):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), type(part).__name__


def test_question_only_model_ignores_the_image():
    torch.manual_seed(0)
    model = _model(use_image=False, num_answers=4).eval()
    ids, mask = torch.randint(5, 30, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    a = model(torch.randn(2, 1, 32, 32), ids, mask)
    b = model(torch.randn(2, 1, 32, 32), ids, mask)
    assert torch.allclose(a, b)
    seeing = _model(num_answers=4).eval()
    assert not torch.allclose(
        seeing(torch.randn(2, 1, 32, 32), ids, mask), seeing(torch.randn(2, 1, 32, 32), ids, mask)
    )


def test_an_empty_answer_vocabulary_is_refused():
    with pytest.raises(ValueError, match="answer vocabulary is empty"):
        _model(num_answers=0)
