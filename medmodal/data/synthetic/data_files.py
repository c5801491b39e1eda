"""The generator's catalogues kept as data (YAML next to this module), validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError


def read_catalogue(file: str | Path, shape: Any) -> Any:
    """``file`` validated as ``shape``, e.g. ``dict[str, HistoryItem]``; a bare name is a file shipped here.

    A bad entry is a ValueError naming the file and the entry's path (``chf.weight: ...``).
    """
    path = Path(__file__).with_name(file) if isinstance(file, str) else file
    try:
        return TypeAdapter(shape).validate_python(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: {problems}") from None
