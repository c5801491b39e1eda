"""Peer models from other toolkits rebuilt as registered medmodal parts (no downloads), so a benchmark
grid cell can name them and they train through the same trainer, data, splits and metrics.

- ``transchex``: MONAI's Transchex (image + report transformer); parts ``transchex_image``,
  ``transchex_text`` and fusion ``transchex`` (needs the ``peers`` extra: transformers).
"""

from medmodal.models.peers import transchex  # registers its parts

__all__ = ["transchex"]
