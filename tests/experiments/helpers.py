"""The miniature benchmark grid the experiment tests run."""

from __future__ import annotations

from typing import Any


def mini_grid(name: str, **sections: Any) -> dict[str, Any]:
    """A grid of two tiny models (image only, gated fusion), one epoch at 32 px, seed 0; ``sections``
    (evaluation, leave_one_site_out, executor, ...) are added as given."""
    return {
        "name": name,
        "base": {
            "data.image_size": 32,
            "model.embed_dim": 8,
            "model.heads.generation": False,
            "train.epochs": 1,
            "train.batch_size": 32,
            "train.progress_bar": False,
            "data.check_images": False,
        },
        "seeds": [0],
        "models": {"image_only": {"model.modalities": "image"}, "gated": {"model.fusion.name": "gated"}},
        **sections,
    }
