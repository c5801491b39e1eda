"""Importers: public collections -> a manifest in the dataset contract (:mod:`medmodal.data.manifest`).

One module per format, named by :mod:`medmodal.data.importers.registry` (``medmodal import FORMAT``);
this package imports none of them, so the command line starts without pandas or pydicom.
"""

__all__ = ["registry"]
