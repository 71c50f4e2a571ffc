"""Validation under DDP: every image exactly once over the ranks.

Lightning gives validation loaders a ``DistributedSampler`` that pads each rank to the same length by repeating
images (5 images on 2 ranks -> 6, image 0 twice), so metric means differ from a single-process evaluation.  Here
rank ``r`` of ``W`` gets images ``r, r + W, r + 2W, ...`` and nothing is repeated; the modules' MeanMetric sums and
counts are then reduced across ranks, which gives exactly the single-process mean.

A rank whose share is empty (fewer images than ranks, e.g. Set5 on 8 GPUs) would skip validation and leave the
others waiting in the metric reduction, so it gets image 0 marked ``keep=False``: it runs the same collectives and
the modules drop the row from metrics and tables.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class EvalDistributedSampler(DistributedSampler):
    """Strided shard of ``range(len(dataset))`` without padding or shuffling (a ``DistributedSampler``, so
    Lightning leaves it in place).  An empty shard yields the out-of-range index ``len(dataset)``, which
    :class:`KeepFlagDataset` turns into a ``keep=False`` copy of image 0."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        self.indices = list(range(self.rank, self.total_size, self.num_replicas))
        self.num_samples = max(1, len(self.indices))

    def __iter__(self):
        return iter(self.indices or [self.total_size])

    def __len__(self) -> int:
        return self.num_samples


class KeepFlagDataset(Dataset):
    """Adds ``keep`` (True) to every item; index ``len(base)`` is image 0 with ``keep=False`` (see above)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        keep = index < len(self.base)
        item = dict(self.base[index if keep else 0])
        item["keep"] = torch.tensor(keep)
        return item

    def __getattr__(self, name: str) -> Any:  # files, root, ... of the wrapped dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def world_and_rank(trainer) -> tuple[int, int]:
    """(world size, global rank) from the trainer, else from torch.distributed, else (1, 0)."""
    if trainer is not None and getattr(trainer, "world_size", 1) > 1:
        return int(trainer.world_size), int(trainer.global_rank)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def eval_dataset_and_sampler(dataset: Dataset, trainer) -> tuple[Dataset, EvalDistributedSampler | None]:
    """What a validation DataLoader should use: the dataset as is in one process; under DDP the keep-flag
    wrapper and the non-padding sampler."""
    world, rank = world_and_rank(trainer)
    if world <= 1:
        return dataset, None
    return KeepFlagDataset(dataset), EvalDistributedSampler(dataset, num_replicas=world, rank=rank)
