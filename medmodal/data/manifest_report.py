"""Reporting a read manifest: the ManifestError message listing bad rows, and the log lines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmodal.data.manifest_contract import MAX_LISTED_PROBLEMS, MAX_LOGGED_PROBLEMS
from medmodal.data.splits import (
    patients_in_several_splits,
)
from medmodal.data.types import RowProblem

if TYPE_CHECKING:
    from medmodal.data.manifest import Manifest

logger = logging.getLogger("medmodal.data.manifest")  # one documented logger for manifest reading


def problem_report(file: Path, problems: list[RowProblem], what: str) -> str:
    rows = len({p.row for p in problems})
    lines = [f"{file}: {rows} {what}:"]
    lines += [f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(
            f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more problems (ManifestError.problems)"
        )
    return "\n".join(lines)


def log_outcome(manifest: Manifest, summary: dict[str, Any]) -> None:
    if manifest.problems:
        by_field = ", ".join(f"{k}: {v}" for k, v in sorted(summary["problems_by_field"].items()))
        first = "\n".join(f"  {p}" for p in manifest.problems[:MAX_LOGGED_PROBLEMS])
        more = len(manifest.problems) - MAX_LOGGED_PROBLEMS
        logger.warning(
            "%s: skipped %d of %d rows (problems by field: %s); first problems:\n%s%s",
            manifest.path, summary["rows_skipped"], summary["rows_read"], by_field, first,
            f"\n  ... and {more} more (Manifest.problems)" if more > 0 else "",
        )  # fmt: skip
    if manifest.left_out_by_view:
        logger.info("%s: left out %d row(s) whose view is not among the requested views",
                    manifest.path, manifest.left_out_by_view)  # fmt: skip
    leaking = patients_in_several_splits(manifest.studies)
    if leaking:
        example = next(iter(leaking.items()))
        logger.warning(
            "%s: the manifest's split column puts %d patient(s) in more than one split (e.g. %s in %s)",
            manifest.path, len(leaking), example[0], sorted(example[1]),
        )  # fmt: skip
    logger.info(
        "%s: %d studies (%s), %d without image, %d without text, %d labels",
        manifest.path, summary["rows_kept"],
        ", ".join(f"{k} {v}" for k, v in summary["split_counts"].items()),
        summary["missing_image"], summary["missing_text"], len(manifest.label_names),
    )  # fmt: skip
