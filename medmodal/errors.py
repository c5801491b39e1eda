"""Errors that mean "your input is wrong" (reported as one clean line by the CLI), not bugs."""

from __future__ import annotations

from medmodal.config import ConfigError


def _user_errors() -> tuple[type[BaseException], ...]:
    from medmodal.data.images import ImageReadError
    from medmodal.data.manifest import ManifestError
    from medmodal.training.trainer import RunConflictError

    return (ConfigError, ManifestError, ImageReadError, RunConflictError, FileNotFoundError, ValueError)


def __getattr__(name: str):
    if name == "USER_ERRORS":
        return _user_errors()
    raise AttributeError(name)
