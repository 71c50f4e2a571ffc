"""Super-resolution data: folders of HR images, LR synthesised on the device.

Training items are random ``gt_size`` HR crops with BasicSR's ``augment`` (hflip with ``use_hflip``; vflip and
transpose with ``use_rot``; each p = 0.5), made in the workers.  The LR is made from the batch after it reaches the
device (``on_after_batch_transfer``) by the MATLAB-style antialiased bicubic (``ops.imresize``), so the GPU does the
resampling and the workers only decode and crop.  So that this LR equals the matching crop of the whole image's LR
(what a pre-made LR folder holds), the worker sends the crop with a margin covering the kernel's support
(``lr_margin``; mirrored where it passes the image border, as the whole-image resize mirrors), at an offset that is a
multiple of the scale (``align_crop``); the device resizes the whole patch and keeps the centre of both.  Pre-made LR
folders (DIV2K ``LR_bicubic/X4``) are an alternative; then HR and LR crops are aligned in the worker.  Validation
uses whole images, HR cropped to a multiple of ``gt_mod`` (BasicSR ``modcrop``; its val folders are ``GTmod12``).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import BadImageError, filter_images, list_images, read_image
from datamodules.samplers import (
    collate_skipping_bad,
    eval_dataset_and_sampler,
    resumable_train_loader,
    sample_key,
    sample_rng,
)
from datamodules.workers import worker_init
from ops.imresize import _mirror, imresize, support_margin


def make_lr(gt: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """Bicubic (MATLAB, antialiased) x1/scale of a [B,3,H,W] batch in [0,1], optionally on 8-bit levels."""
    lq = imresize(gt, 1.0 / scale)
    if quantize:
        lq = (lq.clamp(0, 1) * 255).round() / 255
    return lq


def lr_from_context(
    gt_ctx: torch.Tensor, scale: int, margin: int, quantize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gt, lq)`` of a batch of HR patches that carry ``margin`` context pixels on every side: the LR is made from
    the whole patch, then both are cropped to the centre, so the LR equals the crop of the whole image's LR
    (``margin >= ops.imresize.support_margin(scale)``, a multiple of ``scale``)."""
    if margin % scale:
        raise ValueError(f"margin {margin} must be a multiple of the scale {scale}")
    lq = make_lr(gt_ctx, scale, quantize)
    m, ml = margin, margin // scale
    gt = gt_ctx[..., m : gt_ctx.shape[-2] - m, m : gt_ctx.shape[-1] - m]
    return gt, lq[..., ml : lq.shape[-2] - ml, ml : lq.shape[-1] - ml]


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
    raise FileNotFoundError(
        f"no LR image for {hr} in {lr_root} (looked for {rel.stem}x{scale}{rel.suffix} and {rel.name})"
    )


def augment(imgs: list[np.ndarray], hflip: bool, vflip: bool, rot90: bool) -> list[np.ndarray]:
    """BasicSR ``basicsr/data/transforms.py::augment`` on HxWxC arrays: horizontal flip, vertical flip, then
    transpose (its "rot90"), the same for every image of the list; together the 8 dihedral transforms."""
    out = []
    for img in imgs:
        if hflip:
            img = img[:, ::-1]
        if vflip:
            img = img[::-1]
        if rot90:
            img = img.transpose(1, 0, 2)
        out.append(img)
    return out


