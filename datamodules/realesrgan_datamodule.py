"""Real-ESRGAN training data: HR folders, LR synthesised on the device by the second-order degradation model
(Wang et al. 2021, arXiv 2107.10833; ``realesrgan/data/realesrgan_dataset.py`` + ``RealESRGANModel.feed_data``).

Workers (``RealESRGANTrainDataset``): an HR patch of ``crop_pad_size`` (Real-ESRGAN: 400; images smaller are
reflect-padded), flips (Real-ESRGAN: hflip only), and the sample's three kernels (``kernel1``, ``kernel2``,
``sinc_kernel``) from the worker's seeded generator.

Device (``on_after_batch_transfer``): USM-sharpen the patch (``degradation.usm_input``), degrade it
(``synthesis.realesrgan.RealESRGANDegradation``), take a random ``gt_size`` crop with its aligned LR crop, pass
the pair through the training-pair pool (``degradation.pool_size``, Real-ESRGAN's ``queue_size``: mixes degradations
of several batches, since a batch shares its resize factor), and add ``gt_usm`` (USM of the GT crop) for the
recipes that use sharpened targets.  The batch-level and the per-sample/per-pixel draws come from two generators
seeded from ``degradation.seed`` and the rank; their states are saved in checkpoints (the pool's contents are not,
as in Real-ESRGAN).

Validation: whole images with bicubic LR (as the ESRGAN data), or with ``val_degradation=true`` the same
degradation model with kernels and draws seeded per image name, so every validation sees the same LR.
"""

from __future__ import annotations

import zlib

import albumentations as A
import cv2
import numpy as np
import torch

from datamodules.sr_datamodule import SRDataModule, SRTrainDataset, _global_rank
from ops.blur_kernels import sample_degradation_kernels
from ops.degradations import USMSharp
from synthesis.realesrgan import RealESRGANDegradation

KERNEL_KEYS = ("kernel1", "kernel2", "sinc_kernel")


