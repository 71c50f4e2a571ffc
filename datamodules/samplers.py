"""Samplers: validation under DDP (every image exactly once over the ranks) and a resumable training order.

Lightning gives validation loaders a ``DistributedSampler`` that pads each rank to the same length by repeating
images (5 images on 2 ranks -> 6, image 0 twice), so metric means differ from a single-process evaluation.  Here
rank ``r`` of ``W`` gets images ``r, r + W, r + 2W, ...`` and nothing is repeated; the modules' MeanMetric sums and
counts are then reduced across ranks, which gives exactly the single-process mean.

A rank whose share is empty (fewer images than ranks, e.g. Set5 on 8 GPUs) would skip validation and leave the
others waiting in the metric reduction, so it gets image 0 marked ``keep=False``: it runs the same collectives and
the modules drop the row from metrics and tables.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.workers import worker_init


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


# ------------------------------------------------------------------------------------------ training order
class ResumableSampler(DistributedSampler):
    """Training order that a resumed run reproduces exactly, in one process or under DDP.

    Epoch ``e`` visits ``randperm(N)`` drawn from a generator seeded with ``(seed, e)`` (padded, like
    ``DistributedSampler``, to a multiple of the world size); rank ``r`` of ``W`` takes positions ``r, r + W, ...``.
    It yields ``(index, epoch)`` keys: the training datasets seed each sample's crop/flip randomness from
    ``(seed, epoch, index)`` (:func:`sample_rng`), not from a worker's RNG stream, so a sample is the same whichever
    worker loads it and whether or not the run was interrupted.

    Resume: :class:`ResumableDataLoader` puts ``{epoch, batches consumed in the epoch}`` in the checkpoint (Lightning
    saves the ``state_dict`` of every train loader that has one: ``fit_loop.state_dict()["combined_loader"]``);
    after ``load_state_dict`` the next ``__iter__`` starts that epoch after the consumed samples.  (Lightning itself
    only restores its batch counters and restarts the loader from the epoch's beginning, replaying those batches.)
    A ``DistributedSampler`` subclass, so Lightning leaves it in place under DDP.
    """

    def __init__(self, dataset, seed: int = 0, num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._skip_epoch: int | None = None
        self._skip = 0

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(self.seed) * 1_000_003 + int(epoch))
            idx = torch.randperm(n, generator=g).tolist()
        else:
            idx = list(range(n))
        pad = self.total_size - n
        while pad > 0:  # as DistributedSampler: repeat from the start so every rank has the same count
            idx += idx[:pad]
            pad = self.total_size - len(idx)
        return idx[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        epoch, skip = self.epoch, 0
        if self._skip_epoch is not None:  # one-shot: the first pass after a resume
            epoch, skip = self._skip_epoch, self._skip
            self.epoch, self._skip_epoch, self._skip = epoch, None, 0
        for index in self.order(epoch)[skip:]:
            yield index, epoch

    def resume_at(self, epoch: int, samples: int) -> None:
        """Make the next pass epoch ``epoch`` without its first ``samples`` samples (of this rank's share)."""
        if samples >= self.num_samples:
            epoch, samples = epoch + 1, 0
        self._skip_epoch, self._skip = int(epoch), int(samples)
        self.epoch = int(epoch)


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over a :class:`ResumableSampler` whose position Lightning checkpoints and restores.

    ``batches_done`` (set by the data module) returns how many batches of the current epoch training has consumed:
    Lightning's ``batch_progress.current.processed``, which, unlike a count of the batches this loader yielded, does
    not include the batch Lightning's fetcher has already prefetched.
    """

    batches_done = None  # Callable[[], int]

    def state_dict(self) -> dict:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # Lightning swapped it (trainer.overfit_batches)
            return {}
        batches = int(self.batches_done()) if self.batches_done is not None else 0
        return {
            "epoch": int(sampler.epoch),
            "batches": batches,
            "batch_size": int(self.batch_size),
            "world_size": int(sampler.num_replicas),
            "seed": int(sampler.seed),
        }

    def load_state_dict(self, state: dict) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableSampler):
            return
        if int(state.get("seed", sampler.seed)) != int(sampler.seed):
            warnings.warn(
                f"resuming with seed {sampler.seed} but the checkpoint's data order used seed "
                f"{state['seed']}: the rest of the epoch will not match the interrupted run",
                stacklevel=2,
            )
        samples = int(state.get("batches", 0)) * int(state.get("batch_size", self.batch_size))
        if int(state.get("world_size", sampler.num_replicas)) != sampler.num_replicas:
            warnings.warn(
                f"resuming on {sampler.num_replicas} processes a run checkpointed on {state['world_size']}: "
                "the epoch's remaining samples are re-dealt, not reproduced exactly",
                stacklevel=2,
            )
            samples = samples * int(state["world_size"]) // sampler.num_replicas
        sampler.resume_at(int(state.get("epoch", 0)), samples)


def sample_key(key) -> tuple[int, int]:
    """``(index, epoch)`` from a :class:`ResumableSampler` key, or ``(index, 0)`` from a plain index."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), 0


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training sample: a function of (run seed, epoch, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**32, int(epoch) % 2**32, int(index)]))


def resumable_train_loader(dataset, batch_size: int, seed: int, trainer=None, **loader_kwargs) -> ResumableDataLoader:
    """A shuffling, ``drop_last`` train loader over :class:`ResumableSampler` (sharded when ``trainer`` runs DDP)."""
    world, rank = world_and_rank(trainer)
    sampler = ResumableSampler(dataset, seed=seed, num_replicas=world, rank=rank, shuffle=True)
    # Its own generator: creating an iterator then draws the workers' base seed from it instead of the global torch
    # RNG, whose state checkpoints carry (a resumed run creates one iterator more than an uninterrupted one).
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    loader_kwargs.setdefault("worker_init_fn", worker_init)  # workers outlive a group SIGTERM (workers.py)
    loader = ResumableDataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, generator=generator, **loader_kwargs
    )
    if trainer is not None:
        loader.batches_done = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return loader


def collate_skipping_bad(items: list):
    """``default_collate`` of the items that are not ``None`` (evaluation datasets return ``None`` for a file that
    cannot be decoded under ``on_bad_image: warn``); ``None`` when nothing is left."""
    from torch.utils.data import default_collate

    items = [it for it in items if it is not None]
    return default_collate(items) if items else None
