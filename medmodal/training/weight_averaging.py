"""Weight averaging of a training run (``train.weight_averaging``).

``ema``: Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` (an
exponential moving average of the weights and buffers after every optimiser step, kept in a
``torch.optim.swa_utils.AveragedModel``). Validation, the best-epoch choice and the saved
checkpoints use the averaged weights, so ``evaluate`` scores them; the checkpoint also keeps the
current weights (``current_model_state``) so a resumed run continues from them. On ~20 steps per
epoch the best single epoch of a noisy 100-study validation split is a noisy choice; the average
of the last steps is a smoother one (docs/diagnosis.md).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, EMAWeightAveraging

from medmodal.config import TrainConfig


def weight_averaging_callbacks(train: TrainConfig) -> list[Callback]:
    """The callbacks of ``train.weight_averaging`` ([] for ``none``)."""
    if train.weight_averaging == "ema":
        return [EMAWeightAveraging(decay=train.ema_decay)]
    return []
