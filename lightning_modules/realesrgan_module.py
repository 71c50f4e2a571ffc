"""Real-ESRNet + Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833; ``RealESRNetModel`` and ``RealESRGANModel`` of
xinntao/Real-ESRGAN), as the ESRGAN recipe with three differences:

* targets: with USM-sharpened ground truth (Sec. 4.3), the L1 and perceptual losses compare with ``gt_usm``
  (``psnr.gt_usm``, ``gan.l1_gt_usm``, ``gan.percep_gt_usm``) and the discriminator sees the plain GT
  (``gan.gan_gt_usm: false``).  ``gt_usm`` comes with the batch from the Real-ESRGAN data (or is computed here);
* adversarial loss ``gan.gan_type``: ``vanilla`` (Real-ESRGAN: BCE on the U-Net discriminator's per-pixel logits,
  generator ``BCE(D(G(x)), 1)``, discriminator ``BCE(D(gt), 1)`` and ``BCE(D(G(x)), 0)``, each back-propagated on
  its own, unweighted) or ``ragan`` (ESRGAN's, unchanged);
* the stage schedule, EMA, optimisers, validation and weight files are ESRGAN's (``ESRGANModule``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_modules.base import to_primitive
from lightning_modules.esrgan_module import ESRGANModule
from losses.gan_loss import vanilla_gan_loss
from ops.degradations import USMSharp

GAN_TYPES = ("vanilla", "ragan")


class RealESRGANModule(ESRGANModule):
    def __init__(self, *args, usm: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        gan_type = self.gan_cfg.get("gan_type", "vanilla")
        if gan_type not in GAN_TYPES:
            raise ValueError(f"model.gan.gan_type must be one of {GAN_TYPES}, got {gan_type!r}")
        usm = to_primitive(usm)
        self.hparams["usm"] = usm  # plain dict: checkpoints load with weights_only=True
        self.usm = USMSharp(**(usm or {}))
        self._batch: dict = {}
        self.sample_caption = "bicubic of the LR | SR (EMA) | HR"

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self._batch = batch  # the step methods below pick their targets from it
        try:
            super().training_step(batch, batch_idx)
        finally:
            self._batch = {}

    def target(self, gt: torch.Tensor, sharpened: bool) -> torch.Tensor:
        """``gt`` or its USM-sharpened version (from the batch when the data made it)."""
        if not sharpened:
            return gt
        usm = self._batch.get("gt_usm")
        if usm is None or usm.shape != gt.shape:
            with torch.no_grad():
                usm = self.usm.to(gt.device)(gt)
        return usm

    def psnr_step(self, lq: torch.Tensor, gt: torch.Tensor) -> dict:
        return super().psnr_step(lq, self.target(gt, bool(self.psnr_cfg.get("gt_usm", True))))

    def generator_step(self, lq: torch.Tensor, gt: torch.Tensor, update_g: bool = True) -> tuple[torch.Tensor, dict]:
        c = self.gan_cfg
        if c.get("gan_type", "vanilla") == "ragan":
            return super().generator_step(lq, gt, update_g)
        opt_g, sched_g = self._opt("g_gan")
        out = self.net_g(lq)
        logs = {}
        if update_g:
            with self.frozen(self.net_d):
                l_pix = c["pixel_weight"] * F.l1_loss(out, self.target(gt, bool(c.get("l1_gt_usm", True))))
                l_percep = c["perceptual_weight"] * self.cri_perceptual(out, self.target(gt, bool(c.get("percep_gt_usm", True))))
                l_gan = c["gan_weight"] * vanilla_gan_loss(self.net_d(out), True)
                l_total = l_pix + l_percep + l_gan
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(l_total)
                opt_g.step()
            logs = {"l_pix": l_pix.detach(), "l_percep": l_percep.detach(), "l_g_gan": l_gan.detach(),
                    "l_g_total": l_total.detach()}
        sched_g.step()
        logs["lr_g"] = sched_g.get_last_lr()[0]
        return out, logs

    def discriminator_step(self, out: torch.Tensor, gt: torch.Tensor) -> dict:
        c = self.gan_cfg
        if c.get("gan_type", "vanilla") == "ragan":
            return super().discriminator_step(out, gt)
        opt_d, sched_d = self._opt("d")
        opt_d.zero_grad(set_to_none=True)
        real_d_pred = self.net_d(self.target(gt, bool(c.get("gan_gt_usm", False))))
        l_d_real = vanilla_gan_loss(real_d_pred, True)
        self.manual_backward(l_d_real)
        fake_d_pred = self.net_d(out.detach().clone())
        l_d_fake = vanilla_gan_loss(fake_d_pred, False)
        self.manual_backward(l_d_fake)
        opt_d.step()
        sched_d.step()
        return {"l_d_real": l_d_real.detach(), "l_d_fake": l_d_fake.detach(),
                "out_d_real": real_d_pred.detach().mean(), "out_d_fake": fake_d_pred.detach().mean(),
                "lr_d": sched_d.get_last_lr()[0]}
