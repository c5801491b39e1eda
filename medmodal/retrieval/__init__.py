"""Use of the joint image-report space of ``medmodal pretrain``: cross-modal retrieval (vector
index, Recall@K / median rank, ``medmodal search``) and zero-shot classification from prompts."""

__all__ = ["embed", "evaluate_pretrained", "index", "metrics", "search", "zero_shot"]
