"""medmodal: multimodal deep learning on medical images paired with clinical text.

The Python API (:mod:`medmodal.api`; docs/python-api.md)::

    import medmodal
    medmodal.list_models()
    model = medmodal.create_model("tiny", labels=["nodule", "effusion"])
    medmodal.train("data/", "tiny", out="runs/tiny")
    medmodal.load("runs/tiny").predict(image, "Cough.")

Its names are imported on first use (PEP 562), so ``import medmodal`` and ``medmodal --help``
stay fast: torch and Lightning load only when a function is called.
"""

from __future__ import annotations

from medmodal.version import __version__

# name -> module that defines it
_LAZY = {
    "create_model": "medmodal.api",
    "get_config": "medmodal.api",
    "list_models": "medmodal.api",
    "load": "medmodal.api",
    "train": "medmodal.api",
    "Config": "medmodal.config",
    "Study": "medmodal.data.types",
    "Predictor": "medmodal.serving.predictor",
}

__all__ = [
    "Config",
    "Predictor",
    "Study",
    "__version__",
    "create_model",
    "get_config",
    "list_models",
    "load",
    "train",
]

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would double the import time
if TYPE_CHECKING:
    from medmodal.api import create_model, get_config, list_models, load, train
    from medmodal.config import Config
    from medmodal.data.types import Study
    from medmodal.serving.predictor import Predictor


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmodal' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
