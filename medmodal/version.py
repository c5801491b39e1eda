"""The package version (lowest layer: any module may read it without importing the Python API)."""

__version__ = "0.1.0"
