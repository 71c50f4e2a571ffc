"""Pixel and perceptual losses with BasicSR semantics (``basicsr/losses/basic_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archs.vgg_features import VGGFeatureExtractor


class L1Loss(nn.Module):
    """Mean absolute error times ``loss_weight`` (ESRGAN: 1.0 in stage 1, 1e-2 in stage 2)."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * F.l1_loss(pred, target, reduction="mean")


class PerceptualLoss(nn.Module):
    """``perceptual_weight * sum_k layer_weights[k] * criterion(phi_k(x), phi_k(gt))``.

    ``phi`` is a frozen VGG (:class:`archs.vgg_features.VGGFeatureExtractor`).  ESRGAN uses
    ``{'conv5_4': 1.0}``: the *pre-activation* conv5_4 of VGG19, i.e. ``vgg19().features[:35]``.

    Inputs are RGB in [0, 1] (``range_norm=True`` for [-1, 1]); ImageNet normalisation is applied
    inside when ``use_input_norm``.  The ground truth's features are computed from ``gt.detach()``
    as in BasicSR: the target is never a source of gradient.

    Args:
        layer_weights: VGG layer name -> weight.
        vgg_type: ``"vgg19"`` or ``"vgg16"``.
        weights: ``"imagenet"``, a local ``.pth`` path, or ``"random"`` (tests only).
        use_input_norm, range_norm: see :class:`VGGFeatureExtractor`.
        perceptual_weight: overall factor (ESRGAN: 1.0).
        criterion: ``"l1"`` (mean), ``"l2"`` (mean squared) or ``"fro"`` (Frobenius norm of the
            difference, BasicSR's third option).

    Differs from BasicSR in returning one tensor, not ``(percep_loss, style_loss)``: the style
    term is unused by ESRGAN (``style_weight: 0``).
    """

    def __init__(
        self,
        layer_weights: dict[str, float] | None = None,
        vgg_type: str = "vgg19",
        weights: str = "imagenet",
        use_input_norm: bool = True,
        range_norm: bool = False,
        perceptual_weight: float = 1.0,
        criterion: str = "l1",
    ) -> None:
        super().__init__()
        if layer_weights is None:
            layer_weights = {"conv5_4": 1.0}
        if criterion not in ("l1", "l2", "fro"):
            raise ValueError(f"PerceptualLoss: criterion must be 'l1', 'l2' or 'fro', got {criterion!r}")
        # Plain dict (OmegaConf DictConfig from Hydra would otherwise leak into the module).
        self.layer_weights = {str(k): float(v) for k, v in dict(layer_weights).items()}
        self.perceptual_weight = perceptual_weight
        self.criterion = criterion
        self.vgg = VGGFeatureExtractor(
            layer_names=list(self.layer_weights),
            arch=vgg_type,
            weights=weights,
            use_input_norm=use_input_norm,
            range_norm=range_norm,
        )

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.criterion == "l1":
            return F.l1_loss(a, b)
        if self.criterion == "l2":
            return F.mse_loss(a, b)
        return torch.linalg.vector_norm(a - b)  # == torch.norm(a - b, p="fro") over all elements

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        x_features = self.vgg(x)
        gt_features = self.vgg(gt.detach())
        loss = x.new_zeros(())
        for name, weight in self.layer_weights.items():
            loss = loss + self._distance(x_features[name], gt_features[name]) * weight
        return loss * self.perceptual_weight