def _mirror_window(img: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """``img[top:top+h, left:left+w]`` where rows/columns outside the image are mirrored (edge-inclusive),
    exactly as ``ops.imresize`` extends an image at its borders."""
    rows = _mirror(torch.arange(top, top + h), img.shape[0]).numpy()
    cols = _mirror(torch.arange(left, left + w), img.shape[1]).numpy()
    return img[rows[:, None], cols[None, :]]


class SRTrainDataset(Dataset):
    """Random HR crops (and aligned LR crops when pre-made LR folders are given).

    Without LR folders and with ``lr_margin > 0`` an item is ``{"gt_ctx": [3, gt_size + 2m, gt_size + 2m]}``: the
    crop with ``m = lr_margin`` context pixels on every side (see the module docstring); the datamodule turns it into
    ``gt`` and ``lq`` on the device.  With ``lr_margin=0`` it is ``{"gt": crop}`` and the LR is made from the bare
    crop (its two outer LR rings then see mirrored crop borders instead of the image).
    """

    def __init__(
        self,
        dirs,
        lr_dirs=None,
        scale=4,
        gt_size=128,
        use_hflip=True,
        use_rot=True,
        on_bad_image="warn",
        enlarge_ratio=1,
        lr_margin: int = 0,
        align_crop: bool = True,
        seed: int = 0,
    ):
        self.scale, self.gt_size, self.on_bad_image = scale, gt_size, on_bad_image
        self.enlarge_ratio = int(enlarge_ratio)
        self.use_hflip, self.use_rot = bool(use_hflip), bool(use_rot)
        self.lr_margin, self.align_crop = int(lr_margin), bool(align_crop)
        if self.lr_margin < 0 or self.lr_margin % scale:
            raise ValueError(f"data.lr_margin={lr_margin} must be a non-negative multiple of data.scale={scale}")
        self.files: list[Path] = []
        self.lr_files: list[Path] | None = [] if lr_dirs else None
        if lr_dirs and len(lr_dirs) != len(dirs):
            raise ValueError(f"data.lr_train_dirs has {len(lr_dirs)} folders but data.train_dirs has {len(dirs)}")
        for i, d in enumerate(dirs):
            files = filter_images(list_images(d), min_size=gt_size, on_bad_image=on_bad_image)
            self.files += files
            if lr_dirs:
                self.lr_files += [
                    _find_lr(f, Path(d).expanduser(), Path(lr_dirs[i]).expanduser(), scale) for f in files
                ]
        # A subclass may set an albumentations Compose here that replaces the crop and flips (applied to the whole
        # image; the item is then {"gt": its output}); seeded with the dataset's generator.
        self.aug = None
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def _seed(self, index: int, epoch: int) -> None:
        """Crop/flip randomness of one sample, from (seed, epoch, index) only (datamodules/samplers.py): the same
        sample whichever worker or rank loads it, and after a resume (no per-worker RNG streams)."""
        self._rng = sample_rng(self.seed, epoch, index)
        if self.aug is not None:
            # Not Compose.set_random_seed: in albumentations 2.0.8 it gives every transform its own
            # generator with the SAME seed, so all flips fire together.  One shared generator instead.
            sub = int(self._rng.integers(0, 2**63))
            self.aug.set_random_state(np.random.default_rng(sub), random.Random(sub))

    def _augment(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        # BasicSR augment(hflip=use_hflip, rotation=use_rot): vflip and rot90 both belong to `rotation`.
        hflip = self.use_hflip and self._rng.random() < 0.5
        vflip = self.use_rot and self._rng.random() < 0.5
        rot90 = self.use_rot and self._rng.random() < 0.5
        return augment(imgs, hflip, vflip, rot90)

    def __len__(self) -> int:
        # BasicSR dataset_enlarge_ratio: each image appears this often per epoch (epochs are bookkeeping only).
        return len(self.files) * self.enlarge_ratio

    def _offset(self, length: int) -> int:
        """Random crop start along one axis; a multiple of the scale with ``align_crop`` (BasicSR pairs an LR crop
        at an integer LR offset with the HR crop at ``scale`` times it)."""
        if self.align_crop:
            return self.scale * int(self._rng.integers(0, (length - self.gt_size) // self.scale + 1))
        return int(self._rng.integers(0, length - self.gt_size + 1))

    def _load(self, index: int) -> dict:
        index %= len(self.files)
        gt = read_image(self.files[index])
        s = self.scale
        if self.lr_files is not None:
            lq = read_image(self.lr_files[index])
            lq_size = self.gt_size // s
            h, w = lq.shape[:2]
            if gt.shape[0] < h * s or gt.shape[1] < w * s:
                raise BadImageError(
                    f"{self.files[index]}: HR {gt.shape[1]}x{gt.shape[0]} is smaller than "
                    f"{s}x its LR {self.lr_files[index]} ({w}x{h})"
                )
            top, left = int(self._rng.integers(0, h - lq_size + 1)), int(self._rng.integers(0, w - lq_size + 1))
            lq = lq[top : top + lq_size, left : left + lq_size]
            gt = gt[top * s : (top + lq_size) * s, left * s : (left + lq_size) * s]
            gt, lq = self._augment([gt, lq])
            return {"gt": _to_tensor(gt), "lq": _to_tensor(lq)}
        if self.aug is not None:  # a subclass's own pipeline
            return {"gt": _to_tensor(self.aug(image=gt)["image"])}
        # The image is mod-cropped to the scale first: its LR (made whole, as a stored LR file is) has whole pixels.
        # (Still >= gt_size: files are at least gt_size, a multiple of the scale.)
        h, w = gt.shape[0] - gt.shape[0] % s, gt.shape[1] - gt.shape[1] % s
        gt = gt[:h, :w]
        top, left = self._offset(h), self._offset(w)
        m = self.lr_margin
        patch = _mirror_window(gt, top - m, left - m, self.gt_size + 2 * m, self.gt_size + 2 * m)
        # Flips and the transpose keep the crop centred in its margin, so they can be applied to the whole patch.
        (patch,) = self._augment([patch])
        return {"gt_ctx" if m else "gt": _to_tensor(patch)}

    def __getitem__(self, key) -> dict:
        index, epoch = sample_key(key)
        self._seed(index, epoch)
        n = len(self.files)
        for k in range(n):
            # A header that looked fine at scan time but pixels that do not decode (truncated file, ...): warn
            # naming the file and take the next image (the batch keeps its size), or stop under `error`.
            try:
                return self._load(index + k)
            except BadImageError as err:
                if self.on_bad_image == "error":
                    raise
                warnings.warn(f"skipping {err}", stacklevel=2)
        raise BadImageError(
            f"none of the {n} training images in {sorted({str(f.parent) for f in self.files})} "
            "decodes (see the warnings above)"
        )


class SRValDataset(Dataset):
    """Whole images of one folder; HR mod-cropped to ``gt_mod`` (default: the scale).  LR from ``lr_dir`` or made
    on the device."""

    def __init__(self, root, scale=4, lr_dir=None, on_bad_image="warn", gt_mod: int | None = None):
        self.root, self.scale, self.lr_dir = Path(root).expanduser(), scale, lr_dir
        self.gt_mod = int(gt_mod or scale)
        if self.gt_mod % scale:
            raise ValueError(f"data.gt_mod={gt_mod} must be a multiple of data.scale={scale}")
        self.on_bad_image = on_bad_image
        self.files = filter_images(list_images(self.root), min_size=self.gt_mod, on_bad_image=on_bad_image)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict | None:
        """The item, or ``None`` (with a warning naming the file) when its pixels do not decode under
        ``on_bad_image: warn`` (loaders drop it: ``collate_skipping_bad``)."""
        try:
            gt = read_image(self.files[index])
            lq = None
            if self.lr_dir:
                lq = read_image(_find_lr(self.files[index], self.root, Path(self.lr_dir), self.scale))
        except BadImageError as err:
            if self.on_bad_image == "error":
                raise
            warnings.warn(f"skipping {err}", stacklevel=2)
            return None
        h, w = gt.shape[:2]
        gt = gt[: h - h % self.gt_mod, : w - w % self.gt_mod]
        item = {"gt": _to_tensor(gt), "name": self.files[index].stem}
        if lq is not None:
            item["lq"] = _to_tensor(lq)
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
        lr_margin: int | str = "auto",
        align_crop: bool = True,
        gt_mod: int | None = None,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        on_bad_image: str = "warn",
        dataset_enlarge_ratio: int = 1,
        seed: int | None = None,
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
        if lr_margin == "auto":
            lr_margin = support_margin(scale)
        if not isinstance(lr_margin, int) or lr_margin < 0 or lr_margin % scale:
            raise ValueError(
                f"data.lr_margin must be 'auto' or a non-negative multiple of data.scale={scale}, got {lr_margin!r}"
            )
        if lr_margin and lr_margin < support_margin(scale):
            warnings.warn(
                f"data.lr_margin={lr_margin} is less than the x{scale} bicubic kernel's support "
                f"({support_margin(scale)}): the training LR's outer rings will differ from the whole-image LR",
                stacklevel=2,
            )
        self.lr_margin, self.align_crop = lr_margin, bool(align_crop)
        self.gt_mod = int(gt_mod or scale)
        if self.gt_mod % scale:
            raise ValueError(f"data.gt_mod={gt_mod} must be a multiple of data.scale={scale}")
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.on_bad_image = on_bad_image
        self.dataset_enlarge_ratio = dataset_enlarge_ratio
        # The training order and every crop/flip derive from this seed (datamodules/samplers.py); default: the
        # run's seed (seed_everything sets PL_GLOBAL_SEED).
        self.seed = int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))
        self.val_names = [folder_name(d) for d in self.val_dirs]
        self.test_names = [folder_name(d) for d in self.test_dirs]
        self.train_set = None
        self.val_sets: list[SRValDataset] = []
        self.test_sets: list[SRValDataset] = []

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = SRTrainDataset(
                self.train_dirs,
                self.lr_train_dirs,
                self.scale,
                self.gt_size,
                self.use_hflip,
                self.use_rot,
                self.on_bad_image,
                self.dataset_enlarge_ratio,
                self.lr_margin,
                self.align_crop,
                self.seed,
            )
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = [
                SRValDataset(d, self.scale, on_bad_image=self.on_bad_image, gt_mod=self.gt_mod) for d in self.val_dirs
            ]
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = [
                SRValDataset(d, self.scale, on_bad_image=self.on_bad_image, gt_mod=self.gt_mod) for d in self.test_dirs
            ]

    def _loader_kwargs(self) -> dict:
        return dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=worker_init,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def _loader(self, ds, batch_size, shuffle, drop_last, sampler=None):
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            sampler=sampler,
            collate_fn=collate_skipping_bad,
            **self._loader_kwargs(),
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"{len(self.train_set.files)} training images x data.dataset_enlarge_ratio="
                f"{self.dataset_enlarge_ratio} in {self.train_dirs} is fewer than one batch "
                f"(data.batch_size={self.batch_size}): raise the ratio or lower the batch size"
            )
        # Resumable order (a resumed run continues the epoch where it stopped, with the same crops and flips).
        return resumable_train_loader(
            self.train_set, self.batch_size, self.seed, getattr(self, "trainer", None), **self._loader_kwargs()
        )

    def _eval_loaders(self, sets) -> list[DataLoader]:
        # Whole images differ in size: batch 1 unless they happen to match.  Under DDP each image is evaluated
        # once, on one rank (no padding duplicates; datamodules/samplers.py).
        loaders = []
        for ds in sets:
            ds, sampler = eval_dataset_and_sampler(ds, getattr(self, "trainer", None))
            loaders.append(self._loader(ds, self.val_batch_size, shuffle=False, drop_last=False, sampler=sampler))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        """``data.test_dirs`` (default: the validation folders), as validation; ``train.py test_after_train=true``."""
        return self._eval_loaders(self.test_sets)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if batch is None:  # an evaluation batch whose every image failed to decode (warned about by name)
            return batch
        if "gt_ctx" in batch:  # training crops with their context margin
            batch["gt"], batch["lq"] = lr_from_context(
                batch.pop("gt_ctx"), self.scale, self.lr_margin, self.lr_quantize
            )
        elif "lq" not in batch:
            batch["lq"] = make_lr(batch["gt"], self.scale, self.lr_quantize)
        return batch


def folder_name(path: str) -> str:
    """Name a folder for metric keys: its last component (``.../val/Set5`` -> ``Set5``)."""
    return os.path.basename(os.path.normpath(str(path))) or str(path)
