"""Super-resolution data: folders of HR images, LR synthesised on the device.

Training items are random ``gt_size`` HR crops with flips and 90-degree rotations (albumentations, in
the workers).  The LR is made from the batch after it reaches the device (``on_after_batch_transfer``)
by the MATLAB-style antialiased bicubic (``ops.imresize``), so the GPU does the resampling and the
workers only decode and crop.  Pre-made LR folders (DIV2K ``LR_bicubic/X4``) are an alternative; then
HR and LR crops are aligned in the worker.  Validation uses whole images, HR cropped to a multiple of
the scale (BasicSR ``modcrop``).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import BadImageError, filter_images, list_images, read_image
from datamodules.samplers import eval_dataset_and_sampler
from ops.imresize import imresize


def make_lr(gt: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """Bicubic (MATLAB, antialiased) x1/scale of a [B,3,H,W] batch in [0,1], optionally on 8-bit levels."""
    lq = imresize(gt, 1.0 / scale)
    if quantize:
        lq = (lq.clamp(0, 1) * 255).round() / 255
    return lq


def _global_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)) or 0)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _find_lr(hr: Path, hr_root: Path, lr_root: Path, scale: int) -> Path:
    """DIV2K naming: ``0001.png`` -> ``0001x4.png``; a file of the same name is accepted too."""
    rel = hr.relative_to(hr_root)
    for name in (f"{rel.stem}x{scale}{rel.suffix}", rel.name):
        cand = lr_root / rel.parent / name
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no LR image for {hr} in {lr_root} (looked for {rel.stem}x{scale}{rel.suffix} and {rel.name})")


class SRTrainDataset(Dataset):
    """Random HR crops (and aligned LR crops when pre-made LR folders are given)."""

    def __init__(self, dirs, lr_dirs=None, scale=4, gt_size=128, use_hflip=True, use_rot=True, on_bad_image="warn",
                 enlarge_ratio=1):
        self.scale, self.gt_size, self.on_bad_image = scale, gt_size, on_bad_image
        self.enlarge_ratio = int(enlarge_ratio)
        self.files: list[Path] = []
        self.lr_files: list[Path] | None = [] if lr_dirs else None
        if lr_dirs and len(lr_dirs) != len(dirs):
            raise ValueError(f"data.lr_train_dirs has {len(lr_dirs)} folders but data.train_dirs has {len(dirs)}")
        for i, d in enumerate(dirs):
            files = filter_images(list_images(d), min_size=gt_size, on_bad_image=on_bad_image)
            self.files += files
            if lr_dirs:
                self.lr_files += [_find_lr(f, Path(d).expanduser(), Path(lr_dirs[i]).expanduser(), scale) for f in files]
        aug = [] if lr_dirs else [A.RandomCrop(gt_size, gt_size)]
        if use_hflip:
            aug += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        if use_rot:
            aug += [A.Transpose(p=0.5)]  # BasicSR 'rot90' = transpose; with both flips: all 8 dihedral ops
        self.aug = A.Compose(aug, additional_targets={"lq": "image"}) if aug else None
        self._seeded_pid = None
        self._rng = np.random.default_rng()

    def _reseed(self) -> None:
        """albumentations' Compose keeps its own RNG, which forked DataLoader workers would all copy:
        reseed it once per process from torch's per-worker seed (itself derived from the run's seed)."""
        if self._seeded_pid != os.getpid():
            seed = torch.initial_seed() % 2**32
            if torch.utils.data.get_worker_info() is None:
                # num_workers=0: the main process's seed is the run's seed on every DDP rank; add the rank so that
                # ranks do not crop and flip in lockstep (workers' seeds already include it: Lightning's
                # pl_worker_init_function).
                seed = (seed + 1_000_003 * _global_rank()) % 2**32
            self._rng = np.random.default_rng(seed)
            if self.aug is not None:
                # Not Compose.set_random_seed: in albumentations 2.0.8 it gives every transform its own
                # generator with the SAME seed, so all flips fire together.  One shared generator instead.
                self.aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
            self._seeded_pid = os.getpid()

    def __len__(self) -> int:
        # BasicSR dataset_enlarge_ratio: each image appears this often per epoch (epochs are bookkeeping only).
        return len(self.files) * self.enlarge_ratio

    def _load(self, index: int) -> dict:
        self._reseed()
        index %= len(self.files)
        gt = read_image(self.files[index])
        if self.lr_files is None:
            out = {"image": gt}
        else:
            lq = read_image(self.lr_files[index])
            lq_size = self.gt_size // self.scale
            h, w = lq.shape[:2]
            if gt.shape[0] < h * self.scale or gt.shape[1] < w * self.scale:
                raise BadImageError(f"{self.files[index]}: HR {gt.shape[1]}x{gt.shape[0]} is smaller than "
                                    f"{self.scale}x its LR {self.lr_files[index]} ({w}x{h})")
            top, left = int(self._rng.integers(0, h - lq_size + 1)), int(self._rng.integers(0, w - lq_size + 1))
            lq = lq[top:top + lq_size, left:left + lq_size]
            s = self.scale
            gt = gt[top * s:(top + lq_size) * s, left * s:(left + lq_size) * s]
            out = {"image": gt, "lq": lq}
        if self.aug is not None:
            out = self.aug(**out)
        item = {"gt": _to_tensor(out["image"])}
        if "lq" in out:
            item["lq"] = _to_tensor(out["lq"])
        return item

    def __getitem__(self, index: int) -> dict:
        try:
            return self._load(index)
        except BadImageError as err:
            # Header looked fine at scan time but the pixels do not decode (truncated file, ...).
            if self.on_bad_image == "error":
                raise
            warnings.warn(f"skipping {err}", stacklevel=2)
            return self._load(index + 1)


class SRValDataset(Dataset):
    """Whole images of one folder; HR mod-cropped to the scale.  LR from ``lr_dir`` or made on the device."""

    def __init__(self, root, scale=4, lr_dir=None, on_bad_image="warn"):
        self.root, self.scale, self.lr_dir = Path(root).expanduser(), scale, lr_dir
        self.files = filter_images(list_images(self.root), min_size=scale, on_bad_image=on_bad_image)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        gt = read_image(self.files[index])
        h, w = gt.shape[:2]
        gt = gt[: h - h % self.scale, : w - w % self.scale]
        item = {"gt": _to_tensor(gt), "name": self.files[index].stem}
        if self.lr_dir:
            item["lq"] = _to_tensor(read_image(_find_lr(self.files[index], self.root, Path(self.lr_dir), self.scale)))
        return item


class SRDataModule(LightningDataModule):
    def __init__(
        self,
        train_dirs: list[str],
        val_dirs: list[str],
        test_dirs: list[str] | None = None,
        lr_train_dirs: list[str] | None = None,
        scale: int = 4,
        gt_size: int = 128,
        use_hflip: bool = True,
        use_rot: bool = True,
        lr_quantize: bool = True,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        on_bad_image: str = "warn",
        dataset_enlarge_ratio: int = 1,
        task: str = "sr",
    ) -> None:
        super().__init__()
        if gt_size % scale:
            raise ValueError(f"data.gt_size={gt_size} must be a multiple of data.scale={scale}")
        self.train_dirs = list(train_dirs or [])
        self.val_dirs = list(val_dirs or [])
        self.test_dirs = list(test_dirs or self.val_dirs)
        self.lr_train_dirs = list(lr_train_dirs) if lr_train_dirs else None
        self.scale, self.gt_size = scale, gt_size
        self.use_hflip, self.use_rot, self.lr_quantize = use_hflip, use_rot, lr_quantize
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.on_bad_image = on_bad_image
        self.dataset_enlarge_ratio = dataset_enlarge_ratio
        self.val_names = [folder_name(d) for d in self.val_dirs]
        self.train_set = None
        self.val_sets: list[SRValDataset] = []

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = SRTrainDataset(self.train_dirs, self.lr_train_dirs, self.scale, self.gt_size,
                                            self.use_hflip, self.use_rot, self.on_bad_image,
                                            self.dataset_enlarge_ratio)
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = [SRValDataset(d, self.scale, on_bad_image=self.on_bad_image) for d in self.val_dirs]

    def _loader(self, ds, batch_size, shuffle, drop_last, sampler=None):
        return DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers and self.num_workers > 0,
            sampler=sampler,
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"{len(self.train_set.files)} training images x data.dataset_enlarge_ratio="
                f"{self.dataset_enlarge_ratio} in {self.train_dirs} is fewer than one batch "
                f"(data.batch_size={self.batch_size}): raise the ratio or lower the batch size")
        return self._loader(self.train_set, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> list[DataLoader]:
        # Whole images differ in size: batch 1 unless they happen to match.  Under DDP each image is validated
        # once, on one rank (no padding duplicates; datamodules/samplers.py).
        loaders = []
        for ds in self.val_sets:
            ds, sampler = eval_dataset_and_sampler(ds, getattr(self, "trainer", None))
            loaders.append(self._loader(ds, self.val_batch_size, shuffle=False, drop_last=False, sampler=sampler))
        return loaders

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "lq" not in batch:
            batch["lq"] = make_lr(batch["gt"], self.scale, self.lr_quantize)
        return batch


def folder_name(path: str) -> str:
    """Name a folder for metric keys: its last component (``.../val/Set5`` -> ``Set5``)."""
    return os.path.basename(os.path.normpath(str(path))) or str(path)
