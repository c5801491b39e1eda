"""The manifest contract as code: column names, limits on hostile cells, view classes, ManifestError.

What the columns mean and what makes a row bad is described for users in the docstring of
:mod:`medmodal.data.manifest`; the readers (:mod:`~medmodal.data.manifest_tables`), the row
checks (:mod:`~medmodal.data.manifest_rows`) and the report (:mod:`~medmodal.data.manifest_report`)
share these definitions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medmodal.config import SECTION_FIELDS
from medmodal.data.types import RowProblem
from medmodal.errors import DataError

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl", "manifest.parquet")
CONTRACT_COLUMNS = (
    "id",
    "patient_id",
    "image",
    *SECTION_FIELDS,
    "report",
    "labels",
    "boxes",
    "split",
    "site",
    "view",
)
CONTRACT_SET = frozenset(CONTRACT_COLUMNS)
LABEL_SEPARATOR = ";"
MAX_LISTED_PROBLEMS = 50  # in a ManifestError message; all are in .problems
MAX_LOGGED_PROBLEMS = 5  # in the skip warning
BOX_TOLERANCE_PX = 1.0  # a box may overshoot the image border by this much (annotation-tool rounding)
VIEW_CLASSES = {
    "frontal": frozenset({"PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"}),
    "lateral": frozenset({"LATERAL", "LAT", "LL", "RL", "L"}),
}  # a view is in a class when its first word is listed
IMAGE_CHECK_THREADS = 8  # image checks are mostly file I/O
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_NAME_CHARS = 256  # id, patient_id, site, split, one label
MAX_TEXT_CHARS = 100_000  # one report-text cell; real reports are a few thousand characters
MAX_BOXES_PER_ROW = 1000
MAX_SHOWN_CHARS = 80  # of a cell value repeated in a problem message
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_NOT_SPACE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
TOO_DEEP = "JSON nested too deeply to read"
EOF_SENTINEL = "medmodal-end-of-file-sentinel-5b1e0c"


class ManifestError(DataError, ValueError):
    """A manifest that cannot be used; the message lists the bad rows (file, row, field)."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()):
        super().__init__(message)
        self.problems = list(problems)


def normalize_view(view: str) -> str:
    """``"ap_supine "`` -> ``"AP SUPINE"``: upper case, ``_`` / ``-`` as spaces, single spaces."""
    return " ".join(view.replace("_", " ").replace("-", " ").upper().split())


def view_matcher(views: Sequence[str]):
    """A predicate ``view -> bool`` for the requested views (names or ``frontal`` / ``lateral``)."""
    names = {normalize_view(v) for v in views if v.strip().lower() not in VIEW_CLASSES}
    first_words = set().union(
        *(VIEW_CLASSES[v.strip().lower()] for v in views if v.strip().lower() in VIEW_CLASSES)
    )

    def wanted(view: str | None) -> bool:
        if not view:
            return False
        return view in names or view.split()[0] in first_words

    return wanted
