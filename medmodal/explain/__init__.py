"""Explanations of a trained model's predictions (``medmodal explain``; docs/explain.md).

- :mod:`.image`: Grad-CAM over the image encoder per finding; decoder attention per sentence.
- :mod:`.text`: word attention of the text encoder; integrated gradients (captum).
- :mod:`.modality`: Shapley contributions of image and text; the conflict flag.
- :mod:`.render`: PNG overlays, highlighted text, the self-contained HTML case page.
- :mod:`.case`: everything for one study; :mod:`.faithfulness`: pointing game, deletion, text mass.

Kept import-light (captum and matplotlib load in the submodules that need them), because the
predictor imports :mod:`.modality`.
"""

__all__ = ["case", "faithfulness", "image", "modality", "render", "text"]
