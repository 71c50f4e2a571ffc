"""PSNR / SSIM under the BasicSR evaluation protocol, in torch float64 (BasicSR ``basicsr/metrics/psnr_ssim.py``).

Protocol, per image:

1. quantise like BasicSR ``tensor2img``: clamp to [0, 1], ``* 255``, round (half to even, as numpy);
2. crop ``crop_border`` pixels from every side;
3. optionally take the MATLAB BT.601 studio-range Y channel (not rounded);
4. PSNR = 10 log10(255^2 / MSE) (inf when MSE = 0); SSIM with an 11x11 Gaussian window
   (sigma 1.5), valid region only, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; RGB SSIM is the mean
   of the per-channel SSIMs.

All functions take batched ``[B, C, H, W]`` float RGB tensors in [0, 1] (``[C, H, W]`` is treated
as a batch of one) and return one value per image, shape ``[B]``, float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ops.imresize import imresize

__all__ = [
    "tensor_to_uint8",
    "rgb_to_y",
    "calculate_psnr",
    "calculate_ssim",
    "sr_metrics",
    "modcrop",
    "bicubic_sr_baseline",
]

# MATLAB rgb2ycbcr, Y row: BT.601 coefficients scaled to studio range (219 levels, offset 16).
_Y_COEFFS = (65.481, 128.553, 24.966)


def _batched(x: Tensor) -> Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] or [C, H, W] tensor, got shape {tuple(x.shape)}")
    return x


def tensor_to_uint8(x: Tensor, as_uint8: bool = False) -> Tensor:
    """Quantise [0, 1] floats to the 256 uint8 levels, as BasicSR ``tensor2img``.

    Returns float64 values in {0, ..., 255} (or a uint8 tensor when ``as_uint8``).
    """
    q = (x.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0).round()  # round half to even, like numpy
    return q.to(torch.uint8) if as_uint8 else q


def rgb_to_y(x: Tensor) -> Tensor:
    """MATLAB ``rgb2ycbcr`` luma: ``[..., 3, H, W]`` RGB in **[0, 1]** -> ``[..., 1, H, W]`` Y in [16, 235].

    Y = 16 + 65.481 R + 128.553 G + 24.966 B; not rounded. For uint8-level input (0..255) pass
    ``x / 255``. Computed in float64.
    """
    if x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects 3 channels in dim -3, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    r, g, b = x.unbind(dim=-3)
    y = 16.0 + _Y_COEFFS[0] * r + _Y_COEFFS[1] * g + _Y_COEFFS[2] * b
    return y.unsqueeze(-3)


def _prepare(img: Tensor, ref: Tensor, crop_border: int, test_y_channel: bool) -> tuple[Tensor, Tensor]:
    """Quantise, crop and optionally convert to Y: two float64 tensors on the 0..255 scale."""
    img, ref = _batched(img), _batched(ref)
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {tuple(img.shape)} vs {tuple(ref.shape)}")
    out = []
    for t in (img, ref):
        q = tensor_to_uint8(t)
        if crop_border > 0:
            q = q[..., crop_border:-crop_border, crop_border:-crop_border]
        if test_y_channel and q.shape[-3] == 3:
            q = rgb_to_y(q / 255.0)  # gray (1-channel) images are their own Y, as in BasicSR
        out.append(q)
    if out[0].numel() == 0:
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {tuple(img.shape[-2:])} image")
    return out[0], out[1]


def _psnr(a: Tensor, b: Tensor) -> Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    psnr = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> +inf, as BasicSR
    return torch.where(mse == 0, torch.full_like(psnr, math.inf), psnr)


def calculate_psnr(img: Tensor, ref: Tensor, crop_border: int = 0, test_y_channel: bool = False) -> Tensor:
    """Per-image PSNR (dB), shape ``[B]``, of [0, 1] RGB tensors quantised to uint8 first."""
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    return _psnr(a, b)


def _gaussian_1d() -> list[float]:
    # cv2.getGaussianKernel(11, 1.5); BasicSR's 2-D window is its outer product with itself.
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    return (g / g.sum()).tolist()


def _ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image over channels, inputs float64 on the 0..255 scale."""
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    c, h, w = a.shape[1:]
    if h < 11 or w < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {h}x{w}")
    # The five statistics of every channel filtered in one go. The window is separable, so 11 + 11
    # shifted multiply-adds equal BasicSR's 11x11 filter2D (to float rounding) and, with no padding,
    # keep exactly its valid region [5:-5, 5:-5]; far faster than a float64 depthwise conv on CPU.
    g = _gaussian_1d()
    stats = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # [n, 5c, h, w]
    rows = stats[..., 0 : h - 10, :] * g[0]
    for i in range(1, 11):
        rows.add_(stats[..., i : i + h - 10, :], alpha=g[i])
    stats = rows[..., 0 : w - 10] * g[0]
    for i in range(1, 11):
        stats.add_(rows[..., i : i + w - 10], alpha=g[i])
    mu1, mu2, e11, e22, e12 = stats.split(c, dim=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = e11 - mu1_sq
    sigma2_sq = e22 - mu2_sq
    sigma12 = e12 - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)  # per channel, then the channel mean


def calculate_ssim(img: Tensor, ref: Tensor, crop_border: int = 0, test_y_channel: bool = False) -> Tensor:
    """Per-image SSIM, shape ``[B]``, of [0, 1] RGB tensors quantised to uint8 first."""
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    return _ssim(a, b)


def sr_metrics(sr: Tensor, hr: Tensor, crop_border: int = 0) -> dict[str, Tensor]:
    """``psnr_y``, ``ssim_y``, ``psnr_rgb``, ``ssim_rgb``: per-image ``[B]`` float64 tensors."""
    rgb_sr, rgb_hr = _prepare(sr, hr, crop_border, test_y_channel=False)
    if rgb_sr.shape[1] == 3:
        y_sr, y_hr = rgb_to_y(rgb_sr / 255.0), rgb_to_y(rgb_hr / 255.0)
    else:
        y_sr, y_hr = rgb_sr, rgb_hr
    return {
        "psnr_y": _psnr(y_sr, y_hr),
        "ssim_y": _ssim(y_sr, y_hr),
        "psnr_rgb": _psnr(rgb_sr, rgb_hr),
        "ssim_rgb": _ssim(rgb_sr, rgb_hr),
    }


def modcrop(x: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right of ``[..., H, W]`` so both sides are multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def bicubic_sr_baseline(hr: Tensor, scale: int = 4) -> tuple[Tensor, Tensor]:
    """The bicubic baseline (LR as BasicSR's ``generate_bicubic_img.m``): ``(lr, sr)``, both at uint8 levels, in [0, 1].

    ``hr`` ([B, 3, H, W] or [3, H, W], [0, 1]) is mod-cropped to a multiple of ``scale``; the LR is
    MATLAB-bicubic x1/scale rounded to uint8, the SR MATLAB-bicubic xscale of that LR, rounded.
    Compare ``sr`` with ``modcrop(hr, scale)``. Computed in float64, returned in ``hr.dtype``.
    """
    hr64 = modcrop(hr.detach().to(torch.float64), scale)
    lr = tensor_to_uint8(imresize(hr64, 1.0 / scale)) / 255.0
    sr = tensor_to_uint8(imresize(lr, float(scale))) / 255.0
    return lr.to(hr.dtype), sr.to(hr.dtype)
