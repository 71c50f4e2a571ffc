"""Batched JPEG compression + decompression in torch (the on-device JPEG step of Real-ESRGAN, which uses
BasicSR's ``DiffJPEG``, after Shin & Song 2017 "JPEG-resistant adversarial images").

Baseline JPEG, as libjpeg with its defaults (ITU-T T.81; IJG libjpeg ``jcparam.c``, ``jccolor.c``,
``jdcolor.c``):

1. RGB -> YCbCr (JFIF, full range): Y = .299 R + .587 G + .114 B, Cb/Cr offset by 128;
2. 4:2:0 chroma subsampling: each 2x2 block of Cb and Cr averaged; the image edge-extended to a multiple of 16
   (one MCU), as libjpeg does;
3. per 8x8 block, level shift -128 and the 2-D DCT-II ``F = D f D^T`` (``D[u, x] = c(u)/2 cos((2x+1) u pi / 16)``,
   c(0) = 1/sqrt2);
4. quantisation ``round(F / Q)`` with the standard luminance / chrominance tables of T.81 Annex K scaled by the
   quality: ``s = 5000 / q`` below 50, else ``200 - 2 q``; ``Q = clamp(floor((T s + 50) / 100), 1, 255)``
   (``table_rounding="libjpeg"``) or ``Q = T s / 100`` unrounded, as Real-ESRGAN's DiffJPEG
   (``table_rounding="none"``);
5. decoding: dequantise, inverse DCT, +128; chroma upsampled by libjpeg's "fancy" triangle filter (``chroma_upsampling="fancy"``, libjpeg's default:
   3/4 nearer + 1/4 farther sample, i.e. bilinear at half-pixel centres) or by pixel repetition, as Real-ESRGAN
   (``"nearest"``); YCbCr -> RGB, clipped to [0, 1].

``sample_rounding`` keeps every intermediate sample plane on 8-bit levels as libjpeg does (YCbCr after the colour
conversion, the downsampled and the upsampled chroma, the decoded components: rounded and clipped to 0..255);
Real-ESRGAN's DiffJPEG keeps them in float.

Entropy coding is lossless, so it is left out.  ``differentiable=True`` replaces each rounding by
``round(x) + (x - round(x))^3`` (DiffJPEG's approximation) so gradients pass; Real-ESRGAN uses the plain rounding.
tests/test_realesrgan_degradations.py measures the difference to PIL's encoder + decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# T.81 Annex K, Tables K.1 and K.2 (row-major: row = vertical frequency).
LUMA_TABLE = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
]
CHROMA_TABLE = [
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
]
RGB_TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]]
YCBCR_TO_RGB = [[1.0, 0.0, 1.402], [1.0, -0.344136286, -0.714136286], [1.0, 1.772, 0.0]]


def dct_matrix(n: int = 8) -> Tensor:
    """Orthonormal DCT-II matrix: ``D[u, x] = c(u) sqrt(2/n) cos((2x+1) u pi / (2n))``, c(0) = 1/sqrt2."""
    u = torch.arange(n, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None, :]
    d = math.sqrt(2 / n) * torch.cos((2 * x + 1) * u * math.pi / (2 * n))
    d[0] /= math.sqrt(2)
    return d


def quality_scale(quality: Tensor) -> Tensor:
    """libjpeg ``jpeg_quality_scaling`` in percent: 5000/q below 50, else 200 - 2q (q clamped to [1, 100])."""
    q = quality.clamp(1, 100)
    return torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)


def quant_tables(quality: Tensor, rounding: str = "libjpeg") -> tuple[Tensor, Tensor]:
    """Per-sample (luma, chroma) quantisation tables ``[B, 8, 8]`` for qualities ``[B]``."""
    s = quality_scale(quality.to(torch.float64)).view(-1, 1, 1)
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = torch.tensor(base, dtype=torch.float64, device=quality.device)
        if rounding == "libjpeg":
            tables.append(torch.floor((t * s + 50) / 100).clamp(1, 255))
        elif rounding == "none":
            tables.append(t * s / 100)
        else:
            raise ValueError(f"table_rounding must be 'libjpeg' or 'none', got {rounding!r}")
    return tables[0], tables[1]


def _round(x: Tensor, differentiable: bool) -> Tensor:
    r = torch.round(x)
    return r + (x - r) ** 3 if differentiable else r


def _blocks(x: Tensor) -> Tensor:
    """[B, H, W] -> [B, H/8, W/8, 8, 8]."""
    b, h, w = x.shape
    return x.view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(x: Tensor) -> Tensor:
    b, nh, nw = x.shape[:3]
    return x.permute(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def fancy_upsample2(x: Tensor) -> Tensor:
    """libjpeg's h2v2 "fancy" chroma upsampling of ``[B, h, w]``: each output sample is 3/4 the nearer input
    sample plus 1/4 the farther one, per axis, edges replicated (= bilinear, align_corners=False)."""
    return F.interpolate(x[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0]


class DiffJPEG(nn.Module):
    """JPEG round trip of ``[B, 3, H, W]`` RGB in [0, 1] at per-sample ``quality`` (float or ``[B]``, 1..100).

    Args:
        differentiable: smooth rounding (gradients flow) instead of ``torch.round``.
        table_rounding: ``"libjpeg"`` (integer tables, as real encoders) or ``"none"`` (Real-ESRGAN's DiffJPEG).
        chroma_upsampling: ``"fancy"`` (libjpeg's default decoder) or ``"nearest"`` (Real-ESRGAN's DiffJPEG).
        sample_rounding: keep the intermediate Y, Cb, Cr planes on 8-bit levels, as libjpeg does.
    """

    def __init__(
        self,
        differentiable: bool = False,
        table_rounding: str = "libjpeg",
        chroma_upsampling: str = "fancy",
        sample_rounding: bool = True,
    ) -> None:
        super().__init__()
        if chroma_upsampling not in ("fancy", "nearest"):
            raise ValueError(f"chroma_upsampling must be 'fancy' or 'nearest', got {chroma_upsampling!r}")
        quant_tables(torch.tensor([75.0]), table_rounding)  # validates the name
        self.differentiable, self.table_rounding = differentiable, table_rounding
        self.chroma_upsampling, self.sample_rounding = chroma_upsampling, sample_rounding
        self.register_buffer("dct", dct_matrix().float(), persistent=False)
        self.register_buffer("rgb2ycc", torch.tensor(RGB_TO_YCBCR), persistent=False)
        self.register_buffer("ycc2rgb", torch.tensor(YCBCR_TO_RGB), persistent=False)

    def _code(self, plane: Tensor, table: Tensor) -> Tensor:
        """Level shift, DCT, quantise, dequantise, inverse DCT of a ``[B, H, W]`` plane (H, W multiples of 8)."""
        d = self.dct.to(plane.dtype)
        blocks = _blocks(plane - 128.0)
        coef = d @ blocks @ d.t()
        q = table.to(plane.dtype)[:, None, None]
        coef = _round(coef / q, self.differentiable) * q
        out = _unblocks(d.t() @ coef @ d) + 128.0
        if self.sample_rounding:
            out = _round(out, self.differentiable).clamp(0, 255)
        return out

    def forward(self, x: Tensor, quality) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DiffJPEG expects [B, 3, H, W] RGB, got {tuple(x.shape)}")
        b, _, h, w = x.shape
        quality = torch.as_tensor(quality, dtype=torch.float64, device=x.device).flatten()
        quality = quality.expand(b) if quality.numel() == 1 else quality
        if quality.numel() != b:
            raise ValueError(f"DiffJPEG: {quality.numel()} qualities for a batch of {b}")
        qy, qc = quant_tables(quality, self.table_rounding)
        # Edge extension to whole 16x16 MCUs (libjpeg replicates the last column/row).
        ph, pw = (-h) % 16, (-w) % 16
        img = F.pad(x.clamp(0, 1) * 255.0, (0, pw, 0, ph), mode="replicate") if ph or pw else x.clamp(0, 1) * 255.0
        ycc = torch.einsum("ij,bjhw->bihw", self.rgb2ycc.to(x.dtype), img)
        if self.sample_rounding:  # libjpeg's colour converter and downsampler output 8-bit samples
            ycc = _round(ycc, self.differentiable)
        y, cb, cr = ycc[:, 0], ycc[:, 1] + 128.0, ycc[:, 2] + 128.0
        cb = F.avg_pool2d(cb[:, None], 2)[:, 0]
        cr = F.avg_pool2d(cr[:, None], 2)[:, 0]
        if self.sample_rounding:
            cb, cr = _round(cb, self.differentiable), _round(cr, self.differentiable)
        y = self._code(y, qy)
        cb, cr = self._code(cb, qc), self._code(cr, qc)
        if self.chroma_upsampling == "fancy":
            cb, cr = fancy_upsample2(cb), fancy_upsample2(cr)
        else:
            cb = cb.repeat_interleave(2, 1).repeat_interleave(2, 2)
            cr = cr.repeat_interleave(2, 1).repeat_interleave(2, 2)
        if self.sample_rounding:  # libjpeg's upsampler outputs 8-bit samples
            cb, cr = _round(cb, self.differentiable), _round(cr, self.differentiable)
        ycc = torch.stack([y, cb - 128.0, cr - 128.0], 1)
        rgb = torch.einsum("ij,bjhw->bihw", self.ycc2rgb.to(x.dtype), ycc)
        return (rgb[:, :, :h, :w] / 255.0).clamp(0, 1)
