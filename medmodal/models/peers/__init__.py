"""Peer models from other toolkits rebuilt as registered medmodal parts (no downloads), so a benchmark
grid cell can name them and they train through the same trainer, data, splits and metrics.

- ``transchex``: MONAI's Transchex (image + report transformer); parts ``transchex_image``,
  ``transchex_text`` and fusion ``transchex`` (needs the ``peers`` extra: transformers).
"""

from medmodal.models.peers import transchex  # registers its parts

# Parts of a peer model: they work only together (widths, token layout), not with any other part, so
# the per-part contract tests use ``registry.available(kind, standalone=True)``, which leaves them out.
PEER_PARTS = {
    "image_encoder": ("transchex_image",),
    "text_encoder": ("transchex_text",),
    "fusion": ("transchex",),
}

__all__ = ["PEER_PARTS", "transchex"]
