"""Tasks beyond finding classification, at the training level: visual question answering and
text-guided segmentation (data, metrics and a LightningModule each, trained by the one engine of
:mod:`medmodal.training.engine`; their networks are in :mod:`medmodal.models`)."""

__all__ = ["common", "config", "segmentation", "vqa"]
