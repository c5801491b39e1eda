"""Training whose every epoch depends only on the seed and the epoch number, so a killed and
resumed run reproduces the uninterrupted one.

Lightning restores the weights, the optimiser, the learning-rate schedule, the loop counters
and the callbacks' state (best score, early-stopping patience) from ``last.ckpt``, and its
checkpoints are written at epoch ends. What it does not restore is the randomness; here each
piece is made a function of ``(seed, epoch)`` instead of a stream that runs across epochs:

- data order: :class:`EpochSeededSampler` draws epoch ``e``'s permutation from a generator
  seeded with ``(seed, e)`` (Lightning calls ``set_epoch``; under DDP its
  ``DistributedSamplerWrapper`` forwards it and shards the same order);
- augmentation: :class:`EpochSeededItems` reseeds the dataset's MONAI transforms before every
  item with ``(seed, e, index)``, so draws do not depend on worker count, prefetching or how
  far a previous process got;
- model randomness (dropout): :class:`EpochSeeding` reseeds torch, numpy and Python's
  ``random`` at the start of every training epoch with ``(seed, e, rank)``.

Resume therefore always restarts at the last epoch boundary and continues exactly as the
uninterrupted run would (``tests/training/test_reproducible_resume.py`` compares the two).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medmodal.data.dataset import collate, make_dataloader
from medmodal.data.seeding import derived_seed


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` over ``range(size)``: a permutation seeded by ``(seed, epoch)``
    (or in order with ``shuffle=False``). The epoch travels with the index to
    :class:`EpochSeededItems`."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        """This epoch's item order."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(index, epoch) for index in self.order()])

    def __len__(self) -> int:
        return self.size


class EpochSeededItems(Dataset):
    """``dataset`` indexed by ``(index, epoch)``: before each item its random transforms
    (``set_random_state``, if the dataset has one) are reseeded with ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._reseed = getattr(dataset, "set_random_state", None)

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # a map-style dataset with a length

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        if self._reseed is not None:
            self._reseed(derived_seed(self.seed, epoch, index))
        return self.dataset[index]


class EpochSeeding(L.Callback):
    """Reseeds torch (all devices), numpy and ``random`` at every training epoch start with
    ``(seed, epoch, global rank)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derived_seed(self.seed, trainer.current_epoch, trainer.global_rank))


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every GPU), numpy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def epoch_seeded_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list], Any] = collate,
) -> DataLoader:
    """The shuffled training loader: :class:`EpochSeededSampler` over :class:`EpochSeededItems`
    (batch dicts as :func:`medmodal.data.dataset.make_dataloader` yields them, or as ``collate_fn`` makes them)."""
    return make_dataloader(
        EpochSeededItems(dataset, seed),
        batch_size,
        num_workers=num_workers,
        seed=seed,  # the generator gives the worker base seeds; never the global RNG
        drop_last=drop_last,
        sampler=EpochSeededSampler(len(cast(Sized, dataset)), seed),  # map-style, with a length
        collate_fn=collate_fn,
    )
