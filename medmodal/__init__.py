"""medmodal: multimodal deep learning on medical images paired with clinical text."""

__version__ = "0.1.0"