class RealESRGANTrainDataset(SRTrainDataset):
    """HR patches of ``crop_pad_size`` with flips, plus the sample's degradation kernels."""

    def __init__(
        self,
        dirs,
        kernels: dict,
        crop_pad_size: int = 400,
        min_size: int = 256,
        use_hflip: bool = True,
        use_rot: bool = False,
        on_bad_image: str = "warn",
        enlarge_ratio: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dirs,
            None,
            scale=1,
            gt_size=min_size,
            use_hflip=False,
            use_rot=False,
            on_bad_image=on_bad_image,
            enlarge_ratio=enlarge_ratio,
            seed=seed,
        )
        self.kernels = kernels
        self.crop_pad_size = crop_pad_size
        # Real-ESRGAN: reflect-101 pad (bottom/right) to 400, random 400 crop; hflip, and with use_rot vflip + rot90.
        aug = [
            A.PadIfNeeded(crop_pad_size, crop_pad_size, position="top_left", border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(crop_pad_size, crop_pad_size),
        ]
        if use_hflip:
            aug.append(A.HorizontalFlip(p=0.5))
        if use_rot:
            aug += [A.VerticalFlip(p=0.5), A.Transpose(p=0.5)]
        self.aug = A.Compose(aug)
        self._seeded_pid = None  # re-seed the new Compose too

    def _load(self, index: int) -> dict:
        item = super()._load(index)  # self._rng / the augmentations seeded per sample (SRTrainDataset._seed)
        for key, kernel in sample_degradation_kernels(self._rng, self.kernels).items():
            item[key] = torch.from_numpy(kernel)
        return item


class RealESRGANDataModule(SRDataModule):
    """``SRDataModule`` whose training LR is Real-ESRGAN's degradation of the HR patch.  ``degradation``: see
    ``conf/data/degradation/realesrgan.yaml``."""

    def __init__(self, degradation: dict, crop_pad_size: int = 400, val_degradation: bool = False, **kwargs) -> None:
        kwargs.setdefault("use_rot", False)
        super().__init__(**kwargs)
        if self.lr_train_dirs:
            raise ValueError(
                "data.lr_train_dirs: the Real-ESRGAN data synthesises its LR; use data=div2k for pre-made LR"
            )
        if crop_pad_size % self.scale or crop_pad_size < self.gt_size:
            raise ValueError(
                f"data.crop_pad_size={crop_pad_size} must be a multiple of data.scale={self.scale} "
                f"and at least data.gt_size={self.gt_size}"
            )
        degradation = _plain(degradation)
        self.degradation_cfg = degradation
        self.crop_pad_size = crop_pad_size
        self.val_degradation = val_degradation
        self.kernels = _plain(degradation["kernels"])
        self.usm_input = bool(degradation.get("usm_input", True))
        self.pool_size = int(degradation.get("pool_size", 0))
        if self.pool_size and self.pool_size % self.batch_size:
            raise ValueError(
                f"data.degradation.pool_size={self.pool_size} must be a multiple of data.batch_size="
                f"{self.batch_size} (Real-ESRGAN queue_size); 0 disables the pool"
            )
        self.seed = int(degradation.get("seed", 0) or 0)
        self.degrade = RealESRGANDegradation(
            scale=self.scale,
            first=_plain(degradation["first"]),
            second=_plain(degradation["second"]),
            final=_plain(degradation.get("final")),
            resize_modes=list(degradation.get("resize_modes", ("area", "bilinear", "bicubic"))),
            jpeg=_plain(degradation.get("jpeg")),
        )
        self.usm = USMSharp(**_plain(degradation.get("usm") or {}))
        self._gen_cpu: torch.Generator | None = None
        self._gen_dev: torch.Generator | None = None
        self._pending_state: dict | None = None
        self._pool_lq = self._pool_gt = None
        self._pool_ptr = 0
        self._calls = 0  # training batches synthesised

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = RealESRGANTrainDataset(
                self.train_dirs,
                self.kernels,
                self.crop_pad_size,
                self.gt_size,
                self.use_hflip,
                self.use_rot,
                self.on_bad_image,
                self.dataset_enlarge_ratio,
                seed=self.seed,
            )
        super().setup(stage)

    # ------------------------------------------------------------------ generators
    def _generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        if self._gen_cpu is None or self._gen_dev.device != device:
            rank, pending = _global_rank(), self._pending_state
            # Ranks degrade differently.  A checkpoint holds rank 0's states only: rank 0 continues them exactly,
            # the other ranks re-seed from (seed, rank, batches synthesised so far) so that they still differ.
            seed = self.seed + 1_000_003 * rank
            if pending is not None and rank != 0:
                seed += 7919 * int(pending.get("calls", 0))
            seed %= 2**63
            self._gen_cpu = torch.Generator().manual_seed(seed)
            self._gen_dev = torch.Generator(device=device).manual_seed(seed + 1)
            if pending is not None:
                self._calls = int(pending.get("calls", 0))
                if rank == 0:
                    self._gen_cpu.set_state(pending["cpu"])
                    if pending.get("device_type") == device.type:
                        self._gen_dev.set_state(pending["device"])
                self._pending_state = None
        return self._gen_cpu, self._gen_dev

    def state_dict(self) -> dict:
        if self._gen_cpu is None:
            return {}
        return {
            "cpu": self._gen_cpu.get_state(),
            "device": self._gen_dev.get_state(),
            "device_type": self._gen_dev.device.type,
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._pending_state = dict(state)
            self._gen_cpu = self._gen_dev = None

    # ------------------------------------------------------------------ synthesis
    @torch.no_grad()
    def synthesize(self, batch: dict) -> dict:
        """Degrade, crop, pool: the training pair of a batch that has ``gt`` and the kernels."""
        gt = batch["gt"]
        cpu, gen = self._generators(gt.device)
        self._calls += 1
        self.usm.to(gt.device)
        self.degrade.to(gt.device)
        src = self.usm(gt) if self.usm_input else gt
        lq = self.degrade(src, batch["kernel1"], batch["kernel2"], batch["sinc_kernel"], cpu, gen)
        gt, lq = self._paired_crop(gt, lq, cpu)
        gt, lq = self._pool(gt, lq, cpu)
        out = {k: v for k, v in batch.items() if k not in KERNEL_KEYS}
        out.update(gt=gt, lq=lq.contiguous(), gt_usm=self.usm(gt))
        return out

    def _paired_crop(
        self, gt: torch.Tensor, lq: torch.Tensor, cpu: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random ``gt_size`` crop per sample and the LR crop at the same place (offsets on the LR grid)."""
        s, lq_size = self.scale, self.gt_size // self.scale
        h, w = lq.shape[-2:]
        if (h, w) == (lq_size, lq_size):
            return gt, lq
        tops = torch.randint(0, h - lq_size + 1, (lq.shape[0],), generator=cpu).tolist()
        lefts = torch.randint(0, w - lq_size + 1, (lq.shape[0],), generator=cpu).tolist()
        lq = torch.stack([lq[i, :, t : t + lq_size, l : l + lq_size] for i, (t, l) in enumerate(zip(tops, lefts))])
        gt = torch.stack(
            [
                gt[i, :, t * s : (t + lq_size) * s, l * s : (l + lq_size) * s]
                for i, (t, l) in enumerate(zip(tops, lefts))
            ]
        )
        return gt, lq

    def _pool(self, gt: torch.Tensor, lq: torch.Tensor, cpu: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-ESRGAN's training-pair pool: fill it first; once full, shuffle it, hand out its first ``B`` pairs
        and put the new batch in their place."""
        if not self.pool_size:
            return gt, lq
        b = gt.shape[0]
        if self._pool_gt is None or self._pool_gt.shape[1:] != gt.shape[1:] or self._pool_gt.device != gt.device:
            self._pool_gt = gt.new_zeros((self.pool_size, *gt.shape[1:]))
            self._pool_lq = lq.new_zeros((self.pool_size, *lq.shape[1:]))
            self._pool_ptr = 0
        if self._pool_ptr < self.pool_size:  # filling: the batch itself trains, and is kept
            self._pool_gt[self._pool_ptr : self._pool_ptr + b] = gt
            self._pool_lq[self._pool_ptr : self._pool_ptr + b] = lq
            self._pool_ptr += b
            return gt, lq
        idx = torch.randperm(self.pool_size, generator=cpu).to(gt.device)
        self._pool_gt, self._pool_lq = self._pool_gt[idx], self._pool_lq[idx]
        out_gt, out_lq = self._pool_gt[:b].clone(), self._pool_lq[:b].clone()
        self._pool_gt[:b], self._pool_lq[:b] = gt, lq
        return out_gt, out_lq

    @torch.no_grad()
    def degrade_for_validation(self, batch: dict) -> dict:
        """The degradation with kernels and draws seeded by each image's name: the same LR every validation."""
        gt = batch["gt"]
        names = batch.get("name") or [str(i) for i in range(gt.shape[0])]
        lqs = []
        self.usm.to(gt.device)
        self.degrade.to(gt.device)
        for i, name in enumerate(names):
            key = zlib.crc32(str(name).encode()) + self.seed * 7919
            rng = np.random.default_rng(key)
            kernels = {
                k: torch.from_numpy(v).to(gt.device)[None]
                for k, v in sample_degradation_kernels(rng, self.kernels).items()
            }
            cpu = torch.Generator().manual_seed(key)
            dev = torch.Generator(device=gt.device).manual_seed(key + 1)
            x = gt[i : i + 1]
            src = self.usm(x) if self.usm_input else x
            lqs.append(self.degrade(src, kernels["kernel1"], kernels["kernel2"], kernels["sinc_kernel"], cpu, dev))
        batch["lq"] = torch.cat(lqs)
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if batch is None:  # an evaluation batch whose every image failed to decode (warned about by name)
            return batch
        if "kernel1" in batch:
            return self.synthesize(batch)
        if self.val_degradation and "lq" not in batch:
            return self.degrade_for_validation(batch)
        return super().on_after_batch_transfer(batch, dataloader_idx)


def _plain(cfg):
    """OmegaConf nodes -> plain containers (lists stay lists)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg
