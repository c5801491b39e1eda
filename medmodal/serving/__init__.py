"""Inference for users: :mod:`.predictor` (also ``medmodal.load``), the web service (:mod:`.app`,
:mod:`.server`, :mod:`.security`), the review page, ONNX export."""

__all__ = ["app", "onnx_export", "predictor", "ratings", "review", "security", "server"]
