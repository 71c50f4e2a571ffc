"""Seeded evaluation mask presets: LaMa's thin / medium / thick, SC-FEGAN's free-form, and user strokes.

Mask convention as synthesis/masks.py: float {0, 1}, [B, 1, H, W], M = 1 where the image is erased.  Every preset
is an ``nn.Module`` with the training masks' signature ``forward(like, index, epoch=0, seed=0)``, so mask ``index``
of a set depends only on (seed, index): bit-identical whatever the batch size, and on every device (the strokes go
through synthesis.masks.rasterize_capsules, integer arithmetic).

LaMa presets (Suvorov et al. 2022, github.com/advimman/lama):

* parameters: ``configs/data_gen/random_{thin,medium,thick}_{256,512}.yaml`` (``mask_generator_kwargs``,
  ``max_tamper_area: 0.5``);
* generator semantics: ``saicinpainting/training/data/masks.py`` -- ``MixedMaskGenerator`` draws ONE generator per
  mask with probabilities ``irregular_proba : box_proba`` (1 : 0.3, so boxes are an alternative to strokes in 23 % of
  the masks, not added to them); ``RandomIrregularMaskGenerator`` (ramp off: coef 1) passes ``max_times + 1`` to
  ``make_random_irregular_mask``, which draws ``randint(min_times, max_times + 1)`` strokes, i.e. min_times ..
  max_times + 1; each stroke starts at a random pixel and has 1 + randint(5) segments of angle 0.01 + randint(max_angle)
  radians (2 pi - angle for even strokes), length 10 + randint(max_len), width 5 + randint(max_width), the end
  truncated to int and clipped to [0, W] x [0, H], drawn by ``cv2.line`` (round caps: a capsule here);
  ``make_random_rectangle_mask`` draws randint(min_times, max_times + 1) boxes of side randint(bbox_min_size,
  bbox_max_size + 1) (max capped by the image minus 2 margins) at randint(margin, W - margin - side + 1);
* ``bin/gen_mask_dataset.py`` keeps only masks with mean <= ``max_tamper_area`` (draws 5 variants, re-attempts):
  here a mask above 50 % is re-drawn (independent sub-stream per attempt), the same conditional distribution.

So the effective ranges at 256 (thin): 4-51 strokes, widths 5-14 px, lengths 10-49 px.  Differences from LaMa:
the masks are drawn directly at ``size`` x ``size`` (LaMa draws on the image resized to min side 256 and then
square-crops; for square images such as CelebA-HQ/FFHQ the crop is the whole image), the capsule rasteriser differs
from OpenCV's thick-line polygon on edge pixels, and the random streams are numpy ``SeedSequence`` per mask instead of
the global ``np.random``.

Sizes: 256 and 512 use LaMa's own config of that size; any other size scales the 256 config's lengths (stroke length
and width with their constant offsets, box sizes, margin) by size / 256, counts unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from synthesis.masks import _segments_tensor, rasterize_capsules, sample_rng

MANIFEST = "manifest.json"  # a mask set's description, written by scripts/make_eval_masks.py
MANIFEST_TOOL = "scripts.make_eval_masks"  # its "tool" field; evaluation reads only sets this command wrote
GENERATOR_VERSION = "mask_presets/1"  # bump when any preset's sampling or rasterisation changes
_STREAM_LAMA = 20  # sub-streams of synthesis.masks.sample_rng, distinct from the training masks' 0-6
LAMA_SOURCE = (
    "advimman/lama configs/data_gen/random_{preset}_{size}.yaml; saicinpainting/training/data/masks.py; "
    "bin/gen_mask_dataset.py (max_tamper_area)"
)


@dataclass(frozen=True)
class LamaParams:
    """One LaMa preset's numbers (names as in the yaml), plus the generator's hard-coded offsets."""

    min_times: int
    max_times: int
    max_width: float
    max_angle: int
    max_len: float
    box_proba: float = 0.0
    box_margin: float = 0.0
    bbox_min_size: float = 0.0
    bbox_max_size: float = 0.0
    box_min_times: int = 0
    box_max_times: int = 0
    irregular_proba: float = 1.0
    max_tamper_area: float = 0.5
    len_offset: float = 10.0  # masks.py: length = 10 + randint(max_len)
    width_offset: float = 5.0  # masks.py: brush_w = 5 + randint(max_width)


# configs/data_gen/random_*_256.yaml and random_*_512.yaml (advimman/lama), mask_generator_kwargs.
LAMA_PRESETS = {
    ("thin", 256): LamaParams(min_times=4, max_times=50, max_width=10, max_angle=4, max_len=40),
    ("medium", 256): LamaParams(
        min_times=4,
        max_times=5,
        max_width=50,
        max_angle=4,
        max_len=100,
        box_proba=0.3,
        box_margin=0,
        bbox_min_size=10,
        bbox_max_size=50,
        box_min_times=1,
        box_max_times=5,
    ),
    ("thick", 256): LamaParams(
        min_times=1,
        max_times=5,
        max_width=100,
        max_angle=4,
        max_len=200,
        box_proba=0.3,
        box_margin=10,
        bbox_min_size=30,
        bbox_max_size=150,
        box_min_times=1,
        box_max_times=3,
    ),
    ("thin", 512): LamaParams(min_times=4, max_times=70, max_width=20, max_angle=4, max_len=100),
    ("medium", 512): LamaParams(
        min_times=4,
        max_times=10,
        max_width=100,
        max_angle=4,
        max_len=200,
        box_proba=0.3,
        box_margin=0,
        bbox_min_size=30,
        bbox_max_size=150,
        box_min_times=1,
        box_max_times=5,
    ),
    ("thick", 512): LamaParams(
        min_times=1,
        max_times=5,
        max_width=250,
        max_angle=4,
        max_len=450,
        box_proba=0.3,
        box_margin=10,
        bbox_min_size=30,
        bbox_max_size=300,
        box_min_times=1,
        box_max_times=4,
    ),
}
LAMA_KINDS = ("thin", "medium", "thick")
PRESETS = LAMA_KINDS + ("free_form", "user_strokes")


def lama_params(preset: str, size: int) -> tuple[LamaParams, str]:
    """The preset's parameters at ``size`` and where they come from (a LaMa yaml, or one scaled from 256)."""
    if preset not in LAMA_KINDS:
        raise ValueError(f"unknown LaMa preset {preset!r}; expected one of {LAMA_KINDS}")
    if (preset, size) in LAMA_PRESETS:
        return LAMA_PRESETS[preset, size], LAMA_SOURCE.format(preset=preset, size=size)
    base, s = LAMA_PRESETS[preset, 256], size / 256.0
    scaled = LamaParams(
        **{
            **asdict(base),
            **{
                k: getattr(base, k) * s
                for k in (
                    "max_width",
                    "max_len",
                    "box_margin",
                    "bbox_min_size",
                    "bbox_max_size",
                    "len_offset",
                    "width_offset",
                )
            },
        }
    )
    return scaled, LAMA_SOURCE.format(preset=preset, size=256) + f"; lengths scaled by {size}/256"


