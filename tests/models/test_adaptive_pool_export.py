"""The image encoders' read-out pooling equals PyTorch's and exports to ONNX at any image size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmodal.models.layers import AdaptiveAvgPool2d
from medmodal.serving.onnx_export import OPSET


@pytest.mark.parametrize("size_in,side", [(8, 4), (7, 4), (14, 4), (3, 4), (5, (2, 3))])
def test_pooling_equals_torch(size_in, side):
    x = torch.randn(2, 3, size_in, size_in + 1)
    torch.testing.assert_close(AdaptiveAvgPool2d(side)(x), F.adaptive_avg_pool2d(x, side))


def test_default_encoder_exports_to_onnx_when_the_side_is_not_a_multiple_of_the_grid():
    ort = pytest.importorskip("onnxruntime")
    from medmodal.models.registry import create

    encoder = create("image_encoder", "coord_cnn", in_channels=1, out_dim=16).eval()
    image = torch.rand(1, 1, 48, 48)  # 48 px: a 6 x 6 feature map pooled to 4 x 4
    buffer = io.BytesIO()
    with torch.no_grad():
        expected = encoder(image).vector.numpy()
        torch.onnx.export(
            _VectorOnly(encoder), (image,), buffer, input_names=["image"], opset_version=OPSET, dynamo=False
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": image.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


class _VectorOnly(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, image):
        return self.encoder(image).vector
