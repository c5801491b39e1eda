"""A study from the inputs of one prediction: an image (a path or an image in memory) and/or report text."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeGuard

from medmodal.data.images import ImageSource
from medmodal.data.reports import split_report_sections
from medmodal.data.types import Study


def is_image_path(image: object) -> TypeGuard[str | os.PathLike[str]]:
    """A path (str or ``os.PathLike``) rather than an image in memory."""
    return isinstance(image, (str, Path)) or hasattr(image, "__fspath__")


def study_from_inputs(
    image: ImageSource | None, text: str | dict[str, str] | None, text_fields: list[str]
) -> Study:
    """A one-off :class:`Study` from an image and/or report text (an in-memory image is not
    kept in the study: give it to :meth:`~medmodal.serving.predictor.Predictor.batch_for` decoded).

    ``text`` may be a dict of sections, a report with section headers (split into
    sections), or plain text, which is taken as the model's (first) input field.
    """
    sections: dict[str, str] = {}
    if isinstance(text, dict):
        sections = {k: v for k, v in text.items() if v}
    elif text:
        parsed = split_report_sections(text)
        has_headers = any(parsed.get(f) for f in text_fields) and parsed.get("findings", "") != text.strip()
        sections = {k: v for k, v in parsed.items() if v} if has_headers else {text_fields[0]: text.strip()}
    path = Path(image).resolve() if image is not None and is_image_path(image) else None
    return Study(id="input", row=0, image=path, sections=sections)
