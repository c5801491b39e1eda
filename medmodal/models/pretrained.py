"""Load weights for a model part from a LOCAL file (nothing is ever downloaded).

:func:`load_pretrained` accepts

- a plain ``state_dict`` saved with ``torch.save(module.state_dict(), path)``;
- a checkpoint dict holding it under ``"state_dict"`` (Lightning) or ``"model"``;
- keys with a prefix the module does not have (``module.`` from DDP, ``model.`` from
  Lightning, ``model.image_encoder.`` from a whole-model checkpoint) or lacking one the
  module has (a raw MONAI ResNet state dict loaded into an encoder that wraps it):
  the prefix pair that matches the most keys is used.

Loading is non-strict: keys of the module the file lacks and keys of the file the module
lacks are logged. It fails when no key matches (wrong file) or when a matching key has
another shape (wrong architecture or width).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from medmodal.errors import InputNotFoundError, RunError
from medmodal.safeio import UnreadableFileError, UnsafeFileError, load_torch_file

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("state_dict", "model")
_MAX_PREFIX_DEPTH = 4


class PretrainedWeightsError(RunError, ValueError):
    """A weights file that cannot be loaded into the module."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    path: str
    loaded: list[str]
    missing: list[str] = field(default_factory=list)  # module keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the module has no use for
    strip_prefix: str = ""  # removed from the file's keys
    add_prefix: str = ""  # put in front of them to reach the module's keys


def load_pretrained(module: nn.Module, path: str | Path) -> LoadReport:
    """Copy the matching weights of the local file ``path`` into ``module``.

    Raises:
        FileNotFoundError: no such file.
        PretrainedWeightsError: not a state dict, no key matches, or shapes clash.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"pretrained weights not found: {path}")
    file_state = extract_state_dict(read_weights_file(path), str(path))
    target = module.state_dict()
    strip, add = best_prefix_pair(list(file_state), list(target))
    renamed = {add + key[len(strip) :]: value for key, value in file_state.items() if key.startswith(strip)}
    matched = {key: value for key, value in renamed.items() if key in target}
    if not matched:
        raise PretrainedWeightsError(
            f"{path}: no parameter name matches {type(module).__name__} "
            f"(file keys like {_examples(file_state)}; module keys like {_examples(target)})"
        )
    _check_shapes(matched, target, str(path))
    result = module.load_state_dict(matched, strict=False)
    report = LoadReport(
        path=str(path),
        loaded=sorted(matched),
        missing=sorted(result.missing_keys),
        unexpected=sorted(set(file_state) - {strip + key[len(add) :] for key in matched}),
        strip_prefix=strip,
        add_prefix=add,
    )
    _log_report(report, type(module).__name__)
    return report


def read_weights_file(path: Path) -> object:
    """``torch.load`` restricted to tensors and plain containers (no arbitrary pickled code), via
    :func:`medmodal.safeio.load_torch_file` (also refuses archives that would inflate past their size)."""
    try:
        return load_torch_file(path, "weights file")
    except UnsafeFileError as err:
        raise PretrainedWeightsError(str(err)) from None
    except UnreadableFileError as err:
        raise PretrainedWeightsError(
            f"{path}: not a readable weights file (expected torch.save of a state_dict or a checkpoint "
            f"dict of tensors and plain values): {err}"
        ) from None


def extract_state_dict(obj: object, source: str = "<object>") -> dict[str, Tensor]:
    """The tensor dict inside a loaded file: itself, or under ``state_dict`` / ``model``."""
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return extract_state_dict(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise PretrainedWeightsError(
        f"{source}: expected a state_dict or a checkpoint dict with one of "
        f"{list(CHECKPOINT_KEYS)}, got {type(obj).__name__}"
    )


def best_prefix_pair(file_keys: list[str], module_keys: list[str]) -> tuple[str, str]:
    """``(strip, add)`` maximising how many ``add + key[len(strip):]`` are module keys.

    One of the two is empty: the file has an extra prefix (``module.``, ``model.``) or
    lacks one the module has (``body.net.``). Ties prefer the shorter renaming, so names
    that already match are left alone.
    """
    module_set, file_set = set(module_keys), set(file_keys)
    counts: Counter[tuple[str, str]] = Counter()
    for key in file_keys:
        for strip in _dotted_prefixes(key):
            if key[len(strip) :] in module_set:
                counts[(strip, "")] += 1
    for key in module_keys:
        for add in _dotted_prefixes(key)[1:]:
            if key[len(add) :] in file_set:
                counts[("", add)] += 1
    if not counts:
        return "", ""
    top = max(counts.values())
    return min((pair for pair, n in counts.items() if n == top), key=_renaming_size)


def _dotted_prefixes(key: str) -> list[str]:
    """``""``, ``a.``, ``a.b.`` ... (a few levels at most) of the dotted name ``key``."""
    parts = key.split(".")[:-1][:_MAX_PREFIX_DEPTH]
    return [""] + [".".join(parts[:depth]) + "." for depth in range(1, len(parts) + 1)]


def _renaming_size(pair: tuple[str, str]) -> tuple[int, str, str]:
    strip, add = pair
    return strip.count(".") + add.count("."), strip, add


def _check_shapes(matched: dict[str, Tensor], target: dict[str, Tensor], source: str) -> None:
    clashes = [
        f"{key}: file {tuple(value.shape)} vs module {tuple(target[key].shape)}"
        for key, value in matched.items()
        if value.shape != target[key].shape
    ]
    if clashes:
        shown = "\n  ".join(clashes[:10]) + (
            f"\n  ... and {len(clashes) - 10} more" if len(clashes) > 10 else ""
        )
        raise PretrainedWeightsError(f"{source}: shape mismatch for {len(clashes)} tensor(s):\n  {shown}")


def _log_report(report: LoadReport, module_name: str) -> None:
    log.info("loaded %d tensors from %s into %s", len(report.loaded), report.path, module_name)
    if report.strip_prefix or report.add_prefix:
        log.info("renamed keys: strip %r, add %r", report.strip_prefix, report.add_prefix)
    if report.missing:
        log.warning(
            "%s: %d tensor(s) not in %s keep their initialisation: %s",
            module_name,
            len(report.missing),
            report.path,
            _examples(report.missing),
        )
    if report.unexpected:
        log.warning(
            "%s: %d tensor(s) of %s unused: %s",
            module_name,
            len(report.unexpected),
            report.path,
            _examples(report.unexpected),
        )


def _examples(keys, n: int = 5) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")
