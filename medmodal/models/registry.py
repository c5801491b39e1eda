"""Build model parts by name (the timm / open_clip pattern).

Every family of parts (image encoders, text encoders, fusion layers, report
decoders) has its own table. A new part is one new file with a decorated class::

    @register("fusion", "my_fusion")
    class MyFusion(nn.Module): ...

and ``create("fusion", "my_fusion", **kwargs)`` builds it. Unknown names fail
with the list of known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from medmodal.config import ConfigError, ModelConfig

KINDS = ("image_encoder", "text_encoder", "fusion", "decoder", "baseline")

_TABLES: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}

T = TypeVar("T")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class/function decorator adding a builder to the ``kind`` table under ``name``."""
    if kind not in _TABLES:
        raise ValueError(f"unknown part kind '{kind}'; known kinds: {', '.join(KINDS)}")

    def add(builder: T) -> T:
        if name in _TABLES[kind]:
            raise ValueError(f"{kind} '{name}' is registered twice")
        _TABLES[kind][name] = builder  # type: ignore[assignment]
        return builder

    return add


def check_part_names(model: ModelConfig) -> None:
    """Every part ``model`` names is registered; a :class:`ConfigError` naming the field otherwise
    (``model.fusion.name: unknown fusion 'gatd'; available: ...``)."""
    for kind in ("image_encoder", "text_encoder", "fusion", "decoder"):
        name = getattr(model, kind).name
        known = available(kind)
        if name not in known:
            raise ConfigError(f"model.{kind}.name: unknown {kind} '{name}'; available: {', '.join(known)}")


def available(kind: str, standalone: bool = False) -> list[str]:
    """Sorted names registered for ``kind``; ``standalone``: only parts that combine with any other part
    (not the parts of a peer model, ``medmodal.models.peers.PEER_PARTS``, which work only together)."""
    _import_builtin_parts(kind)
    if standalone:
        from medmodal.models.peers import PEER_PARTS

        return sorted(set(_TABLES[kind]) - set(PEER_PARTS.get(kind, ())))
    return sorted(_TABLES[kind])


def create(kind: str, name: str, **kwargs):
    """Build the part ``name`` of family ``kind`` with ``kwargs``."""
    _import_builtin_parts(kind)
    table = _TABLES.get(kind)
    if table is None:
        raise ValueError(f"unknown part kind '{kind}'; known kinds: {', '.join(KINDS)}")
    if name not in table:
        raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(table)) or '(none)'}")
    return table[name](**kwargs)


def _import_builtin_parts(kind: str | None = None) -> None:
    # Importing the family packages runs their @register decorators.
    from medmodal.models import decoders, fusion, image_encoders, peers, text_encoders  # noqa: F401

    if kind == "baseline":  # scikit-learn baselines: imported only when asked for
        from medmodal.models import baselines  # noqa: F401


Part = TypeVar("Part")


def register_with_dims(kind: str, name: str, dims_type: type) -> Callable[[type[Part]], type[Part]]:
    """Class decorator for a part whose constructor takes its sizes as one dataclass ``dims_type``
    (``TextDims``, ``DecoderDims``, ``FusionDims``): registers ``cls`` under ``kind`` / ``name`` with a builder that
    takes the registry's keywords and calls ``cls(dims_type(**those naming its fields), **the others)``."""
    names = {field.name for field in dataclasses.fields(dims_type)}

    def add(cls: type[Part]) -> type[Part]:
        construct: Callable[..., Part] = cls

        def build(**kwargs: Any) -> Part:
            dims = dims_type(**{key: kwargs.pop(key) for key in names & set(kwargs)})
            return construct(dims, **kwargs)

        register(kind, name)(build)
        return cls

    return add
