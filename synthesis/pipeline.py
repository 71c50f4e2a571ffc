"""On-the-fly SC-FEGAN input synthesis for a batch, on the batch's device (arXiv 1902.06838 sec. 3.1; official demo.py).

``FaceInputSynthesizer`` takes a batch dict ``{image [-1, 1] [B, 3, H, W], seg long [B, 1, H, W] (optional, -1 =
none), eyes [B, 2, 2] (x, y) px (optional, NaN = none), index long [B], epoch int (optional)}`` and returns it with
``mask`` (M = 1 erased), ``sketch`` x M, ``color`` x M (x the colour strokes of a
:class:`synthesis.masks.UserStrokeMask`), ``noise`` x M and ``eye_positions`` (the eyes used) added.
The generator input is then ``[I (1 - M), sketch, color, M, noise]`` (official model.py:88-93), built by the model.

Eye positions, per sample and per eye (index 0 = the eye on the image's left, 1 = on the image's right, the order of
CelebA's ``lefteye``/``righteye`` landmarks): the centroid of the label-map part (r_eye = 5 is the person's right
eye, on the image's left; l_eye = 4 on the image's right) when present, else ``batch['eyes']`` when finite, else the
fixed aligned-face positions (203, 245) / (309, 245) at 512 (celebamask_mini README), scaled to (H, W).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from synthesis.color import ColorMapExtractor
from synthesis.masks import _STREAM_NOISE, MaskGenerator, default_eyes, sample_seed
from synthesis.sketch import SketchExtractor

NOISE_TYPES = ("gaussian", "binary16")


class FaceInputSynthesizer(nn.Module):
    """Mask, sketch, colour and noise channels for a face batch.  No learnable parameters.

    Args:
        mask / sketch / color: the part modules (defaults when None).
        noise_type: ``gaussian`` (N(0, 1) x M, what reimplementations use) or ``binary16`` (the official demo's
            uint8-saturated ``cv2.randn`` / 255: 1 where N(0, 1) >= 1, about 16 % of M; demo.py:139-144).
        eye_positions: fixed (x, y) eye positions at ``eye_reference_size`` for aligned faces, image-left eye first.
        l_eye_label / r_eye_label: CelebAMask-HQ labels 4 / 5.
        seed: default seed (the data module passes its own train / validation seeds).
        timing: when True, every forward synchronises the device after each stage and stores milliseconds in
            ``last_timing`` (``eyes``, ``mask``, ``sketch``, ``color``, ``noise``, ``total``).
    """

    def __init__(
        self,
        mask: MaskGenerator | None = None,
        sketch: SketchExtractor | None = None,
        color: ColorMapExtractor | None = None,
        noise_type: str = "gaussian",
        eye_positions: Sequence[Sequence[float]] = ((203.0, 245.0), (309.0, 245.0)),
        eye_reference_size: int = 512,
        l_eye_label: int = 4,
        r_eye_label: int = 5,
        seed: int = 0,
        timing: bool = False,
    ):
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
        self.mask = mask if mask is not None else MaskGenerator()
        self.sketch = sketch if sketch is not None else SketchExtractor()
        self.color = color if color is not None else ColorMapExtractor()
        self.noise_type = noise_type
        self.eye_positions = tuple(tuple(float(v) for v in p) for p in eye_positions)
        if len(self.eye_positions) != 2 or any(len(p) != 2 for p in self.eye_positions):
            raise ValueError(f"eye_positions must be two (x, y) pairs, got {eye_positions!r}")
        self.eye_reference_size = int(eye_reference_size)
        self.l_eye_label, self.r_eye_label = int(l_eye_label), int(r_eye_label)
        self.seed = int(seed)
        self.timing = bool(timing)
        self.last_timing: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"noise_type={self.noise_type!r}, eye_positions={self.eye_positions}, seed={self.seed}"

    # -- eyes --------------------------------------------------------------------------------------------------
    def resolve_eyes(self, seg: torch.Tensor | None, eyes: torch.Tensor | None, height: int, width: int, device):
        """Eye positions float64 [B, 2, 2] (x, y) in pixels, image-left eye first (see the module docstring)."""
        fixed = default_eyes(height, width, self.eye_positions, self.eye_reference_size).to(device)
        batch = seg.shape[0] if seg is not None else (eyes.shape[0] if eyes is not None else 1)
        out = fixed.unsqueeze(0).repeat(batch, 1, 1)
        if eyes is not None:
            given = eyes.to(device, torch.float64).view(batch, 2, 2)
            ok = torch.isfinite(given).all(-1, keepdim=True)
            out = torch.where(ok, given, out)
        if seg is not None:
            seg = seg.view(batch, -1)
            xs = torch.arange(width, device=device).repeat(height)
            ys = torch.arange(height, device=device).repeat_interleave(width)
            for slot, label in enumerate((self.r_eye_label, self.l_eye_label)):
                part = (seg == label).to(torch.int64)
                count = part.sum(1)
                # integer sums, then one float64 division: the same centroid on every device
                cx = (part * xs).sum(1).double() / count.clamp(min=1).double()
                cy = (part * ys).sum(1).double() / count.clamp(min=1).double()
                found = (count > 0).view(-1, 1)
                out[:, slot] = torch.where(found, torch.stack([cx, cy], -1), out[:, slot])
        return out

    # -- noise -------------------------------------------------------------------------------------------------
    def make_noise(self, like: torch.Tensor, indices: list[int], epoch: int, seed: int) -> torch.Tensor:
        """One noise channel per sample from a per-sample generator on the device (reproducible per device)."""
        batch, _, height, width = like.shape
        out = torch.empty(batch, 1, height, width, device=like.device, dtype=torch.float32)
        for b, idx in enumerate(indices):
            gen = torch.Generator(device=like.device)
            gen.manual_seed(sample_seed(seed, idx, epoch, _STREAM_NOISE))
            torch.randn(1, height, width, generator=gen, device=like.device, out=out[b])
        if self.noise_type == "binary16":
            out = (out >= 1.0).float()
        return out

    # -- forward -----------------------------------------------------------------------------------------------
    def _tick(self, name: str, device, t0: float) -> float:
        if not self.timing:
            return t0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.last_timing[name] = (now - t0) * 1000.0
        return now

    @torch.no_grad()
    def forward(self, batch: dict, epoch: int | None = None, seed: int | None = None) -> dict:
        image = batch["image"]
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"batch['image'] must be [B, 3, H, W], got {tuple(image.shape)}")
        bsz, _, height, width = image.shape
        device = image.device
        dtype = image.dtype if image.is_floating_point() else torch.float32
        epoch = int(epoch if epoch is not None else batch.get("epoch", 0))
        seed = int(seed if seed is not None else self.seed)
        index = batch.get("index")
        indices = list(range(bsz)) if index is None else [int(i) for i in torch.as_tensor(index).view(-1).tolist()]
        seg = batch.get("seg")
        if seg is not None:
            seg = seg.to(device).long().view(bsz, 1, height, width)
            if not bool((seg >= 0).any()):
                seg = None

        self.last_timing = {}
        t_start = t0 = time.perf_counter()
        if self.timing and device.type == "cuda":
            torch.cuda.synchronize(device)
            t_start = t0 = time.perf_counter()
        eyes = self.resolve_eyes(seg, batch.get("eyes"), height, width, device)
        if eyes.shape[0] != bsz:
            eyes = eyes.expand(bsz, -1, -1)
        t0 = self._tick("eyes", device, t0)
        if getattr(self.mask, "draws_color_strokes", False):  # user-stroke masks: colour only along their strokes
            mask, color_region = self.mask(
                image, indices, epoch=epoch, seed=seed, eyes=eyes, seg=seg, return_color=True
            )
            mask, color_region = mask.to(dtype), color_region.to(dtype)
        else:
            mask = self.mask(image, indices, epoch=epoch, seed=seed, eyes=eyes, seg=seg).to(dtype)
            color_region = mask
        t0 = self._tick("mask", device, t0)
        sketch = self.sketch(image).to(dtype) * mask
        t0 = self._tick("sketch", device, t0)
        color = self.color(image, seg).to(dtype) * color_region
        t0 = self._tick("color", device, t0)
        noise = self.make_noise(image, indices, epoch, seed).to(dtype) * mask
        self._tick("noise", device, t0)
        if self.timing:
            self.last_timing["total"] = (time.perf_counter() - t_start) * 1000.0

        out = dict(batch)
        out.update(mask=mask, sketch=sketch, color=color, noise=noise, eye_positions=eyes.to(torch.float32))
        return out
