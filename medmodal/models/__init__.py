"""Model parts (built by name from the registry) and the multimodal model that composes them.

>>> from medmodal.config import ModelConfig
>>> from medmodal.models import create_model, available
>>> available("fusion")
['bilinear', 'concat', 'cross_attention', 'gated', 'late']
>>> model = create_model(ModelConfig(), vocab_size=100, num_labels=5, pad_id=0, bos_id=1, eos_id=2)
"""

from medmodal.models.multimodal import MultimodalModel, build_part, create_model
from medmodal.models.pretrained import LoadReport, PretrainedWeightsError, load_pretrained
from medmodal.models.registry import available, create, register
from medmodal.models.types import (
    FusionOutput,
    GenerationOutput,
    ImageFeatures,
    ModelOutput,
    TextFeatures,
)

__all__ = [
    "FusionOutput",
    "GenerationOutput",
    "ImageFeatures",
    "LoadReport",
    "ModelOutput",
    "MultimodalModel",
    "PretrainedWeightsError",
    "TextFeatures",
    "available",
    "build_part",
    "create",
    "create_model",
    "load_pretrained",
    "register",
]
