"""The six findings: how each one's geometry is drawn and how it is rendered onto a chest.

Every finding has a :class:`LesionModel` with two functions:

* ``sample(rng, subtle, severity, anatomy, ctr) -> (side, grade, params)`` draws
  the finding's geometry in patient coordinates (recorded in the ground truth);
* ``render(chest, finding, rng) -> Layer`` returns the attenuation it adds, how
  much it hides the lung markings, and its soft region in pixel space.

The region thresholded at 0.5 is the finding's ground-truth extent: the box is
its bounding box and the mask its pixels. ``severity`` drives size, and
``conspicuity`` drives contrast; subtle findings have both low.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medmodal.data.synthetic.anatomy import (
    ABDOMEN,
    LUNG_AIR,
    Chest,
    dome_v,
    heart_shape,
    hilum,
    lateral,
    lung_contains,
    sigmoid,
    smooth_noise,
    soft_inside,
)
from medmodal.data.synthetic.latent import MM_PER_UNIT, SIDE_SIGN, Anatomy, Finding

# Severity and conspicuity are drawn uniformly in these ranges (subtle -> first, obvious -> second).
SEVERITY_RANGE = {True: (0.0, 0.3), False: (0.35, 1.0)}
CONSPICUITY_RANGE = {True: (0.2, 0.5), False: (0.65, 1.0)}


@dataclass(frozen=True)
class Layer:
    """What one finding does to the image, on the pixel grid ([H, W] arrays)."""

    delta: np.ndarray  # attenuation added
    suppress: np.ndarray  # 0-1: share of the lung markings it hides
    region: np.ndarray  # 0-1 soft region of the finding
    extent: np.ndarray  # bool ground-truth pixels: region > 0.5 (never empty)
    # bool pixels of each separately annotated part (one box each): the two sides of a bilateral
    # effusion, else the whole extent. Never empty; their union is ``extent``.
    parts: tuple[np.ndarray, ...]


def make_layer(region: np.ndarray, delta, suppress, part_regions: tuple[np.ndarray, ...] = ()) -> Layer:
    """A :class:`Layer` whose extent is ``region > 0.5``, or its strongest pixel if that is empty.

    ``part_regions``: soft regions of the finding's separately boxed parts (their maximum is
    ``region``); each part is its region > 0.5, parts without such pixels are dropped, and with
    none left the extent is the one part.
    """
    extent = region > 0.5
    if not extent.any():
        extent = np.zeros(region.shape, dtype=bool)
        extent[np.unravel_index(int(np.argmax(region)), region.shape)] = True
    parts = tuple(part for part in (r > 0.5 for r in part_regions) if part.any()) or (extent,)
    zeros = np.zeros_like(region)
    return Layer(delta=zeros + delta, suppress=zeros + suppress, region=region, extent=extent, parts=parts)


def by_severity(finding_or_subtle, severity: float, subtle_range, obvious_range) -> float:
    """Map a severity linearly from its class range onto a target range (subtle or obvious)."""
    subtle = finding_or_subtle.subtle if isinstance(finding_or_subtle, Finding) else bool(finding_or_subtle)
    low, high = SEVERITY_RANGE[subtle]
    target = subtle_range if subtle else obvious_range
    t = float(np.clip((severity - low) / (high - low), 0.0, 1.0))
    return target[0] + t * (target[1] - target[0])


def graded(value: float, cut_points: tuple[float, ...], words: tuple[str, ...]) -> str:
    """The word for ``value``: ``words[i]`` for the first cut point it is below, else the last word."""
    for cut, word in zip(cut_points, words):
        if value < cut:
            return word
    return words[-1]


def random_side(rng: np.random.Generator, p_right: float = 0.5) -> str:
    return "right" if rng.random() < p_right else "left"


# ---------------------------------------------------------------------- cardiomegaly
def sample_cardiomegaly(rng, subtle, severity, anatomy, ctr):
    """Cardiothoracic ratio 0.52-0.56 (subtle) or 0.60-0.72 (obvious)."""
    value = by_severity(subtle, severity, (0.52, 0.56), (0.60, 0.72))
    grade = "mild" if subtle else graded(value, (0.66,), ("moderate", "marked"))
    return None, grade, {"ctr": round(value, 4)}


def render_cardiomegaly(chest: Chest, finding: Finding, rng) -> Layer:
    """The enlarged heart is drawn by the anatomy itself (its ratio); the region is the heart."""
    return make_layer(chest.heart, 0.0, 0.0)


# -------------------------------------------------------------------------- effusion
def sample_effusion(rng, subtle, severity, anatomy, ctr):
    """Fluid height as a share of the lung height, per side (bilateral: the second side 50-100%)."""
    height = by_severity(subtle, severity, (0.05, 0.09), (0.12, 0.45))
    draw = rng.random()
    side = "right" if draw < 0.38 else "left" if draw < 0.7 else "bilateral"
    heights = {"right": 0.0, "left": 0.0}
    if side == "bilateral":
        larger = random_side(rng)
        heights[larger] = height
        heights["left" if larger == "right" else "right"] = height * rng.uniform(0.5, 1.0)
    else:
        heights[side] = height
    grade = "small" if subtle else graded(height, (0.18, 0.3), ("small", "moderate", "large"))
    return side, grade, {"height_right": round(heights["right"], 4), "height_left": round(heights["left"], 4)}


def render_effusion(chest: Chest, finding: Finding, rng) -> Layer:
    """Dependent fluid with a meniscus (higher laterally), filling the costophrenic angle.

    The fluid replaces aerated lung with near-abdominal density, so the angle is
    blunted and the hemidiaphragm contour is lost under it. Each side's fluid is a part with
    its own box: radiologists box a bilateral effusion once per hemithorax (in VinDr-CXR's
    training labels, 97 % of the images where one reader drew two effusion boxes have them on
    opposite sides), not with one box across the mediastinum.
    """
    anatomy, grid = chest.anatomy, chest.grid
    width, lung_height = anatomy.thorax_half_width, anatomy.lung_height()
    region = np.zeros_like(grid.u)
    sides = []
    for side in ("right", "left"):
        height = float(finding.params[f"height_{side}"])
        if height <= 0:
            continue
        m = lateral(grid.u, side)
        level = dome_v(anatomy, side, 0.9 * width) - height * lung_height
        meniscus = (0.04 + 0.3 * height * lung_height) * (1.0 - np.clip(m / width, 0.0, 1.0) ** 2)
        fluid = sigmoid((grid.v - level - meniscus) / (0.015 + 2 * grid.edge))
        sides.append(fluid * chest.lung[side])
        region = np.maximum(region, sides[-1])
    density = 0.35 + 0.65 * finding.conspicuity
    return make_layer(region, density * (ABDOMEN - LUNG_AIR) * region, density * region, tuple(sides))


# ---------------------------------------------------------------------------- nodule
def sample_nodule(rng, subtle, severity, anatomy, ctr):
    """A round opacity at a random point of one lung, away from its borders and the hilum."""
    radius = by_severity(subtle, severity, (0.018, 0.028), (0.032, 0.065))
    side = random_side(rng, 0.55)
    m, v = _point_in_lung(rng, anatomy, ctr, side, margin=radius + 0.03, avoid_hilum=0.12)
    grade = f"{max(4, round(2 * radius * MM_PER_UNIT))} mm"
    return side, grade, {"u": round(SIDE_SIGN[side] * m, 4), "v": round(v, 4), "radius": round(radius, 4)}


def render_nodule(chest: Chest, finding: Finding, rng) -> Layer:
    """A soft-edged disc, densest at its centre."""
    grid, radius = chest.grid, float(finding.params["radius"])
    distance = np.hypot(grid.u - float(finding.params["u"]), grid.v - float(finding.params["v"]))
    disc = soft_inside(distance - radius, grid.edge)
    dome = np.sqrt(np.clip(1.0 - (distance / radius) ** 2, 0.0, 1.0))
    density = 0.04 + 0.16 * finding.conspicuity
    return make_layer(disc, density * disc * (0.6 + 0.4 * dome), 0.5 * disc)


# ---------------------------------------------------------------------- pneumothorax
def sample_pneumothorax(rng, subtle, severity, anatomy, ctr):
    """Depth of the pleural air (patient units) and how far down the lateral wall it reaches."""
    depth = by_severity(subtle, severity, (0.035, 0.06), (0.08, 0.28))
    reach = by_severity(subtle, severity, (0.25, 0.35), (0.4, 0.9))  # share of the lung height
    grade = "small" if subtle else graded(depth, (0.12, 0.2), ("small", "moderate", "large"))
    params = {"depth": round(depth, 4), "reach": round(reach, 4), "apical": int(reach < 0.45)}
    return random_side(rng), grade, params


def render_pneumothorax(chest: Chest, finding: Finding, rng) -> Layer:
    """Air without lung markings between the chest wall and a thin visceral pleural line (apex and lateral)."""
    anatomy, grid, side = chest.anatomy, chest.grid, finding.side
    assert side is not None  # sample_pneumothorax always draws a side
    depth, reach = float(finding.params["depth"]), float(finding.params["reach"])
    cutoff = anatomy.apex_v + reach * anatomy.lung_height()
    zone = np.clip((cutoff - grid.v) / 0.15, 0.0, 1.0)
    retracted = chest.lung_level[side] + depth * zone  # > 0: outside the collapsed lung
    lung = chest.lung[side]
    air = lung * sigmoid(retracted / grid.edge) * (zone > 0)
    line = np.exp(-((retracted / (1.2 * grid.edge)) ** 2)) * (zone > 0.05) * (lung > 0.5)
    darker = 0.04 + 0.06 * finding.conspicuity
    line_strength = 0.04 + 0.10 * finding.conspicuity
    return make_layer(air, -darker * air + line_strength * line, air)


# --------------------------------------------------------------------- consolidation
LOBES = {  # lobe: (side, lateral position / thorax width, height / lung height from the apex, weight)
    "right upper lobe": ("right", 0.5, 0.25, 0.15),
    "right middle lobe": ("right", None, 0.72, 0.12),  # against the right heart border
    "right lower lobe": ("right", 0.65, 0.82, 0.28),
    "left upper lobe": ("left", 0.5, 0.25, 0.13),
    "lingula": ("left", None, 0.68, 0.10),  # against the left heart border
    "left lower lobe": ("left", 0.68, 0.84, 0.22),
}


def sample_consolidation(rng, subtle, severity, anatomy, ctr):
    """A patch in one lobe: lobe, centre and radius."""
    names = list(LOBES)
    weights = np.array([LOBES[n][3] for n in names])
    lobe = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    side, across, down, _ = LOBES[lobe]
    radius = by_severity(subtle, severity, (0.07, 0.1), (0.11, 0.2))
    if across is None:  # middle lobe / lingula: just lateral to the heart border
        cu, _, _, _ = heart_shape(anatomy, ctr)
        border = ctr * anatomy.thorax_half_width
        m0 = SIDE_SIGN[side] * cu + border + 0.06
    else:
        m0 = across * anatomy.thorax_half_width
    v0 = anatomy.apex_v + down * anatomy.lung_height()
    m, v = _point_in_lung(rng, anatomy, ctr, side, margin=0.02, near=(m0, v0, 0.05))
    grade = "patchy" if subtle or severity < 0.65 else "dense"
    params = {"lobe": lobe, "u": round(SIDE_SIGN[side] * m, 4), "v": round(v, 4), "radius": round(radius, 4)}
    return side, grade, params


def render_consolidation(chest: Chest, finding: Finding, rng) -> Layer:
    """A patchy dense opacity confined to the lung, with dark air bronchograms when obvious."""
    grid, radius, side = chest.grid, float(finding.params["radius"]), finding.side
    assert side is not None  # sample_consolidation always draws a side (its lobe's)
    du, dv = grid.u - float(finding.params["u"]), grid.v - float(finding.params["v"])
    scale = grid.size / 128.0
    blob = 1.0 - (du**2 + dv**2) / radius**2 + 0.45 * smooth_noise(rng, grid.u.shape, 3.0 * scale)
    patch = sigmoid(blob / 0.15) * chest.lung[side]
    density = 0.06 + 0.22 * finding.conspicuity
    delta = density * patch
    if not finding.subtle:
        m_h, v_h = hilum(chest.anatomy)
        angle = np.arctan2(grid.v - v_h, lateral(grid.u, side) - m_h)
        tubes = (0.5 + 0.5 * np.cos(16.0 * angle + rng.uniform(0, 2 * np.pi))) ** 30
        delta = delta - 0.6 * density * tubes * sigmoid((blob - 0.5) / 0.1) * patch
    return make_layer(patch, delta, 0.8 * patch)


# ------------------------------------------------------------------------------ edema
def sample_edema(rng, subtle, severity, anatomy, ctr):
    """Bilateral perihilar haze: its spread, and interstitial (Kerley B) lines when marked."""
    spread = by_severity(subtle, severity, (0.18, 0.22), (0.22, 0.34))
    grade = "mild" if subtle else graded(severity, (0.7,), ("moderate", "severe"))
    return (
        "bilateral",
        grade,
        {"spread": round(spread, 4), "interstitial_lines": int(not subtle and severity > 0.5)},
    )


def render_edema(chest: Chest, finding: Finding, rng) -> Layer:
    """Batwing haze around both hila, blurring the vessels, ± short horizontal lines at the lateral bases."""
    anatomy, grid = chest.anatomy, chest.grid
    m_h, v_h = hilum(anatomy)
    spread = float(finding.params["spread"])
    density = 0.05 + 0.17 * finding.conspicuity
    region = np.zeros_like(grid.u)
    delta = np.zeros_like(grid.u)
    for side in ("right", "left"):
        m = lateral(grid.u, side)
        haze = np.exp(-(((m - m_h) / (1.3 * spread)) ** 2) - (((grid.v - v_h) / (1.6 * spread)) ** 2))
        region = np.maximum(region, haze * (chest.lung[side] > 0.5))
        delta += density * haze * chest.lung[side]
        if int(finding.params["interstitial_lines"]):
            lines = (0.5 + 0.5 * np.cos(2 * np.pi * grid.v / 0.045)) ** 12
            base = soft_inside(anatomy.thorax_half_width - 0.12 - m, grid.edge) * soft_inside(
                v_h + 0.2 - grid.v, grid.edge
            )
            delta += 0.05 * finding.conspicuity * lines * base * chest.lung[side]
    return make_layer(region, delta, 0.5 * finding.conspicuity * region)


# ------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class LesionModel:
    """How one finding is drawn (geometry) and rendered."""

    sample: Callable[..., tuple[str | None, str, dict]]
    render: Callable[[Chest, Finding, np.random.Generator], Layer]


LESIONS: dict[str, LesionModel] = {
    "cardiomegaly": LesionModel(sample_cardiomegaly, render_cardiomegaly),
    "effusion": LesionModel(sample_effusion, render_effusion),
    "nodule": LesionModel(sample_nodule, render_nodule),
    "pneumothorax": LesionModel(sample_pneumothorax, render_pneumothorax),
    "consolidation": LesionModel(sample_consolidation, render_consolidation),
    "edema": LesionModel(sample_edema, render_edema),
}


def sample_finding(
    label: str,
    rng: np.random.Generator,
    subtle: bool,
    anatomy: Anatomy,
    ctr: float,
    severity_scale: float = 1.0,
    conspicuity_scale: float = 1.0,
) -> Finding:
    """Draw severity, conspicuity and geometry of one present finding.

    ``severity_scale`` / ``conspicuity_scale`` (<= 1) multiply the drawn severity and
    conspicuity: smaller and fainter lesions (the ``hard`` preset); 1 keeps the demo data.
    """
    severity = float(rng.uniform(*SEVERITY_RANGE[subtle])) * severity_scale
    conspicuity = float(rng.uniform(*CONSPICUITY_RANGE[subtle])) * conspicuity_scale
    side, grade, params = LESIONS[label].sample(rng, subtle, severity, anatomy, ctr)
    return Finding(label, subtle, round(severity, 4), round(conspicuity, 4), side, grade, params)


def _point_in_lung(rng, anatomy, ctr, side, margin, avoid_hilum=0.0, near=None, tries=200):
    """A random ``(m, v)`` inside one lung (uniform, or Gaussian around ``near=(m, v, sd)``)."""
    width = anatomy.thorax_half_width
    m_h, v_h = hilum(anatomy)
    for _ in range(tries):
        if near is None:
            m = rng.uniform(0.1, width)
            v = rng.uniform(anatomy.apex_v, max(anatomy.dome_v_right, anatomy.dome_v_left))
        else:
            m, v = near[0] + rng.normal(0, near[2]), near[1] + rng.normal(0, near[2])
        if np.hypot(m - m_h, v - v_h) < avoid_hilum:
            continue
        if lung_contains(anatomy, ctr, side, m, v, margin):
            return float(m), float(v)
    if near is not None:
        return float(near[0]), float(near[1])
    return 0.55 * width, anatomy.apex_v + 0.4 * anatomy.lung_height()
