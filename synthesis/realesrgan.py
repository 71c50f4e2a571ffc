"""Real-ESRGAN's second-order degradation model, batched on the device (Wang et al. 2021, arXiv 2107.10833,
Sec. 3.2-3.3, Fig. 2; ``realesrgan/models/realesrgan_model.py::feed_data``).

For a batch of HR patches ``x`` (already USM-sharpened when the recipe asks) and per-sample kernels made in the
workers (``ops.blur_kernels.sample_degradation_kernels``):

    first order:   blur(kernel1) -> random resize -> Gaussian or Poisson noise -> clip -> JPEG(jpeg_range)
    second order:  blur(kernel2) with second.blur_prob -> random resize to (H/s * r2, W/s * r2) -> noise -> clip
    final, in random order (final.sinc_first_prob):
                   [resize to (H/s, W/s) + sinc(sinc_kernel)] -> clip -> JPEG(jpeg_range2)
               or  clip -> JPEG(jpeg_range2) -> [resize to (H/s, W/s) + sinc(sinc_kernel)]
    then clip and round to 8-bit levels.

As in Real-ESRGAN, the choices that change tensor shapes or the program (resize up/down/keep and its factor, resize
mode, Gaussian vs Poisson, second blur on/off, the final order) are drawn once per batch; noise levels, gray-noise
flags and JPEG qualities per sample.  The former come from ``cpu_generator``, the latter (and the noise itself) from
``generator`` on the batch's device, so seeded generators give the same LR every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ops.degradations import (
    RESIZE_MODES,
    filter2d,
    gaussian_noise,
    poisson_noise,
    resize,
    sample_resize_mode,
    sample_resize_scale,
)
from ops.diffjpeg import DiffJPEG


def _uniform(b: int, rng: Sequence[float], like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(b, generator=generator, device=like.device, dtype=like.dtype)
    return rng[0] + u * (rng[1] - rng[0])


class RealESRGANDegradation(nn.Module):
    """The LR synthesis of Real-ESRGAN.  Arguments mirror ``conf/data/degradation/realesrgan.yaml`` (each number
    cited there); ``first``/``second`` hold ``resize_prob`` (up, down, keep), ``resize_range``,
    ``gaussian_noise_prob``, ``noise_range`` (sigma, 255 scale), ``poisson_scale_range``, ``gray_noise_prob``,
    ``jpeg_range``; ``second`` also ``blur_prob``."""

    def __init__(
        self,
        scale: int,
        first: dict,
        second: dict,
        final: dict | None = None,
        resize_modes: Sequence[str] = RESIZE_MODES,
        jpeg: dict | None = None,
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.first, self.second = dict(first), dict(second)
        self.final = dict(final or {"sinc_first_prob": 0.5})
        bad = [m for m in resize_modes if m not in RESIZE_MODES]
        if bad or not resize_modes:
            raise ValueError(
                f"degradation.resize_modes must be a non-empty subset of {RESIZE_MODES}, got {list(resize_modes)}"
            )
        self.resize_modes = list(resize_modes)
        self.jpeg = DiffJPEG(differentiable=False, **(jpeg or {}))

    def _noise(self, x: Tensor, cfg: dict, cpu: torch.Generator, gen: torch.Generator | None) -> Tensor:
        b = x.shape[0]
        gray = (torch.rand(b, generator=gen, device=x.device, dtype=x.dtype) < cfg["gray_noise_prob"]).to(x.dtype)
        if float(torch.rand((), generator=cpu)) < cfg["gaussian_noise_prob"]:
            noise = gaussian_noise(x, _uniform(b, cfg["noise_range"], x, gen), gray, gen)
        else:
            noise = poisson_noise(x, _uniform(b, cfg["poisson_scale_range"], x, gen), gray, gen)
        return (x + noise).clamp(0, 1)

    def _jpeg(self, x: Tensor, jpeg_range: Sequence[float], gen: torch.Generator | None) -> Tensor:
        # Clamp first: Real-ESRGAN notes out-of-range inputs give "unpleasant artifacts" in the JPEG step.
        return self.jpeg(x.clamp(0, 1), _uniform(x.shape[0], jpeg_range, x, gen))

    @torch.no_grad()
    def forward(
        self,
        x: Tensor,
        kernel1: Tensor,
        kernel2: Tensor,
        sinc_kernel: Tensor,
        cpu_generator: torch.Generator | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``x`` [B, 3, H, W] in [0, 1] (H, W multiples of the scale) -> LR [B, 3, H/s, W/s] on 8-bit levels."""
        cpu = cpu_generator if cpu_generator is not None else torch.default_generator
        h, w = x.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"RealESRGANDegradation: HR size {h}x{w} is not a multiple of the scale {self.scale}")
        f, s = self.first, self.second
        # ---- first order
        out = filter2d(x, kernel1)
        r = sample_resize_scale(f["resize_prob"], f["resize_range"], cpu)
        out = resize(out, sample_resize_mode(cpu, self.resize_modes), scale=r)
        out = self._noise(out, f, cpu, generator)
        out = self._jpeg(out, f["jpeg_range"], generator)
        # ---- second order
        if float(torch.rand((), generator=cpu)) < s["blur_prob"]:
            out = filter2d(out, kernel2)
        r = sample_resize_scale(s["resize_prob"], s["resize_range"], cpu)
        size = (int(h / self.scale * r), int(w / self.scale * r))
        out = resize(out, sample_resize_mode(cpu, self.resize_modes), size=size)
        out = self._noise(out, s, cpu, generator)
        # ---- final sinc and JPEG, in random order (Real-ESRGAN: other orders give twisted lines)
        lr_size = (h // self.scale, w // self.scale)
        if float(torch.rand((), generator=cpu)) < self.final["sinc_first_prob"]:
            out = resize(out, sample_resize_mode(cpu, self.resize_modes), size=lr_size)
            out = filter2d(out, sinc_kernel)
            out = self._jpeg(out, s["jpeg_range"], generator)
        else:
            out = self._jpeg(out, s["jpeg_range"], generator)
            out = resize(out, sample_resize_mode(cpu, self.resize_modes), size=lr_size)
            out = filter2d(out, sinc_kernel)
        return (out * 255.0).round().clamp(0, 255) / 255.0
