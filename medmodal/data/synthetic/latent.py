"""Latent variables of one synthetic study: everything the image and the text are rendered from.

Geometry is in *patient coordinates* ``(u, v)``: ``u`` runs from the viewer's
left (-1) to the viewer's right (+1) of a standard frontal radiograph, ``v``
from the top (-1) to the bottom (+1); one unit is half the image width before
the site's positioning (rotation, shift, scale) is applied. Radiological
convention: the patient's **right** side is on the viewer's **left** (``u < 0``).
Per-lung quantities use the lateral coordinate ``m = side_sign * u`` (0 at the
midline, growing towards the chest wall), with ``side_sign`` -1 for the right
lung and +1 for the left lung.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

SIDE_SIGN = {"right": -1.0, "left": 1.0}
MM_PER_UNIT = 210.0  # physical size of one patient-coordinate unit (adult chest, 128 px ~ 1.6 mm/px)


@dataclass(frozen=True)
class Anatomy:
    """A patient's body geometry; persistent across that patient's studies (small per-study jitter)."""

    thorax_half_width: float  # inner rib-cage half width at its widest (u units)
    body_half_width: float  # skin outline half width
    apex_v: float  # top of the lung apices
    dome_v_right: float  # highest point of the right hemidiaphragm
    dome_v_left: float  # highest point of the left hemidiaphragm (normally lower)
    ctr: float  # cardiothoracic ratio when no cardiomegaly is present (<= 0.5)
    heart_center_v: float
    heart_half_height: float
    soft_tissue: float  # attenuation of the soft tissue (body habitus)
    rib_phase: float  # vertical offset of the rib cage pattern
    marking_density: float  # prominence of the lung vascular markings

    def lung_height(self) -> float:
        """Apex-to-dome height of the lungs (u units)."""
        return 0.5 * (self.dome_v_right + self.dome_v_left) - self.apex_v


@dataclass(frozen=True)
class Acquisition:
    """How this study was acquired at its site: positioning and the detector/processing look."""

    rotation_deg: float
    shift_u: float
    shift_v: float
    scale: float
    gamma: float
    contrast: float
    brightness: float
    noise_std: float  # intensity units, per pixel at 128 px
    blur_px: float  # Gaussian sigma in pixels at 128 px (scaled with the image size)
    marker: str | None  # burnt-in side marker letter ("R" / "L") or None
    view: str  # "PA" or "AP"


@dataclass(frozen=True)
class Finding:
    """One present finding and the latent variables it is rendered and reported from.

    ``severity`` (0-1) drives size/extent; ``conspicuity`` (0-1) drives contrast.
    ``subtle`` findings are small and faint. ``params`` holds the label-specific
    geometry (e.g. nodule centre and radius, consolidation lobe, effusion height).
    """

    label: str
    subtle: bool
    severity: float
    conspicuity: float
    side: str | None = None  # "right", "left", "bilateral" or None
    grade: str = ""  # report word: trace/small/moderate/large, mild/moderate/severe/marked
    params: Mapping[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyLatent:
    """Everything one study is generated from; rendering and report writing are pure functions of it."""

    id: str
    patient_id: str
    visit: int  # 0 = the patient's first study in the data set
    site: str
    age: int
    sex: str  # "male" / "female"
    heart_failure: bool
    anatomy: Anatomy
    acquisition: Acquisition
    findings: tuple[Finding, ...]
    history: tuple[str, ...]  # keys of the indication items (see .history.HISTORY_ITEMS)
    central_line: str | None  # side of a central venous catheter, or None
    render_seed: int
    text_seed: int
    split: str = ""
    image_format: str = "png"  # "png", "dicom-monochrome2" or "dicom-monochrome1"

    @property
    def labels(self) -> tuple[str, ...]:
        """The present finding names (order of the findings tuple)."""
        return tuple(f.label for f in self.findings)

    def finding(self, label: str) -> Finding | None:
        """The present finding called ``label``, or None."""
        return next((f for f in self.findings if f.label == label), None)

    def without(self, *labels: str) -> StudyLatent:
        """The same study with the named findings removed (everything else identical)."""
        return replace(self, findings=tuple(f for f in self.findings if f.label not in labels))

    def to_json(self) -> dict:
        """A JSON-serialisable dict of all latent variables."""
        return asdict(self)
