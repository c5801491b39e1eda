"""Errors that mean "your input is wrong", not "medmodal has a bug".

Every user error is a :class:`MedmodalError`; the command line prints its message as one line and exits
with status 2. Any other exception is a bug and keeps its traceback. Raise the most specific base below
(or a subclass of it in the module that knows the details, e.g. ``ManifestError(DataError, ValueError)``),
and make the message name the file, the row and the field.

This is the lowest layer of the package: it imports nothing from medmodal.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InputNotFoundError",
    "MedmodalError",
    "OutputExistsError",
    "RunError",
    "RunNotFoundError",
    "UnsafeFileError",
    "UsageError",
]


class MedmodalError(Exception):
    """A mistake in what the user gave medmodal (a file, a setting, a flag): reported, not a bug."""


class ConfigError(MedmodalError, ValueError):
    """A configuration (YAML file, dotted override, settings file) that does not validate; the message
    names each bad field."""


class UsageError(MedmodalError, ValueError):
    """Arguments that do not fit together (``give --image, --text, or both``) or a malformed flag value."""


class DataError(MedmodalError):
    """Input data that cannot be used: a manifest, a row, an image, an import source, prepared shards."""


class RunError(MedmodalError):
    """A run folder or saved model that cannot be used: a run with another configuration in the output
    folder, a folder that is not a run, a missing, unreadable or incompatible checkpoint or weights file."""


class UnsafeFileError(MedmodalError, ValueError):
    """A file refused because reading it could run code (arbitrary unpickling) or exhaust memory."""


class InputNotFoundError(MedmodalError, FileNotFoundError):
    """A file or folder named by the user does not exist."""


class RunNotFoundError(RunError, FileNotFoundError):
    """A run folder that does not exist, is not a medmodal run, or has no checkpoint yet."""


class OutputExistsError(MedmodalError, FileExistsError):
    """An output folder that already holds something medmodal will not overwrite."""
