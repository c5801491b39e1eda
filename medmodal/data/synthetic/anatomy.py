"""The normal chest, rendered as an attenuation map on a pixel grid (vectorised numpy).

Shapes are level functions of patient coordinates (negative inside, roughly a
distance in patient units) turned into soft masks with a one-pixel edge, so
the same geometry serves rendering, lesion placement and ground-truth masks.
Attenuation is unitless (0 = air outside the body, ~0.2 aerated lung, ~0.55
soft tissue, ~0.7 heart and mediastinum, bone adds ~0.1-0.2); the site's
transfer curve turns it into pixel intensity (:mod:`.render`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medmodal.data.synthetic.latent import SIDE_SIGN, Acquisition, Anatomy

EDGE_PX = 0.7  # width of soft shape edges, in pixels
LUNG_AIR = 0.18
ABDOMEN = 0.64
MEDIASTINUM = 0.70
HEART_TILT_RAD = np.deg2rad(30.0)  # long axis of the heart, towards the apex (down, patient's left)


# ------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Grid:
    """Patient coordinates ``(u, v)`` of every pixel centre, [H, W] each, after positioning."""

    u: np.ndarray
    v: np.ndarray
    size: int
    pixel: float  # one pixel in patient units

    @property
    def edge(self) -> float:
        """Soft-edge width in patient units."""
        return EDGE_PX * self.pixel


def patient_grid(size: int, acquisition: Acquisition) -> Grid:
    """Map pixel centres to patient coordinates through the study's rotation, shift and scale."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x = x - acquisition.shift_u
    y = y - acquisition.shift_v
    angle = np.deg2rad(acquisition.rotation_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((cos * x + sin * y) / acquisition.scale).astype(np.float32)
    v = ((-sin * x + cos * y) / acquisition.scale).astype(np.float32)
    return Grid(u=u, v=v, size=size, pixel=2.0 / (size * acquisition.scale))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (overflow-safe)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def soft_inside(level: np.ndarray, edge: float) -> np.ndarray:
    """Soft mask of ``level < 0``: a linear ramp of width ``edge`` (anti-aliased edge)."""
    return np.clip(0.5 - level / edge, 0.0, 1.0)


def superellipse_level(x, y, cx, cy, a, b, power=2.0, tilt=0.0):
    """Signed radial distance to a (rotated) superellipse boundary: < 0 inside.

    The distance is measured along the ray from the centre, which is close to
    the true distance for the convex shapes used here.
    """
    dx, dy = x - cx, y - cy
    if tilt:
        dx, dy = np.cos(tilt) * dx + np.sin(tilt) * dy, -np.sin(tilt) * dx + np.cos(tilt) * dy
    rho = _power_norm(dx / a, dy / b, power)
    radius = np.sqrt(dx * dx + dy * dy)
    return radius * (1.0 - 1.0 / np.maximum(rho, 1e-9))


def _power_norm(x, y, power: float):
    """``(|x|^p + |y|^p)^(1/p)``, with fast paths for p = 2, 3, 4."""
    if power == 2.0:
        return np.sqrt(x * x + y * y)
    if power == 3.0:
        return np.cbrt(np.abs(x) ** 3 + np.abs(y) ** 3)
    if power == 4.0:
        return np.sqrt(np.sqrt((x * x) ** 2 + (y * y) ** 2))
    return (np.abs(x) ** power + np.abs(y) ** power) ** (1.0 / power)


def curved_band(along, across, coeffs, half_thickness, start, stop, edge):
    """Soft band around the curve ``across = polyval(coeffs, along)`` for ``start <= along <= stop``."""
    distance = np.abs(across - np.polyval(coeffs, along))
    band = soft_inside(distance - half_thickness, edge)
    return band * soft_inside(start - along, edge) * soft_inside(along - stop, edge)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation (float32 [H, W])."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_px, mode="wrap", truncate=3.0)
    return field / max(float(field.std()), 1e-6)


def lateral(u: np.ndarray, side: str) -> np.ndarray:
    """Lateral coordinate ``m`` of one hemithorax (0 at the midline, > 0 towards its chest wall)."""
    return SIDE_SIGN[side] * u


def dome_v(anatomy: Anatomy, side: str, m):
    """Height of one hemidiaphragm at lateral position ``m``: highest near mid-hemithorax."""
    top = anatomy.dome_v_right if side == "right" else anatomy.dome_v_left
    width = anatomy.thorax_half_width
    return top + 0.22 * ((m - 0.45 * width) / (0.55 * width)) ** 2


def lung_outline_level(anatomy: Anatomy, m, v):
    """Level function of the rib-cage outline of one lung; the dome and the mediastinum cut it below/medially.

    An ellipse whose widest point (the full thoracic half width) is at the height
    of the lateral costophrenic angles, so the lateral wall curves in towards
    the apex and meets the sloping dome at an acute angle.
    """
    width = anatomy.thorax_half_width
    widest = max(anatomy.dome_v_right, anatomy.dome_v_left) + 0.2
    return superellipse_level(m, v, 0.5 * width, widest, 0.5 * width, widest - anatomy.apex_v, 2.0)


def heart_shape(anatomy: Anatomy, ctr: float) -> tuple[float, float, float, float]:
    """Centre ``(u, v)`` and half axes ``(a, b)`` of the tilted heart ellipse for a cardiothoracic ratio.

    The horizontal half-extent of the ellipse is ``ctr * thorax_half_width``, so
    the rendered heart width over the thoracic width is exactly ``ctr``; a larger
    heart grows more towards the patient's left.
    """
    half_extent = ctr * anatomy.thorax_half_width
    b = anatomy.heart_half_height
    sin, cos = np.sin(HEART_TILT_RAD), np.cos(HEART_TILT_RAD)
    a = float(np.sqrt(max(half_extent**2 - (b * sin) ** 2, 1e-4)) / cos)
    centre_u = 0.3 * half_extent
    return centre_u, anatomy.heart_center_v, a, b


def heart_level(anatomy: Anatomy, ctr: float, u, v):
    """Level function of the heart (negative inside)."""
    cu, cv, a, b = heart_shape(anatomy, ctr)
    return superellipse_level(u, v, cu, cv, a, b, 2.0, HEART_TILT_RAD)


def mediastinum_half_width(anatomy: Anatomy, side: str, v):
    """Distance from the midline to the mediastinal border on one side (aortic knob on the left)."""
    if side == "left":
        return 0.11 + 0.07 * np.exp(-(((v + 0.3) / 0.08) ** 2))
    return 0.1


def lung_contains(anatomy: Anatomy, ctr: float, side: str, m: float, v: float, margin: float) -> bool:
    """True when ``(m, v)`` lies in the lung at least ``margin`` inside all its borders (scalar)."""
    u = SIDE_SIGN[side] * m
    return bool(
        lung_outline_level(anatomy, m, v) < -margin
        and v < dome_v(anatomy, side, m) - margin
        and m > mediastinum_half_width(anatomy, side, v) + margin
        and heart_level(anatomy, ctr, u, v) > margin
    )


def hilum(anatomy: Anatomy) -> tuple[float, float]:
    """Lateral position and height ``(m, v)`` of the hila (same for both lungs)."""
    return 0.2 + 0.1 * anatomy.thorax_half_width, anatomy.apex_v + 0.55 * anatomy.lung_height()


# ------------------------------------------------------------------------- the chest
@dataclass
class Chest:
    """A rendered normal chest: attenuation without lung markings, the markings, and the masks.

    All arrays are [H, W]. ``lung``/``lung_level`` are keyed by side.
    """

    grid: Grid
    anatomy: Anatomy
    ctr: float
    base: np.ndarray
    markings: np.ndarray
    lung: dict[str, np.ndarray]
    lung_level: dict[str, np.ndarray]
    heart: np.ndarray
    body: np.ndarray


def build_chest(grid: Grid, anatomy: Anatomy, ctr: float, rng: np.random.Generator) -> Chest:
    """Render the normal anatomy of one study at a given cardiothoracic ratio."""
    u, v, edge = grid.u, grid.v, grid.edge
    body = soft_inside(superellipse_level(u, v, 0.0, 0.15, anatomy.body_half_width, 1.3, 4.0), edge)
    heart = soft_inside(heart_level(anatomy, ctr, u, v), edge)
    mediastinum = np.maximum(_mediastinum(anatomy, u, v, edge), heart)
    below_diaphragm = np.zeros_like(u)
    lung, lung_level = {}, {}
    for side in ("right", "left"):
        m = lateral(u, side)
        in_side = soft_inside(-m, edge)
        lung_level[side] = lung_outline_level(anatomy, m, v)
        diaphragm = soft_inside(dome_v(anatomy, side, m) - v, edge)
        below_diaphragm = np.maximum(below_diaphragm, diaphragm * in_side)
        medial = soft_inside(mediastinum_half_width(anatomy, side, v) - m, edge)
        lung[side] = soft_inside(lung_level[side], edge) * (1 - diaphragm) * medial * (1 - heart) * in_side

    attenuation = anatomy.soft_tissue * body
    abdomen = below_diaphragm * soft_inside(np.abs(u) - anatomy.thorax_half_width - 0.05, 4 * edge) * body
    attenuation += (ABDOMEN - attenuation) * abdomen
    attenuation += (MEDIASTINUM - attenuation) * mediastinum * body
    lungs = lung["right"] + lung["left"]
    attenuation += (LUNG_AIR - attenuation) * lungs
    attenuation += _bones(grid, anatomy) * body
    attenuation += _air_structures(anatomy, u, v, edge, mediastinum, below_diaphragm)
    markings = _vascular_markings(grid, anatomy, lung, rng)
    return Chest(grid, anatomy, ctr, attenuation, markings, lung, lung_level, heart, body)


def _mediastinum(anatomy: Anatomy, u, v, edge):
    """Upper mediastinum and the column behind the heart, with the aortic knob on the left."""
    half = np.where(
        u < 0, mediastinum_half_width(anatomy, "right", v), mediastinum_half_width(anatomy, "left", v)
    )
    return soft_inside(np.abs(u) - half, edge)


def _bones(grid: Grid, anatomy: Anatomy) -> np.ndarray:
    """Spine, posterior and anterior ribs, clavicles (additive attenuation)."""
    u, v, edge = grid.u, grid.v, grid.edge
    width = anatomy.thorax_half_width
    spine = soft_inside(np.abs(u) - 0.065, edge) * (
        0.045 + 0.02 * np.cos(2 * np.pi * (v - anatomy.rib_phase) / 0.12)
    )
    bones = spine
    lowest = max(anatomy.dome_v_right, anatomy.dome_v_left) + 0.05
    for side in ("right", "left"):
        m = lateral(u, side)
        chest_wall = soft_inside(m - width - 0.06, 2 * edge) * soft_inside(0.07 - m, 2 * edge)
        bones = bones + chest_wall * (
            0.05
            * _rib_pattern(
                m, v, (0.7, -0.12, 0.0), 0.12, 0.02, anatomy.rib_phase, anatomy.apex_v - 0.25, lowest, edge
            )
            + 0.025
            * _rib_pattern(m, v, (-0.45, 0.1, 0.0), 0.17, 0.022, anatomy.rib_phase, anatomy.apex_v, 0.3, edge)
        )
        clavicle = curved_band(m, v, (0.15, -0.3, anatomy.apex_v + 0.1), 0.026, 0.06, width, edge)
        bones = bones + 0.1 * clavicle
    return bones


def _rib_pattern(m, v, shape_coeffs, spacing, half_thickness, phase, top, bottom, edge):
    """A family of equally spaced curved ribs ``v = k * spacing + phase + polyval(shape, m)`` with bright cortices."""
    offset = v - np.polyval(shape_coeffs, m) - phase
    distance = np.abs(offset - spacing * np.round(offset / spacing))
    band = soft_inside(distance - half_thickness, edge)
    cortex = np.exp(-(((distance - half_thickness) / (1.5 * edge)) ** 2))
    extent = soft_inside(top - offset, 3 * edge) * soft_inside(offset - bottom, 3 * edge)
    return (band + 0.6 * cortex) * extent


def _air_structures(anatomy: Anatomy, u, v, edge, mediastinum, below_diaphragm):
    """Negative attenuation of the tracheal air column and the gastric bubble."""
    trachea = soft_inside(np.abs(u) - 0.03, edge) * soft_inside(v + 0.32, 3 * edge) * mediastinum
    bubble_v = anatomy.dome_v_left + 0.1
    bubble = soft_inside(superellipse_level(u, v, 0.32, bubble_v, 0.09, 0.055), edge) * below_diaphragm
    return -0.2 * trachea - 0.25 * bubble


def _vascular_markings(grid: Grid, anatomy: Anatomy, lung: dict[str, np.ndarray], rng: np.random.Generator):
    """Branching vessels radiating from each hilum, tapering and fading towards the periphery."""
    m_h, v_h = hilum(anatomy)
    scale = grid.size / 128.0
    warp = 0.22 * smooth_noise(rng, grid.u.shape, 5.0 * scale)
    texture = smooth_noise(rng, grid.u.shape, 1.0 * scale) - smooth_noise(rng, grid.u.shape, 3.0 * scale)
    markings = np.zeros_like(grid.u)
    for side in ("right", "left"):
        dm, dv = lateral(grid.u, side) - m_h, grid.v - v_h
        radius = np.sqrt(dm * dm + dv * dv)
        angle = np.arctan2(dv, dm) + warp
        taper = 4.0 + 40.0 * radius
        trunk = (0.5 + 0.5 * np.cos(9.0 * angle + rng.uniform(0, 2 * np.pi))) ** taper
        branch = (0.5 + 0.5 * np.cos(19.0 * angle + rng.uniform(0, 2 * np.pi))) ** (taper + 2.0)
        peripheral = np.clip((radius - 0.15) / 0.1, 0.0, 1.0)
        vessels = np.exp(-radius / 0.3) * (trunk + 0.6 * branch * peripheral + 0.15 * texture)
        markings += (vessels + 0.8 * np.exp(-((radius / 0.07) ** 2))) * lung[side]
    return anatomy.marking_density * markings
