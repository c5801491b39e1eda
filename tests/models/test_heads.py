import torch

from medmodal.models.heads import ClassificationHead


def test_classification_head_linear_and_mlp():
    assert ClassificationHead(8, 3)(torch.randn(4, 8)).shape == (4, 3)
    head = ClassificationHead(8, 3, hidden_dim=16)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 2
    assert head(torch.randn(4, 8)).shape == (4, 3)
