"""SC-FEGAN face data: images (+ face-part label maps, + eye landmarks), inputs synthesised on the device.

Workers only decode, resize and flip.  ``on_after_batch_transfer`` runs :class:`FaceInputSynthesizer` on the
batch's device (the GPU when there is one) and adds ``mask``, ``sketch``, ``color``, ``noise`` (official demo.py, paper
sec. 3.1).  Training masks depend on (seed, sample index, trainer.current_epoch); validation uses a separate seed and a
fixed epoch, so its masks never change between validation runs.

Sources
-------
* ``image_dir``: CelebA-HQ layout (``CelebA-HQ-img/{id}.jpg``) or any folder (tree) of images.
* ``label_dir`` (optional), ``label_format``:
  - ``single``: one 19-class label map per image, ``{label_dir}/{stem}.png`` (e.g. celebamask_mini/train/masks);
  - ``per_part``: CelebAMask-HQ ``CelebAMask-HQ-mask-anno/{0..14}/{id:05d}_{part}.png`` binary part masks, combined
    into one map in the standard order, later parts overwriting earlier ones (CelebAMask-HQ ``g_mask.py``), absent
    files = absent parts;
  - ``auto``: per_part when part files are found, else single.
* ``landmark_file`` (optional): CelebA ``list_landmarks_align_celeba.txt``-style text (a count line and a header
  line, then ``name lefteye_x lefteye_y righteye_x righteye_y ...``), positions in the original image's pixels.
* Split: ``split_file`` lists the validation images (file names, stems or relative paths, one per line, ``#``
  comments), or a permutation seeded by ``split_seed`` puts ``num_val`` images in validation (paper: 29,000 / 1,000).

Items: ``image`` float32 [3, R, R] in [-1, 1] (RGB), ``seg`` long [1, R, R] (all -1 without labels), ``eyes`` float32
[2, 2] (x, y) px, image-left eye first (NaN without landmarks), ``index`` long.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import BadImageError, filter_images, list_images, read_image, read_label_map
from datamodules.samplers import (
    collate_skipping_bad,
    eval_dataset_and_sampler,
    resumable_train_loader,
    sample_key,
    sample_rng,
)
from datamodules.workers import worker_init
from synthesis.pipeline import FaceInputSynthesizer

# CelebAMask-HQ part names in label order 1..18 (0 = background); CelebAMask-HQ's g_mask.py, celebamask_mini README.
CELEBAMASK_PARTS = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
NUM_CLASSES = len(CELEBAMASK_PARTS) + 1
# Left/right label pairs swapped by a horizontal flip (eyes 4/5, brows 6/7, ears 8/9).
_FLIP_LUT = np.arange(256, dtype=np.uint8)
for _a, _b in ((4, 5), (6, 7), (8, 9)):
    _FLIP_LUT[_a], _FLIP_LUT[_b] = _b, _a
_PART_FILE = re.compile(r"^(\d+)_(" + "|".join(CELEBAMASK_PARTS) + r")\.png$")


# ----------------------------------------------------------------------------------------------------------------
# Annotations
# ----------------------------------------------------------------------------------------------------------------


def scan_per_part(label_dir: str | os.PathLike) -> dict[int, list[tuple[int, Path]]]:
    """``{id: [(label, path), ...]}`` for CelebAMask-HQ part files in ``label_dir`` and its sub-folders (one level),
    each list in label order (so later parts overwrite earlier ones when painted in order)."""
    root = Path(label_dir)
    found: dict[int, list[tuple[int, Path]]] = {}
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        with os.scandir(folder) as it:
            for entry in it:
                m = _PART_FILE.match(entry.name)
                if m and entry.is_file():
                    label = CELEBAMASK_PARTS.index(m.group(2)) + 1
                    found.setdefault(int(m.group(1)), []).append((label, Path(entry.path)))
    for parts in found.values():
        parts.sort(key=lambda lp: lp[0])
    return found


def combine_parts(parts: list[tuple[int, Path]], size: tuple[int, int] | None = None) -> np.ndarray:
    """One uint8 label map from binary part masks (nonzero = part), painted in label order."""
    label_map = None
    for label, path in sorted(parts, key=lambda lp: lp[0]):
        part = read_label_map(path)
        if label_map is None:
            label_map = np.zeros(part.shape if size is None else size, dtype=np.uint8)
        if part.shape != label_map.shape:
            raise ValueError(
                f"{path}: part mask is {part.shape[1]}x{part.shape[0]}, expected "
                f"{label_map.shape[1]}x{label_map.shape[0]} like the other parts of this image"
            )
        label_map[part != 0] = label
    if label_map is None:
        if size is None:
            raise ValueError("no part files and no size given")
        label_map = np.zeros(size, dtype=np.uint8)
    return label_map


def detect_label_format(label_dir: str | os.PathLike) -> str:
    """``per_part`` when CelebAMask-HQ part files are present (top level or one sub-folder level), else ``single``."""
    root = Path(label_dir)
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        with os.scandir(folder) as it:
            for entry in it:
                if _PART_FILE.match(entry.name):
                    return "per_part"
    return "single"


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name and stem: [[lx, ly], [rx, ry]]}`` from a CelebA landmark text file (header lines are skipped)."""
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            tok = line.split()
            if len(tok) < 5:
                continue
            try:
                vals = [float(t) for t in tok[1:5]]
            except ValueError:
                continue  # the header line "lefteye_x lefteye_y ..."
            eyes = np.array(vals, dtype=np.float32).reshape(2, 2)
            out[tok[0]] = eyes
            out.setdefault(Path(tok[0]).stem, eyes)
    if not out:
        raise ValueError(f"{path}: no landmark rows (expected 'name lefteye_x lefteye_y righteye_x righteye_y ...')")
    return out


