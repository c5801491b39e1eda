"""Data: manifests, images, reports, tokenizer, datasets, splits, prepared shards, importers and the
synthetic generator (the lowest layer above config; DEVELOPERS.md)."""

__all__ = [
    "codestreams",
    "dataset",
    "image_cache",
    "images",
    "importers",
    "manifest",
    "manifest_contract",
    "manifest_report",
    "manifest_rows",
    "manifest_stream",
    "manifest_tables",
    "pipeline",
    "prepare",
    "prepared",
    "prepared_manifest",
    "qa",
    "reports",
    "splits",
    "synthetic",
    "tokenizer",
    "types",
]
