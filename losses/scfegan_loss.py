"""SC-FEGAN losses (arXiv 1902.06838 sec. 3.3), with the paper's names and weights.

Conventions: images in [-1, 1]; ``mask`` is ``[B, 1, H, W]`` with 1 = erased/regenerated
region (broadcast over channels); I_gen = G(x), I_comp = composite(I_gen, I_gt, M).

Totals (assembled by the caller, weights in :data:`PAPER_WEIGHTS`):

* L_G = L_ppxl + sigma*L_percept + beta*L_G_SN + gamma*(L_style(I_gen) + L_style(I_comp)) + upsilon*L_tv
* L_D = E[1 - D(I_gt)] + E[1 + D(I_comp)] + theta*L_GP + epsilon*E[D(I_gt)^2]

The drift term belongs to D (it has no gradient w.r.t. G; PGGAN's epsilon_drift, as mmagic's DiscShiftLoss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAPER_WEIGHTS: dict[str, float] = {
    "alpha": 6.0,  # per-pixel hole weight: not given by the paper (6 as PConv: mmagic base_pconv.py)
    "sigma": 0.05,  # perceptual
    "gamma": 120.0,  # style
    "upsilon": 0.1,  # total variation
    "beta": 0.001,  # G adversarial
    "theta": 10.0,  # gradient penalty (D)
    "epsilon": 0.001,  # drift (D)
}
VGG_LAYERS = ("pool1", "pool2", "pool3")


class PerPixelLoss(nn.Module):
    """L_ppxl: L1 with the erased region weighted by ``alpha``, normalised by all elements N.

    ``L = (alpha * sum(M*|gen-gt|) + sum((1-M)*|gen-gt|)) / N`` with N = ``gen.numel()``.

    Choice (paper sec. 3.3, L_ppxl): the transcribed formula puts alpha on (1-M), which under
    M = 1 = erased is the *known* region, while the prose wants "alpha > 1 to give more weight
    to the erased part" (the formula was most likely copied from PConv, where M = 1 = valid).
    We follow the prose: alpha on the hole (default 6, PConv's hole weight).
    ``alpha_on="valid"`` gives the literal transcription instead.
    """

    def __init__(self, alpha: float = PAPER_WEIGHTS["alpha"], alpha_on: str = "hole") -> None:
        super().__init__()
        if alpha_on not in ("hole", "valid"):
            raise ValueError(f"alpha_on must be 'hole' or 'valid', got {alpha_on!r}")
        self.alpha = float(alpha)
        self.alpha_on = alpha_on

    def forward(self, gen: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        diff = (gen - gt).abs()
        w_hole, w_valid = (self.alpha, 1.0) if self.alpha_on == "hole" else (1.0, self.alpha)
        weight = mask * w_hole + (1 - mask) * w_valid
        return (diff * weight).sum() / diff.numel()


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """PConv Gram: ``F F^T / (C*H*W)`` per sample, ``[B, C, C]``, computed in fp32.

    fp32 because C*H*W sums of squared activations overflow fp16 under autocast.
    """
    b, c, h, w = feat.shape
    f = feat.float().reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def perceptual_loss_from_features(
    feats: Mapping[str, torch.Tensor], feats_gt: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``sum_q mean|phi_q(a) - phi_q(gt)|`` (= ||.||_1 / N_phi_q, summed over the layers)."""
    return sum(F.l1_loss(feats[k].float(), feats_gt[k].float()) for k in feats_gt)  # type: ignore[return-value]


def style_loss_from_features(feats: Mapping[str, torch.Tensor], feats_gt: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """PConv style loss: ``sum_q mean|Gram_q(a) - Gram_q(gt)|``, Gram = F F^T / (C*H*W).

    This is the paper's (sec. 3.3) ``sum_q (1/C_q^2) ||(G_q(a) - G_q(gt)) / N_q||_1`` with
    ``N_q = C_q*H_q*W_q``: the 1/C_q^2 is the mean over the C_q x C_q Gram entries.  The mean
    also runs over the batch (as PConv/mmagic), so the loss does not grow with batch size.
    """
    return sum(F.l1_loss(gram_matrix(feats[k]), gram_matrix(feats_gt[k])) for k in feats_gt)  # type: ignore[return-value]


class PerceptualStyleLoss(nn.Module):
    """L_percept and L_style on ImageNet VGG-16 pool1/pool2/pool3, for I_gen and I_comp.

    ``forward(gen, comp, gt)`` returns a dict of *unweighted* terms

    * ``"perceptual"`` = sum_q mean|phi(gen)-phi(gt)| + sum_q mean|phi(comp)-phi(gt)|
    * ``"style"`` = L_style(gen) + L_style(comp) (see :func:`style_loss_from_features`)

    plus ``"weighted"`` = sigma*perceptual + gamma*style.  VGG input: (x+1)/2 then ImageNet
    mean/std on RGB (``range_norm=True``); convert BGR data first.  The three images go
    through the VGG as one batch.

    Args:
        sigma, gamma: loss weights (paper: 0.05, 120).
        vgg_weights: ``"imagenet"``, a path, or ``"random"`` (tests only); see ``archs.vgg_features``.
        layers: VGG-16 layer names.
        extractor: an already-built feature extractor (returns a dict keyed by ``layers``);
            overrides ``vgg_weights``.
    """

    def __init__(
        self,
        sigma: float = PAPER_WEIGHTS["sigma"],
        gamma: float = PAPER_WEIGHTS["gamma"],
        vgg_weights: str = "imagenet",
        layers: Sequence[str] = VGG_LAYERS,
        extractor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if extractor is None:
            # Imported here: torchvision needs ``tv_compat`` first, which entry points handle;
            # the adversarial losses below stay usable without torchvision.
            from archs.vgg_features import VGGFeatureExtractor

            extractor = VGGFeatureExtractor(
                list(layers), arch="vgg16", weights=vgg_weights, use_input_norm=True, range_norm=True
            )
        self.vgg = extractor
        self.sigma = float(sigma)
        self.gamma = float(gamma)

    def forward(self, gen: torch.Tensor, comp: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        b = gen.shape[0]
        feats = self.vgg(torch.cat([gen, comp, gt.detach()], dim=0))
        f_gen = {k: v[:b] for k, v in feats.items()}
        f_comp = {k: v[b : 2 * b] for k, v in feats.items()}
        f_gt = {k: v[2 * b :] for k, v in feats.items()}
        perceptual = perceptual_loss_from_features(f_gen, f_gt) + perceptual_loss_from_features(f_comp, f_gt)
        style = style_loss_from_features(f_gen, f_gt) + style_loss_from_features(f_comp, f_gt)
        return {
            "perceptual": perceptual,
            "style": style,
            "weighted": self.sigma * perceptual + self.gamma * style,
        }


def total_variation_loss(comp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_tv on I_comp, restricted as PConv to the hole dilated by 1 px (region P).

    P = 3x3 max-pool of M.  A horizontal (vertical) difference |I(i,j+1) - I(i,j)| counts
    when both pixels are in P.  The sum is divided by N = ``comp.numel()`` (PConv's
    N_{I_comp}), not by the area of P, so the term scales with the hole size like L_ppxl.
    """
    region = F.max_pool2d(mask.float(), kernel_size=3, stride=1, padding=1)
    w_h = region[..., :, 1:] * region[..., :, :-1]
    w_v = region[..., 1:, :] * region[..., :-1, :]
    d_h = (comp[..., :, 1:] - comp[..., :, :-1]).abs()
    d_v = (comp[..., 1:, :] - comp[..., :-1, :]).abs()
    return ((d_h * w_h).sum() + (d_v * w_v).sum()) / comp.numel()


def generator_adversarial_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G_SN = -E[D(I_comp)] (weight beta applied by the caller)."""
    return -d_fake.mean()


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[1 - D(I_gt)] + E[1 + D(I_comp)]: the hinge loss *without* the ReLU (paper)."""
    return (1 - d_real).mean() + (1 + d_fake).mean()


def drift_loss(d_real: torch.Tensor) -> torch.Tensor:
    """E[D(I_gt)^2] (PGGAN drift).  Add ``epsilon * drift_loss`` to the *D* loss."""
    return d_real.float().pow(2).mean()


def gradient_penalty(
    discriminator: nn.Module,
    real_input: torch.Tensor,
    fake_input: torch.Tensor,
    mask: torch.Tensor,
    image_channels: int = 3,
    t: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """L_GP = E[(||grad_U D(U) * M||_2 - 1)^2] as DeepFill v1/neuralgym ``gan_ops.py:98-107``.

    ``real_input``/``fake_input`` are D inputs ``[B, C, H, W]`` whose first ``image_channels``
    are the image (I_gt / I_comp) and the rest the conditions (sketch, colour, mask), which are
    the same for both.  Only the image channels are interpolated, ``U = t*real + (1-t)*fake``
    with ``t ~ U(0, 1)`` per sample; the conditions are kept fixed (taken from ``real_input``).
    slopes = sqrt(sum_{c,h,w} grad^2 * M + eps) over the image channels (the gradient of
    the sum of D's patch map); ``eps`` keeps the sqrt differentiable when the mask is empty.
    Runs in fp32 with autocast off, with ``create_graph=True`` so it trains D.  ``fake_input``
    is detached.  ``t`` may be given (``[B]`` or ``[B,1,1,1]``) for reproducibility.
    """
    b = real_input.shape[0]
    real = real_input.detach().float()
    fake = fake_input.detach().float()
    if t is None:
        t = torch.rand(b, 1, 1, 1, device=real.device)
    t = t.to(real).reshape(b, 1, 1, 1)
    with torch.autocast(device_type=real.device.type, enabled=False):
        image = (t * real[:, :image_channels] + (1 - t) * fake[:, :image_channels]).requires_grad_(True)
        u = torch.cat([image, real[:, image_channels:]], dim=1)
        out = discriminator(u).float()
        (grad,) = torch.autograd.grad(out.sum(), image, create_graph=True)
        slopes = torch.sqrt((grad.pow(2) * mask.float()).sum(dim=(1, 2, 3)) + eps)
        return (slopes - 1).pow(2).mean()