def read_split_file(path: str | os.PathLike) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")}


# ----------------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------------


class FaceDataset(Dataset):
    """Face images resized to ``resolution``, with optional label maps and eye positions.

    ``labels``: ``None``, or per image either a single label-map path (``single``), or a list of (label, path) part
    files (``per_part``), or ``None`` (no annotation for that image).
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[Any] | None = None,
        label_format: str = "single",
        eyes: list[np.ndarray | None] | None = None,
        resolution: int = 512,
        hflip: bool = False,
        on_bad_image: str = "warn",
        train: bool = False,
        seed: int = 0,
    ):
        if labels is not None and len(labels) != len(files):
            raise ValueError("labels must have one entry per file")
        if eyes is not None and len(eyes) != len(files):
            raise ValueError("eyes must have one entry per file")
        self.files = list(files)
        self.labels = labels
        self.label_format = label_format
        self.eyes = eyes
        self.resolution = int(resolution)
        self.hflip = bool(hflip)
        self.on_bad_image = on_bad_image
        self.train = bool(train)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.files)

    def _read_labels(self, entry, img_hw: tuple[int, int]) -> np.ndarray | None:
        if entry is None:
            return None
        if self.label_format == "per_part":
            label_map = combine_parts(entry, size=None if entry else img_hw)
            name = entry[0][1] if entry else "(no part files)"
        else:
            label_map = read_label_map(entry)
            name = entry
        h, w = label_map.shape[:2]
        ih, iw = img_hw
        if h * iw != w * ih:  # same aspect ratio required (CelebAMask-HQ: 512 maps for 1024 images)
            raise ValueError(f"{name}: label map is {w}x{h} but its image is {iw}x{ih} (the aspect ratios must match)")
        if label_map.max(initial=0) >= NUM_CLASSES:
            raise ValueError(f"{name}: label value {int(label_map.max())} is outside the {NUM_CLASSES} classes")
        return label_map

    def __getitem__(self, key) -> dict[str, torch.Tensor] | None:
        """Item ``key`` (an index, or a ``(index, epoch)`` key of the training sampler).  A file whose pixels do not
        decode: ``on_bad_image: error`` raises naming it; ``warn`` warns naming it and, in training, takes the next
        image (the batch keeps its size), otherwise returns ``None`` (dropped by ``collate_skipping_bad``)."""
        index, epoch = sample_key(key)
        n = len(self.files)
        for k in range(n if self.train else 1):
            i = (index + k) % n
            try:
                return self._item(i, epoch)
            except BadImageError as err:
                if self.on_bad_image == "error":
                    raise
                warnings.warn(f"skipping {err}", stacklevel=2)
        if self.train:
            raise BadImageError(f"none of the {n} training images decodes (see the warnings above)")
        return None

    def _item(self, index: int, epoch: int) -> dict[str, torch.Tensor]:
        path = self.files[index]
        img = read_image(path)  # float32 RGB [0, 1]
        ih, iw = img.shape[:2]
        res = self.resolution
        label_map = self._read_labels(self.labels[index], (ih, iw)) if self.labels is not None else None

        if (ih, iw) != (res, res):
            interp = cv2.INTER_AREA if ih >= res and iw >= res else cv2.INTER_CUBIC
            img = np.clip(cv2.resize(img, (res, res), interpolation=interp), 0.0, 1.0)
        if label_map is not None and label_map.shape != (res, res):
            label_map = cv2.resize(label_map, (res, res), interpolation=cv2.INTER_NEAREST)

        eyes = np.full((2, 2), np.nan, dtype=np.float32)
        if self.eyes is not None and self.eyes[index] is not None:
            eyes = np.asarray(self.eyes[index], dtype=np.float32).copy()
            eyes[:, 0] = (eyes[:, 0] + 0.5) * res / iw - 0.5  # pixel-centre aligned rescale
            eyes[:, 1] = (eyes[:, 1] + 0.5) * res / ih - 0.5

        # Per-sample randomness from (seed, epoch, index) only (datamodules/samplers.py): the same flip in any worker
        # and after a resume.
        if self.hflip and sample_rng(self.seed, epoch, index).random() < 0.5:
            img = img[:, ::-1]
            if label_map is not None:
                label_map = _FLIP_LUT[label_map[:, ::-1]]
            eyes = eyes[::-1].copy()
            eyes[:, 0] = res - 1 - eyes[:, 0]

        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) * 2.0 - 1.0
        if label_map is None:
            seg = torch.full((1, res, res), -1, dtype=torch.long)
        else:
            seg = torch.from_numpy(np.ascontiguousarray(label_map)).long().unsqueeze(0)
        return {
            "image": image.float(),
            "seg": seg,
            "eyes": torch.from_numpy(np.ascontiguousarray(eyes)),
            "index": torch.tensor(index, dtype=torch.long),
        }


# ----------------------------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------------------------


def _build_synthesizer(synthesis) -> FaceInputSynthesizer | None:
    if synthesis is None or isinstance(synthesis, torch.nn.Module):
        return synthesis
    if isinstance(synthesis, Mapping) or hasattr(synthesis, "items"):
        cfg = dict(synthesis.items())
        if "_target_" in cfg:
            from hydra.utils import instantiate

            return instantiate(synthesis)
        from synthesis.color import ColorMapExtractor
        from synthesis.masks import BrushStrokeMask, FreeFormMask, MaskGenerator
        from synthesis.sketch import SketchExtractor

        if isinstance(cfg.get("mask"), Mapping):
            m = dict(cfg["mask"])
            if isinstance(m.get("free_form"), Mapping):
                m["free_form"] = FreeFormMask(**m["free_form"])
            if isinstance(m.get("brush"), Mapping):
                m["brush"] = BrushStrokeMask(**m["brush"])
            cfg["mask"] = MaskGenerator(**m)
        if isinstance(cfg.get("sketch"), Mapping):
            cfg["sketch"] = SketchExtractor(**cfg["sketch"])
        if isinstance(cfg.get("color"), Mapping):
            cfg["color"] = ColorMapExtractor(**cfg["color"])
        return FaceInputSynthesizer(**cfg)
    raise TypeError(f"synthesis must be a FaceInputSynthesizer, a mapping of its arguments or None, got {synthesis!r}")


class FaceDataModule(LightningDataModule):
    """SC-FEGAN data (see the module docstring).

    ``synthesis``: a :class:`FaceInputSynthesizer` (what Hydra instantiates from a ``_target_`` node), a mapping of
    its keyword arguments (nested ``mask``/``sketch``/``color`` mappings are built too), ``None`` for the defaults,
    or ``False`` to return the raw batch.  ``min_size``: images smaller than this on either side are skipped
    (default: ``resolution``, i.e. no upscaling of small images).
    """

    def __init__(
        self,
        image_dir: str,
        label_dir: str | None = None,
        label_format: str = "auto",
        landmark_file: str | None = None,
        split_file: str | None = None,
        num_val: int = 1000,
        split_seed: int = 0,
        resolution: int = 512,
        hflip: bool = True,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        on_bad_image: str = "warn",
        min_size: int | None = None,
        seed: int = 0,
        val_seed_offset: int = 1_000_003,
        val_epoch: int = -1,
        synthesis: Any = None,
        task: str = "faces",
    ):
        super().__init__()
        if label_format not in ("auto", "single", "per_part"):
            raise ValueError(f"label_format must be auto, single or per_part, got {label_format!r}")
        if on_bad_image not in ("warn", "error"):
            raise ValueError(f"on_bad_image must be 'warn' or 'error', got {on_bad_image!r}")
        self.image_dir = str(image_dir)
        self.label_dir = None if label_dir in (None, "") else str(label_dir)
        self.label_format = label_format
        self.landmark_file = None if landmark_file in (None, "") else str(landmark_file)
        self.split_file = None if split_file in (None, "") else str(split_file)
        self.num_val = int(num_val)
        self.split_seed = int(split_seed)
        self.resolution = int(resolution)
        self.hflip = bool(hflip)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.on_bad_image = on_bad_image
        self.min_size = self.resolution if min_size is None else int(min_size)
        self.seed = int(seed)
        self.val_seed_offset = int(val_seed_offset)
        self.val_epoch = int(val_epoch)
        self.task = task
        if synthesis is False:
            self.synthesis = None
        else:
            built = _build_synthesizer(synthesis)
            self.synthesis = built if built is not None else FaceInputSynthesizer()
        self.train_set: FaceDataset | None = None
        self.val_set: FaceDataset | None = None

    # -- setup -------------------------------------------------------------------------------------------------
    def _split(self, files: list[Path], root: Path) -> tuple[list[Path], list[Path]]:
        if self.split_file is not None:
            wanted = read_split_file(self.split_file)

            def is_val(p: Path) -> bool:
                return p.name in wanted or p.stem in wanted or p.relative_to(root).as_posix() in wanted

            val = [p for p in files if is_val(p)]
            if not val:
                raise ValueError(f"split file {self.split_file!r} names none of the images in {str(root)!r}")
            matched = {p.name for p in val} | {p.stem for p in val} | {p.relative_to(root).as_posix() for p in val}
            missing = [w for w in wanted if w not in matched]
            if missing:
                warnings.warn(
                    f"split file {self.split_file!r}: {len(missing)} names not found (e.g. {missing[0]!r})",
                    stacklevel=2,
                )
            return [p for p in files if not is_val(p)], val
        if not 0 <= self.num_val < len(files):
            raise ValueError(
                f"num_val={self.num_val} must be in [0, {len(files)}) for the {len(files)} images in {str(root)!r}"
            )
        perm = np.random.default_rng(self.split_seed).permutation(len(files))
        val_idx = set(perm[: self.num_val].tolist())
        return ([p for i, p in enumerate(files) if i not in val_idx], [p for i, p in enumerate(files) if i in val_idx])

    def _annotations(self, files: list[Path]):
        labels = None
        fmt = "single"
        if self.label_dir is not None:
            label_root = Path(self.label_dir).expanduser()
            if not label_root.is_dir():
                raise FileNotFoundError(f"label folder {str(label_root)!r} does not exist or is not a folder")
            fmt = detect_label_format(label_root) if self.label_format == "auto" else self.label_format
            labels = []
            if fmt == "per_part":
                index = scan_per_part(label_root)
                for p in files:
                    labels.append(index.get(int(p.stem)) if p.stem.isdigit() else None)
            else:
                for p in files:
                    cand = label_root / f"{p.stem}.png"
                    labels.append(cand if cand.is_file() else None)
            missing = [p for p, lab in zip(files, labels) if lab is None]
            if len(missing) == len(files):
                raise FileNotFoundError(
                    f"no {fmt} label maps in {str(label_root)!r} match the images (e.g. {files[0].name}; "
                    f"expected {'{id}_{part}.png part files' if fmt == 'per_part' else files[0].stem + '.png'})"
                )
            if missing:
                warnings.warn(
                    f"{len(missing)} of {len(files)} images have no label map in {str(label_root)!r} "
                    f"(e.g. {missing[0]}); their seg is -1 (no hair union, k-means colours)",
                    stacklevel=2,
                )
        eyes = None
        if self.landmark_file is not None:
            table = read_landmarks(self.landmark_file)
            eyes = [table.get(p.name, table.get(p.stem)) for p in files]
            n_missing = sum(e is None for e in eyes)
            if n_missing:
                warnings.warn(
                    f"{n_missing} of {len(files)} images have no row in {self.landmark_file!r}; "
                    "their eyes come from the label map or the fixed aligned-face positions",
                    stacklevel=2,
                )
        return labels, fmt, eyes

    def _dataset(self, files: list[Path], train: bool) -> FaceDataset:
        labels, fmt, eyes = self._annotations(files)
        return FaceDataset(
            files,
            labels,
            fmt,
            eyes,
            self.resolution,
            hflip=self.hflip and train,
            on_bad_image=self.on_bad_image,
            train=train,
            seed=self.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = Path(self.image_dir).expanduser()
        files = list_images(root)
        train_files, val_files = self._split(files, root)
        train_files = filter_images(train_files, self.min_size, self.on_bad_image) if train_files else []
        val_files = filter_images(val_files, self.min_size, self.on_bad_image) if val_files else []
        self.train_set = self._dataset(train_files, train=True) if train_files else None
        self.val_set = self._dataset(val_files, train=False) if val_files else None

    # -- loaders -----------------------------------------------------------------------------------------------
    def _loader(self, dataset: FaceDataset | None, batch_size: int, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("no images for this split (call setup() first; check image_dir / num_val)")
        kwargs = dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=worker_init,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )
        trainer = getattr(self, "trainer", None)
        if train and len(dataset) >= batch_size:
            # Resumable order, sharded over DDP ranks (a resumed run continues the epoch where it stopped).  The
            # masks depend on (seed, index, epoch), so every rank synthesises different inputs.
            return resumable_train_loader(dataset, batch_size, self.seed, trainer, **kwargs)
        sampler = None
        if not train:
            # Under DDP each validation image once, on one rank (no padding duplicates; datamodules/samplers.py).
            dataset, sampler = eval_dataset_and_sampler(dataset, trainer)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=train,
            drop_last=False,
            collate_fn=collate_skipping_bad,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """The held-out split (the paper's 1,000 test images are this split)."""
        return self.val_dataloader()

    # -- synthesis on the device -------------------------------------------------------------------------------
    def _training(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return bool(trainer is not None and trainer.training)

    def synthesize(self, batch: dict, train: bool, epoch: int | None = None) -> dict:
        """Add the SC-FEGAN input channels to ``batch`` (already on its device).

        Training: (seed, index, epoch) with ``epoch`` defaulting to ``trainer.current_epoch``.  Otherwise the
        validation seed (``seed + val_seed_offset``) and the fixed ``val_epoch``: the same masks on every call.
        """
        if self.synthesis is None:
            return batch
        if train:
            if epoch is None:
                trainer = getattr(self, "trainer", None)
                epoch = int(trainer.current_epoch) if trainer is not None else 0
            seed = self.seed
        else:
            epoch, seed = self.val_epoch, self.seed + self.val_seed_offset
        self.synthesis.to(batch["image"].device)
        return self.synthesis(batch, epoch=epoch, seed=seed)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not isinstance(batch, dict) or "image" not in batch or "mask" in batch:
            return batch
        return self.synthesize(batch, train=self._training())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "split_seed": self.split_seed, "num_val": self.num_val}

    def load_state_dict(self, state_dict: dict) -> None:
        for key in ("seed", "split_seed", "num_val"):
            if key in state_dict and state_dict[key] != getattr(self, key):
                warnings.warn(
                    f"resuming with data {key}={getattr(self, key)} but the checkpoint used {state_dict[key]}",
                    stacklevel=2,
                )
