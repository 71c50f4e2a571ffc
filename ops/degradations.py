"""Batched degradation operations on the device (Real-ESRGAN, arXiv 2107.10833 Sec. 3; BasicSR
``basicsr/data/degradations.py`` ``*_pt`` functions and ``basicsr/utils/img_process_util.py``).

Images are ``[B, C, H, W]`` floats in [0, 1].  Randomness comes from an explicit ``torch.Generator`` on the
image's device, so a seeded generator reproduces the same degradations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RESIZE_MODES = ("area", "bilinear", "bicubic")
# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale (which Real-ESRGAN uses for gray Poisson noise).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def filter2d(img: Tensor, kernel: Tensor) -> Tensor:
    """Filter each image with its own ``k x k`` kernel (``kernel`` ``[B, k, k]``, or ``[k, k]`` / ``[1, k, k]``
    for all), reflect-padded so the size is kept (BasicSR ``filter2D``).  Correlation, as cv2.filter2D; the
    Real-ESRGAN kernels are point-symmetric, so it equals convolution for them."""
    if kernel.dim() == 2:
        kernel = kernel[None]
    k = kernel.shape[-1]
    if k % 2 != 1 or kernel.shape[-2] != k:
        raise ValueError(f"filter2d needs square odd kernels, got shape {tuple(kernel.shape)}")
    b, c, h, w = img.shape
    if kernel.shape[0] not in (1, b):
        raise ValueError(f"filter2d: {kernel.shape[0]} kernels for a batch of {b}")
    kernel = kernel.to(img.dtype)
    pad = k // 2
    if pad >= min(h, w):  # reflect padding needs pad < size (tiny images after a strong downscale): replicate
        x = F.pad(img, (pad, pad, pad, pad), mode="replicate")
    else:
        x = F.pad(img, (pad, pad, pad, pad), mode="reflect")
    if kernel.shape[0] == 1:
        return F.conv2d(x.reshape(b * c, 1, h + 2 * pad, w + 2 * pad), kernel[:, None]).view(b, c, h, w)
    weight = kernel[:, None].repeat_interleave(c, dim=0)  # [B*C, 1, k, k]: image i's channels share kernel i
    return F.conv2d(x.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c).view(b, c, h, w)


def gaussian_kernel_1d(size: int, sigma: float = 0.0) -> Tensor:
    """cv2.getGaussianKernel: sigma <= 0 means ``0.3 * ((size - 1) / 2 - 1) + 0.8``."""
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


class USMSharp(nn.Module):
    """Unsharp masking of the ground truth (Real-ESRGAN Sec. 4.3, BasicSR ``USMSharp``):
    ``K = clip(I + w (I - B), 0, 1)``, mask ``|I - B| * 255 > threshold`` softened by the same blur,
    ``out = mask K + (1 - mask) I``, B = Gaussian blur of size ``radius`` (odd; 51 from 50, sigma 8 by cv2's rule).
    The 2-D Gaussian is separable, so it is applied as two 1-D passes (same values, 51x fewer operations)."""

    def __init__(self, radius: int = 50, sigma: float = 0.0, weight: float = 0.5, threshold: float = 10) -> None:
        super().__init__()
        radius = radius + 1 if radius % 2 == 0 else radius
        self.radius, self.weight, self.threshold = radius, weight, threshold
        self.register_buffer("kernel", gaussian_kernel_1d(radius, sigma).float(), persistent=False)

    def blur(self, img: Tensor) -> Tensor:
        b, c, h, w = img.shape
        k, pad = self.kernel.to(img.dtype), self.radius // 2
        mode = "reflect" if pad < min(h, w) else "replicate"
        x = F.pad(img, (pad, pad, pad, pad), mode=mode).reshape(b * c, 1, h + 2 * pad, w + 2 * pad)
        x = F.conv2d(x, k.view(1, 1, -1, 1))
        x = F.conv2d(x, k.view(1, 1, 1, -1))
        return x.view(b, c, h, w)

    def forward(self, img: Tensor) -> Tensor:
        residual = img - self.blur(img)
        mask = (residual.abs() * 255 > self.threshold).to(img.dtype)
        soft_mask = self.blur(mask)
        sharp = (img + self.weight * residual).clamp(0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


def _per_sample(value, b: int, ref: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    return t.expand(b).reshape(b, 1, 1, 1) if t.dim() == 0 else t.reshape(b, 1, 1, 1)


def gaussian_noise(img: Tensor, sigma, gray, generator: torch.Generator | None = None) -> Tensor:
    """Additive N(0, (sigma/255)^2) noise; ``sigma`` (255 scale) and ``gray`` (bool: one noise plane for all
    channels) per sample or scalar.  Returns the noise only."""
    b, c, h, w = img.shape
    sigma = _per_sample(sigma, b, img) / 255.0
    gray = _per_sample(gray, b, img)
    colour = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype)
    mono = torch.randn((b, 1, h, w), generator=generator, device=img.device, dtype=img.dtype)
    return (colour * (1 - gray) + mono * gray) * sigma


def _levels(img8: Tensor) -> Tensor:
    """Per sample ``2 ** ceil(log2(number of distinct 8-bit values))`` (BasicSR/skimage's Poisson count scale)."""
    b = img8.shape[0]
    idx = (img8 * 255).round().long().clamp(0, 255).reshape(b, -1)
    present = torch.zeros(b, 256, device=img8.device, dtype=torch.bool)
    present.scatter_(1, idx, True)  # batched torch.unique: which levels occur
    n = present.sum(1).clamp(min=1).to(img8.dtype)
    return torch.exp2(torch.ceil(torch.log2(n))).reshape(b, 1, 1, 1)


def poisson_noise(img: Tensor, scale, gray, generator: torch.Generator | None = None) -> Tensor:
    """Shot noise (BasicSR ``generate_poisson_noise_pt``): on the image rounded to 8-bit levels x8,
    ``Poisson(x8 * vals) / vals - x8`` with ``vals`` = 2^ceil(log2(#levels)), so the variance in [0, 1] units is
    ``x8 / vals`` (the mean); gray noise uses the BT.601 luma plane for all channels.  Times ``scale``."""
    b = img.shape[0]
    gray = _per_sample(gray, b, img)
    img8 = (img * 255).round().clamp(0, 255) / 255
    vals = _levels(img8)
    noise = torch.poisson(img8 * vals, generator=generator) / vals - img8
    if bool((gray > 0).any()):  # as BasicSR: the gray plane only when some sample needs it
        wts = torch.tensor(GRAY_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
        luma8 = ((img * wts).sum(1, keepdim=True) * 255).round().clamp(0, 255) / 255
        lvals = _levels(luma8)
        mono = torch.poisson(luma8 * lvals, generator=generator) / lvals - luma8
        noise = noise * (1 - gray) + mono * gray
    return noise * _per_sample(scale, b, img)


def resize(img: Tensor, mode: str, scale: float | None = None, size: tuple[int, int] | None = None) -> Tensor:
    """torch resize as Real-ESRGAN calls it: ``area`` (box average), ``bilinear`` or ``bicubic``
    (align_corners=False, no antialiasing), by ``scale`` (output ``floor(H * scale)``) or to ``size``."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if size is not None:
        size = (max(1, int(size[0])), max(1, int(size[1])))
        if tuple(img.shape[-2:]) == size:
            return img
        return F.interpolate(img, size=size, mode=mode)
    if scale == 1:
        return img
    h, w = img.shape[-2:]
    if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
        return F.interpolate(img, size=(max(1, math.floor(h * scale)), max(1, math.floor(w * scale))), mode=mode)
    return F.interpolate(img, scale_factor=scale, mode=mode)


def sample_resize_scale(probs: Sequence[float], scale_range: Sequence[float], generator: torch.Generator) -> float:
    """Real-ESRGAN's random resize factor: up (U(1, max)), down (U(min, 1)) or keep (1) with ``probs``."""
    p = torch.as_tensor(list(probs), dtype=torch.float64)
    kind = int(torch.multinomial(p / p.sum(), 1, generator=generator))
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if kind == 0:
        return 1.0 + u * (scale_range[1] - 1.0)
    if kind == 1:
        return scale_range[0] + u * (1.0 - scale_range[0])
    return 1.0


def sample_resize_mode(generator: torch.Generator, modes: Sequence[str] = RESIZE_MODES) -> str:
    return modes[int(torch.randint(len(modes), (), generator=generator))]
