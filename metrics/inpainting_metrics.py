"""Face-editing metrics: L1, PSNR and SSIM on the whole image and inside the edited (masked) region.

Images are RGB in [0, 1], ``[B, 3, H, W]``; ``mask`` is ``[B, 1, H, W]`` with 1 = edited.  Values are
per image (``[B]``).  SSIM uses the usual 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2,
with reflect padding so that the map covers every pixel and can be averaged inside the mask.
The paper reports no numbers (arXiv 1902.06838: figures only); these are this project's, computed on a fixed, seeded
set of masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(device, dtype, size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(img: Tensor, ref: Tensor) -> Tensor:
    """Per-pixel SSIM, averaged over channels: ``[B, 1, H, W]``.

    float32: CPU float64 convolutions are an order of magnitude slower, and [0, 1] data needs no more.
    """
    img, ref = img.float(), ref.float()
    c = img.shape[1]
    g = _gaussian_window(img.device, img.dtype)
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(x: Tensor) -> Tensor:
        x = F.pad(x, (5, 5, 5, 5), mode="reflect")
        return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)

    mu1, mu2 = blur(img), blur(ref)
    s11 = blur(img * img) - mu1**2
    s22 = blur(ref * ref) - mu2**2
    s12 = blur(img * ref) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return m.mean(dim=1, keepdim=True)


def _psnr(mse: Tensor) -> Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def inpainting_metrics(out: Tensor, gt: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """``l1``, ``psnr``, ``ssim`` on the whole image and ``l1_mask``, ``psnr_mask``, ``ssim_mask`` inside it.

    Region means weight each pixel by the mask; an image with an empty mask gets NaN for the region
    metrics (callers skip non-finite values).
    """
    out, gt, mask = out.double().clamp(0, 1), gt.double(), mask.double()
    err = (out - gt).abs()
    sq = (out - gt) ** 2
    area = mask.sum(dim=(1, 2, 3)) * out.shape[1]
    smap = ssim_map(out, gt)
    nan = torch.full_like(area, float("nan"))
    region = lambda num, denom: torch.where(denom > 0, num / denom.clamp_min(1e-12), nan)  # noqa: E731
    return {
        "l1": err.mean(dim=(1, 2, 3)),
        "psnr": _psnr(sq.mean(dim=(1, 2, 3))),
        "ssim": smap.mean(dim=(1, 2, 3)),
        "l1_mask": region((err * mask).sum(dim=(1, 2, 3)), area),
        "psnr_mask": torch.where(area > 0, _psnr(region((sq * mask).sum(dim=(1, 2, 3)), area)), nan),
        "ssim_mask": region((smap * mask).sum(dim=(1, 2, 3)), mask.sum(dim=(1, 2, 3))),
    }
