"""Importers: public collections -> a manifest in the dataset contract (:mod:`medmodal.data.manifest`)."""

from medmodal.data.importers.openi import OpenIImport, find_openi_reports, import_openi

__all__ = ["OpenIImport", "find_openi_reports", "import_openi"]
