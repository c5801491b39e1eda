"""Render one study: anatomy + findings + devices -> the site's image look -> 8-bit pixels, mask, boxes.

:func:`render_study` is a pure function of a :class:`~.latent.StudyLatent`:
every random component (lung texture, each finding's texture, detector noise)
draws from its own generator seeded by the study's ``render_seed`` and the
component's name, so removing a finding (``study.without("nodule")``) changes
the pixels only where that finding was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medmodal.data.synthetic.anatomy import Grid, build_chest, curved_band, patient_grid
from medmodal.data.synthetic.latent import Acquisition, StudyLatent
from medmodal.data.synthetic.lesions import LESIONS, Layer
from medmodal.data.synthetic.vocabulary import LABELS

# Findings painted later win where regions overlap in the label map (focal over diffuse).
PAINT_ORDER = ("cardiomegaly", "edema", "effusion", "consolidation", "pneumothorax", "nodule")
COMPONENTS = ("anatomy", "acquisition", *LABELS)

# Central venous catheter paths, u as a polynomial of v (neck to the superior vena cava).
CATHETER_PATHS = {
    "right": np.polyfit([-1.0, -0.6, -0.2], [-0.24, -0.10, -0.05], 2),
    "left": np.polyfit([-1.0, -0.6, -0.2], [0.24, 0.12, -0.04], 2),
}
MARKER_GLYPHS = {
    "R": ("1110", "1001", "1110", "1010", "1001"),
    "L": ("1000", "1000", "1000", "1000", "1111"),
}


@dataclass(frozen=True)
class Rendering:
    """A rendered study: the stored image, its label map and the boxes of each present finding."""

    image: np.ndarray  # uint8 [H, W]
    label_map: np.ndarray  # uint8 [H, W]: k = 1-based index in LABELS, 0 = background
    # label -> one (x0, y0, x1, y1) per part (x1 / y1 exclusive): two for a bilateral effusion
    boxes: dict[str, list[tuple[int, int, int, int]]]
    layers: dict[str, Layer]


def component_rng(render_seed: int, component: str) -> np.random.Generator:
    """The generator of one named random component of a study's image."""
    return np.random.default_rng([render_seed, COMPONENTS.index(component)])


def render_study(study: StudyLatent, image_size: int = 128) -> Rendering:
    """Render a study's image (uint8), label map and boxes at ``image_size`` x ``image_size`` pixels."""
    grid = patient_grid(image_size, study.acquisition)
    cardiomegaly = study.finding("cardiomegaly")
    ctr = float(cardiomegaly.params["ctr"]) if cardiomegaly else study.anatomy.ctr
    chest = build_chest(grid, study.anatomy, ctr, component_rng(study.render_seed, "anatomy"))
    layers = {
        f.label: LESIONS[f.label].render(chest, f, component_rng(study.render_seed, f.label))
        for f in study.findings
    }
    visible_markings = np.ones_like(grid.u)
    attenuation = chest.base.copy()
    for layer in layers.values():
        visible_markings *= 1.0 - np.clip(layer.suppress, 0.0, 1.0)
        attenuation += layer.delta
    attenuation += chest.markings * visible_markings
    if study.central_line:
        attenuation += _catheter(grid, study.central_line)
    intensity = acquire(attenuation, study.acquisition, grid, component_rng(study.render_seed, "acquisition"))
    image = np.round(np.clip(intensity, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Rendering(
        image=image, label_map=label_map(layers, grid.u.shape), boxes=boxes_of(layers), layers=layers
    )


def acquire(
    attenuation: np.ndarray, acquisition: Acquisition, grid: Grid, rng: np.random.Generator
) -> np.ndarray:
    """The site's look: transfer curve (contrast, gamma, brightness), blur, noise, burnt-in marker."""
    scale = grid.size / 128.0
    intensity = (
        acquisition.brightness + acquisition.contrast * np.clip(attenuation, 0.0, None) ** acquisition.gamma
    )
    intensity = gaussian_filter(intensity, acquisition.blur_px * scale)
    intensity = intensity + acquisition.noise_std * (0.6 + 0.8 * intensity) * rng.standard_normal(
        intensity.shape
    )
    if acquisition.marker:
        _burn_marker(intensity, acquisition.marker)
    return intensity


def label_map(layers: dict[str, Layer], shape: tuple[int, int]) -> np.ndarray:
    """uint8 map with value ``LABELS.index(label) + 1`` on each finding's extent (PAINT_ORDER on overlap)."""
    out = np.zeros(shape, dtype=np.uint8)
    for label in PAINT_ORDER:
        if label in layers:
            out[layers[label].extent] = LABELS.index(label) + 1
    return out


def boxes_of(layers: dict[str, Layer]) -> dict[str, list[tuple[int, int, int, int]]]:
    """The bounding box of each part of each finding's extent (one per side of a bilateral effusion)."""
    return {label: [bounding_box(part) for part in layer.parts] for label, layer in layers.items()}


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the True pixels of a non-empty mask; x1 and y1 are exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _catheter(grid: Grid, side: str) -> np.ndarray:
    """A thin radio-opaque line from the neck to the superior vena cava."""
    tube = curved_band(grid.v, grid.u, CATHETER_PATHS[side], 0.6 * grid.pixel, -1.2, -0.2, grid.edge)
    return 0.25 * tube


def _burn_marker(intensity: np.ndarray, letter: str) -> None:
    """Write the side marker (near-white block letter) in the top corner of that side, in place."""
    size = intensity.shape[0]
    cell = max(1, round(size / 64))
    glyph = np.kron(
        np.array([[c == "1" for c in row] for row in MARKER_GLYPHS[letter]]), np.ones((cell, cell), bool)
    )
    top = round(0.05 * size)
    left = top if letter == "R" else size - top - glyph.shape[1]  # patient's right is the viewer's left
    intensity[top : top + glyph.shape[0], left : left + glyph.shape[1]][glyph] = 0.96
