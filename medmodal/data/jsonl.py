"""The lines of a JSON Lines file (a manifest, ``qa.jsonl``), numbered as an editor shows them."""

from __future__ import annotations

import os
from collections.abc import Iterator


def numbered_lines(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of each line that is not blank (the first line is number 1)."""
    with open(path, encoding=encoding) as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line
