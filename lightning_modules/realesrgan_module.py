"""Real-ESRNet + Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833; ``RealESRNetModel`` and ``RealESRGANModel`` of
xinntao/Real-ESRGAN), as the ESRGAN recipe with its training pair extended by the sharpened ground truth:

* targets: with USM-sharpened ground truth (Sec. 4.3), the L1 and perceptual losses compare with ``gt_usm``
  (``psnr.gt_usm``, ``gan.l1_gt_usm``, ``gan.percep_gt_usm``) and the discriminator sees the plain GT
  (``gan.gan_gt_usm: false``).  ``gt_usm`` comes with the batch from the Real-ESRGAN data (or is computed here);
* adversarial loss ``gan.gan_type``: ``vanilla`` (the default here; ESRGANModule's vanilla branch: BCE on the U-Net
  discriminator's per-pixel logits) or ``ragan`` (ESRGAN's, unchanged: plain GT targets);
* the stage schedule, EMA, optimisers, validation and weight files are ESRGAN's (``ESRGANModule``).
"""

from __future__ import annotations

import torch

from lightning_modules.base import to_primitive
from lightning_modules.esrgan_module import ESRGANModule
from ops.degradations import USMSharp


class RealESRGANModule(ESRGANModule):
    default_gan_type = "vanilla"  # Real-ESRGAN's gan yml

    def __init__(self, *args, usm: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        usm = to_primitive(usm)
        self.hparams["usm"] = usm  # plain dict: checkpoints load with weights_only=True
        self.usm = USMSharp(**(usm or {}))
        self.sample_caption = "bicubic of the LR | SR (EMA) | HR"

    def training_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``gt_usm`` from the batch when the data made it, else BasicSR's USMSharp of ``gt``."""
        gt = batch["gt"]
        usm = batch.get("gt_usm")
        if usm is None or usm.shape != gt.shape:
            with torch.no_grad():
                usm = self.usm.to(gt.device)(gt)
        return batch["lq"], gt, usm
