"""The ``medmodal`` command line: :mod:`.main` (entry point), one ``cmd_*.py`` per command group."""

__all__ = ["main"]
