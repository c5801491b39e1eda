"""Standard CNN backbones from MONAI (``monai.networks.nets``), 2D, one input channel.

Registered names: ``resnet18``, ``resnet50``, ``densenet121``, ``efficientnet_b0``.
The grid is the feature map of the last convolutional stage (stride 32):

=================  ==================================  ========
name               last stage                          channels
=================  ==================================  ========
resnet18           ``layer4``                          512
resnet50           ``layer4``                          2048
densenet121        ``features`` (ends with norm5)+ReLU 1024
efficientnet_b0    ``_conv_head`` + BN + swish         1280
=================  ==================================  ========

Weights start random (MONAI is never asked to download anything); load local weights
with ``pretrained_path`` (:func:`~medmodal.models.pretrained.load_pretrained`). The MONAI
network is kept as ``body.net``, so a state dict saved from the plain MONAI network loads
(the ``body.net.`` prefix is found automatically). Its classifier is removed.

MONAI is imported when an encoder is built, not when this module is imported.
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.models.image_encoders.base import FeatureMapEncoder
from medmodal.models.registry import register


class Trunk(nn.Module):
    """A MONAI network cut after its last convolutional stage; ``channels``: that stage's output channels."""

    channels: int


class ResNetTrunk(Trunk):
    """MONAI ResNet up to ``layer4``: [B, C_in, H, W] -> [B, C, H/32, W/32]."""

    def __init__(self, depth: int, in_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import resnet18, resnet50

        builder = {18: resnet18, 50: resnet50}[depth]
        # conv1 stride 2 + max-pool, as the 2D ImageNet ResNet (MONAI defaults to stride 1).
        self.net = builder(spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, feed_forward=False)
        self.channels = self.net.in_planes  # channels of layer4's output

    def forward(self, image: Tensor) -> Tensor:
        net = self.net
        x = net.act(net.bn1(net.conv1(image)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class DenseNetTrunk(Trunk):
    """MONAI DenseNet121 ``features`` + ReLU: [B, C_in, H, W] -> [B, 1024, H/32, W/32]."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet121

        self.net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1)
        self.channels = cast(nn.Linear, self.net.class_layers.out).in_features
        del self.net.class_layers

    def forward(self, image: Tensor) -> Tensor:
        return F.relu(self.net.features(image))


class EfficientNetTrunk(Trunk):
    """MONAI EfficientNet-B0 up to its head conv: [B, C_in, H, W] -> [B, 1280, H/32, W/32]."""

    def __init__(self, in_channels: int, model_name: str = "efficientnet-b0") -> None:
        super().__init__()
        from monai.networks.nets import EfficientNetBN

        self.net = EfficientNetBN(model_name, pretrained=False, spatial_dims=2, in_channels=in_channels)
        self.channels = self.net._conv_head.out_channels
        self.net.add_module("_fc", nn.Identity())  # replaces the classifier (MONAI types ``_fc`` as Linear)

    def forward(self, image: Tensor) -> Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(image))))
        x = net._blocks(x)
        return net._swish(net._bn1(net._conv_head(net._conv_head_padding(x))))


class MonaiBackbone(FeatureMapEncoder):
    """A MONAI trunk with the shared read-outs (subclasses choose the trunk).

    Args:
        in_channels: image channels (1 for radiographs).
        out_dim: width of the image vector.
        grid_dim: channels of the grid (1x1-conv projection); None keeps the trunk's.
        dropout: before the vector projection.
    """

    def __init__(
        self, in_channels: int = 1, out_dim: int = 256, grid_dim: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        trunk = self.build_trunk(in_channels)
        self.body = trunk
        self.build_readouts(trunk.channels, out_dim, grid_dim, dropout)

    def build_trunk(self, in_channels: int) -> Trunk:
        raise NotImplementedError


@register("image_encoder", "resnet18")
class ResNet18Encoder(MonaiBackbone):
    """MONAI ResNet-18, grid = ``layer4`` (512 channels, stride 32)."""

    def build_trunk(self, in_channels: int) -> Trunk:
        return ResNetTrunk(18, in_channels)


@register("image_encoder", "resnet50")
class ResNet50Encoder(MonaiBackbone):
    """MONAI ResNet-50, grid = ``layer4`` (2048 channels, stride 32)."""

    def build_trunk(self, in_channels: int) -> Trunk:
        return ResNetTrunk(50, in_channels)


@register("image_encoder", "densenet121")
class DenseNet121Encoder(MonaiBackbone):
    """MONAI DenseNet-121, grid = final dense block after norm5 + ReLU (1024 channels, stride 32)."""

    def build_trunk(self, in_channels: int) -> Trunk:
        return DenseNetTrunk(in_channels)


@register("image_encoder", "efficientnet_b0")
class EfficientNetB0Encoder(MonaiBackbone):
    """MONAI EfficientNet-B0, grid = head conv + BN + swish (1280 channels, stride 32)."""

    def build_trunk(self, in_channels: int) -> Trunk:
        return EfficientNetTrunk(in_channels)