class LamaMask(nn.Module):
    """LaMa's random evaluation masks (thin/medium/thick); see the module docstring for the sources and semantics."""

    def __init__(self, params: LamaParams, max_tries: int = 100, tile: int = 16):
        super().__init__()
        self.params = params
        self.max_tries = int(max_tries)
        self.tile = int(tile)
        self.last_kinds: list[str] = []

    def extra_repr(self) -> str:
        return repr(self.params)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[str, list[tuple]]:
        """('strokes', [(x0, y0, x1, y1, width)]) or ('boxes', [(x, y, w, h)]) for one mask, in pixels."""
        p = self.params
        probs = np.array([p.irregular_proba, p.box_proba], dtype=np.float64)
        kind = int(rng.choice(2, p=probs / probs.sum())) if p.box_proba > 0 else 0
        if kind == 1:
            margin = int(round(p.box_margin))
            lo = int(round(p.bbox_min_size))
            hi = min(int(round(p.bbox_max_size)) + 1, height - 2 * margin, width - 2 * margin)
            if hi <= lo:
                raise ValueError(f"image {width}x{height} too small for boxes of {lo}+ px with margin {margin}")
            boxes = []
            for _ in range(int(rng.integers(p.box_min_times, p.box_max_times + 1))):
                bw, bh = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
                x = int(rng.integers(margin, width - margin - bw + 1))
                y = int(rng.integers(margin, height - margin - bh + 1))
                boxes.append((x, y, bw, bh))
            return "boxes", boxes
        rows = []
        max_len, max_w = max(1, int(round(p.max_len))), max(1, int(round(p.max_width)))
        for i in range(int(rng.integers(p.min_times, p.max_times + 2))):  # ramp coef 1: max_times + 1 inclusive
            x, y = int(rng.integers(width)), int(rng.integers(height))
            for _ in range(1 + int(rng.integers(5))):
                angle = 0.01 + int(rng.integers(p.max_angle))
                if i % 2 == 0:
                    angle = 2 * 3.1415926 - angle  # LaMa's constant
                length = p.len_offset + int(rng.integers(max_len))
                w = p.width_offset + int(rng.integers(max_w))
                ex = min(max(int(x + length * math.sin(angle)), 0), width)  # astype(int32): toward zero
                ey = min(max(int(y + length * math.cos(angle)), 0), height)
                rows.append((x, y, ex, ey, w))
                x, y = ex, ey
        return "strokes", rows

    def _render(self, kind: str, rows: list[tuple], height: int, width: int) -> torch.Tensor:
        if kind == "boxes":
            mask = torch.zeros(1, 1, height, width, dtype=torch.bool)
            for x, y, bw, bh in rows:
                mask[..., y : y + bh, x : x + bw] = True
            return mask
        return rasterize_capsules(_segments_tensor([(0, *r) for r in rows], "cpu"), 1, height, width, self.tile)

    @torch.no_grad()
    def forward(self, like: torch.Tensor, index, epoch: int = 0, seed: int = 0, **_) -> torch.Tensor:
        batch, _, height, width = like.shape
        indices = index.tolist() if torch.is_tensor(index) else list(index)
        limit = math.floor(self.params.max_tamper_area * height * width + 1e-9)
        out, kinds = [], []
        for idx in indices:
            for attempt in range(self.max_tries):
                kind, rows = self.sample(sample_rng(seed, int(idx), epoch, attempt, _STREAM_LAMA), height, width)
                mask = self._render(kind, rows, height, width)
                if int(mask.sum()) <= limit:
                    break
            else:
                raise RuntimeError(
                    f"LaMa mask {idx}: no draw within max_tamper_area={self.params.max_tamper_area} "
                    f"in {self.max_tries} tries"
                )
            out.append(mask)
            kinds.append(kind)
        self.last_kinds = kinds
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.cat(out).to(device=like.device, dtype=dtype)


def build_preset(preset: str, size: int) -> tuple[nn.Module, dict]:
    """(mask module, parameters with their source) for ``preset`` at ``size`` x ``size``."""
    if preset in LAMA_KINDS:
        params, source = lama_params(preset, size)
        return LamaMask(params), {"class": "synthesis.mask_presets.LamaMask", **asdict(params), "source": source}
    if preset == "free_form":
        import os

        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        path = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "data", "synthesis", "default.yaml"
        )
        cfg = OmegaConf.load(path).mask
        # The training masks as configured: Algorithm 1 lines (SC-FEGAN, arXiv 1902.06838) with eye lines at the
        # aligned-face eye positions, coverage in Liu et al. 2018's six bins.  No hair union: it needs label maps.
        return instantiate(cfg), {
            **OmegaConf.to_container(cfg),
            "hair": "not added (no label maps)",
            "source": "conf/data/synthesis/default.yaml (mask); SC-FEGAN Algorithm 1",
        }
    if preset == "user_strokes":
        from synthesis.masks import UserStrokeMask

        m = UserStrokeMask()
        return m, {
            "class": "synthesis.masks.UserStrokeMask",
            "min_strokes": m.min_strokes,
            "max_strokes": m.max_strokes,
            "vertices": m.vertices,
            "margin": m.margin,
            "min_width": m.min_width,
            "parts": m.parts,
            "priors": m.priors,
            "reference_size": m.reference_size,
            "source": "synthesis/masks.py UserStrokeMask defaults; part geometry from USER_PART_PRIORS (no label maps)",
        }
    raise ValueError(f"unknown mask preset {preset!r}; expected one of {PRESETS}")


def coverage_bin(coverage: float, width: float = 0.1) -> int:
    """Index of the 10 %-wide bin holding ``coverage``: (lo, hi], the first bin [0, 0.1] (as evaluate.bin_index)."""
    return max(0, min(int(math.ceil(coverage / width - 1e-9)) - 1, int(round(1 / width)) - 1))


def bin_label(k: int, width: float = 0.1) -> str:
    return f"{round(100 * k * width)}-{round(100 * (k + 1) * width)}%"
