"""Free-form training masks for SC-FEGAN, sampled per sample on the CPU and rasterised on the batch's device.

Mask convention (official model.py:88-93): float {0, 1}, shape [B, 1, H, W], **M = 1 where the image is erased**.

Reproducibility
---------------
Every random stroke parameter comes from a per-sample numpy ``Generator`` seeded with
``SeedSequence([seed, index, epoch, attempt, stream])`` (negative values wrap modulo 2**64), so the same
(seed, index, epoch) gives the same strokes on any device, whatever the batch composition, rank or worker, and
different indices/epochs/seeds give independent strokes.  The strokes are quantised to 1/``QUANT`` pixel and
rasterised with *integer* arithmetic (int64), so the rasterised mask is bit-identical on every device too.

Rasterisation
-------------
A stroke is a chain of capsules (segments with round caps: the line of width w plus a disc of diameter w at every
vertex, as DeepFill v2 draws it).  The image is cut into ``tile`` x ``tile`` tiles; every (segment, tile) pair whose
boxes overlap is tested pixel by pixel (distance of the pixel centre to the segment <= w/2), in chunks of at most
``chunk_pixels`` tests, and the hits are added into the tiles.  Work and memory are proportional to the area the
strokes touch, never to pixels x segments or pixels squared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

QUANT = 8  # sub-pixel quantisation of stroke geometry (1/8 px); int64 keeps the capsule test exact up to ~64k px
HAIR_LABEL = 13  # CelebAMask-HQ 19-class order (celebamask_mini README; CelebAMask-HQ g_mask.py)

# Streams of the per-sample generator: independent sequences for independent decisions.
(_STREAM_COMBINE, _STREAM_FREE_FORM, _STREAM_BRUSH, _STREAM_FALLBACK, _STREAM_NOISE, _STREAM_USER, _STREAM_COVERAGE) = (
    range(7)
)
NO_HIT = 2**31 - 1  # "no segment covers this pixel" in first-hit rasterisation

# Target coverage distribution (fraction of erased pixels): the six hole-to-image area-ratio categories of the
# NVIDIA irregular-mask test set, Liu et al. 2018, "Image Inpainting for Irregular Holes Using Partial
# Convolutions" (arXiv 1804.07723, sec. 4.1): (0.01, 0.1], (0.1, 0.2], ..., (0.5, 0.6], equally many masks in each.
# The per-bin evaluation of evaluate.py uses the same bins, so training and test masks follow one distribution.
LIU2018_COVERAGE_BINS = ((0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6))
_U64 = 2**64


def sample_rng(seed: int, index: int, epoch: int, attempt: int = 0, stream: int = 0) -> np.random.Generator:
    """The per-sample generator for (seed, index, epoch); ``attempt``/``stream`` select independent sub-streams."""
    entropy = [int(v) % _U64 for v in (seed, index, epoch, attempt, stream)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def sample_seed(seed: int, index: int, epoch: int, stream: int) -> int:
    """A 63-bit integer seed for a per-sample torch generator (used for the noise channel)."""
    entropy = [int(v) % _U64 for v in (seed, index, epoch, 0, stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _as_list(values: torch.Tensor | Sequence[int] | int, batch: int) -> list[int]:
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).cpu().tolist()
    elif isinstance(values, int):
        values = [values] * batch
    values = [int(v) for v in values]
    if len(values) != batch:
        raise ValueError(f"expected {batch} sample indices, got {len(values)}")
    return values


def default_eyes(height: int, width: int, positions=((203.0, 245.0), (309.0, 245.0)), reference_size: int = 512):
    """Fixed eye positions (x, y) in pixels for aligned faces, scaled from ``reference_size`` to (H, W).

    (203, 245) and (309, 245) at 512 x 512 are the measured CelebAMask-HQ eye centroids (celebamask_mini README).
    """
    pos = torch.tensor(positions, dtype=torch.float64)
    pos[:, 0] *= width / reference_size
    pos[:, 1] *= height / reference_size
    return pos


# ----------------------------------------------------------------------------------------------------------------
# Rasteriser
# ----------------------------------------------------------------------------------------------------------------


def rasterize_capsules(
    segments: torch.Tensor,
    batch: int,
    height: int,
    width: int,
    tile: int = 16,
    chunk_pixels: int = 1 << 21,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rasterise capsules into a bool mask [batch, 1, H, W] on ``segments.device``.

    ``segments``: int64 [N, 6] rows (b, x0, y0, x1, y1, r) with coordinates and radius in 1/QUANT pixel, pixel
    (row i, column j) having its centre at (x, y) = (j, i).  A pixel is set when its centre lies within r of the
    segment (both end discs included).  The arithmetic is integer, so the result is identical on every device.

    ``order`` (int [N], optional): instead of a bool mask, return int32 [batch, 1, H, W] holding, per pixel, the
    smallest ``order`` of the segments covering it (:data:`NO_HIT` where none does).  ``first <= k`` is then the
    mask of the segments of order <= k: every prefix of a stroke sequence from one rasterisation.
    """
    device = segments.device
    nty, ntx = -(-height // tile), -(-width // tile)
    if order is None:
        canvas = torch.zeros(batch * nty * ntx, tile * tile, dtype=torch.int32, device=device)
    else:
        canvas = torch.full((batch * nty * ntx, tile * tile), NO_HIT, dtype=torch.int32, device=device)
        order = order.to(device=device, dtype=torch.int32)
        cell = torch.arange(tile * tile, device=device)
    if segments.numel():
        seg = segments.to(torch.int64)
        b, x0, y0, x1, y1, r = seg.unbind(1)
        # Pixel range of the capsule's bounding box, then tile range.
        px_lo = torch.div(torch.minimum(x0, x1) - r + QUANT - 1, QUANT, rounding_mode="floor").clamp(0, width - 1)
        px_hi = torch.div(torch.maximum(x0, x1) + r, QUANT, rounding_mode="floor").clamp(0, width - 1)
        py_lo = torch.div(torch.minimum(y0, y1) - r + QUANT - 1, QUANT, rounding_mode="floor").clamp(0, height - 1)
        py_hi = torch.div(torch.maximum(y0, y1) + r, QUANT, rounding_mode="floor").clamp(0, height - 1)
        tx0, tx1 = px_lo // tile, px_hi // tile
        ty0, ty1 = py_lo // tile, py_hi // tile
        ntx_s = tx1 - tx0 + 1
        counts = ntx_s * (ty1 - ty0 + 1)
        seg_of_pair = torch.repeat_interleave(torch.arange(seg.shape[0], device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        local = torch.arange(seg_of_pair.numel(), device=device) - starts[seg_of_pair]
        pair_tx = tx0[seg_of_pair] + local % ntx_s[seg_of_pair]
        pair_ty = ty0[seg_of_pair] + torch.div(local, ntx_s[seg_of_pair], rounding_mode="floor")
        pair_tile = (b[seg_of_pair] * nty + pair_ty) * ntx + pair_tx

        grid = torch.arange(tile, device=device, dtype=torch.int64) * QUANT
        gy = grid.repeat_interleave(tile)  # row-major offsets inside a tile
        gx = grid.repeat(tile)
        per_chunk = max(1, chunk_pixels // (tile * tile))
        for start in range(0, seg_of_pair.numel(), per_chunk):
            sl = slice(start, start + per_chunk)
            s = seg_of_pair[sl]
            ax, ay, bx, by, rr = x0[s, None], y0[s, None], x1[s, None], y1[s, None], r[s, None]
            px = (pair_tx[sl, None] * tile) * QUANT + gx
            py = (pair_ty[sl, None] * tile) * QUANT + gy
            dx, dy = bx - ax, by - ay
            vx, vy = px - ax, py - ay
            r2 = rr * rr
            length2 = dx * dx + dy * dy
            dot = vx * dx + vy * dy
            cross = vx * dy - vy * dx
            hit = (vx * vx + vy * vy <= r2) | ((px - bx) ** 2 + (py - by) ** 2 <= r2)
            hit |= (dot > 0) & (dot < length2) & (cross * cross <= r2 * length2)
            if order is None:
                canvas.index_add_(0, pair_tile[sl], hit.to(torch.int32))
            else:
                vals = torch.where(hit, order[s, None], torch.full_like(hit, NO_HIT, dtype=torch.int32))
                flat = (pair_tile[sl, None] * (tile * tile) + cell).reshape(-1)
                canvas.view(-1).scatter_reduce_(0, flat, vals.reshape(-1), reduce="amin")
    out = canvas.view(batch, nty, ntx, tile, tile).permute(0, 1, 3, 2, 4).reshape(batch, nty * tile, ntx * tile)
    if order is not None:
        return out[:, :height, :width].unsqueeze(1).contiguous()
    return (out[:, :height, :width] > 0).unsqueeze(1)


def _segments_tensor(rows: list[tuple], device) -> torch.Tensor:
    """Float stroke rows (b, x0, y0, x1, y1, width) in pixels -> quantised int64 [N, 6] on ``device``."""
    if not rows:
        return torch.zeros(0, 6, dtype=torch.int64, device=device)
    arr = np.asarray(rows, dtype=np.float64)
    q = np.empty(arr.shape, dtype=np.int64)
    q[:, 0] = arr[:, 0].astype(np.int64)
    q[:, 1:5] = np.rint(arr[:, 1:5] * QUANT).astype(np.int64)
    q[:, 5] = np.maximum(np.rint(arr[:, 5] * QUANT / 2.0), 1).astype(np.int64)  # radius = width / 2
    return torch.from_numpy(q).to(device)


def _eyes_numpy(eyes: torch.Tensor | None, batch: int, height: int, width: int) -> np.ndarray:
    """Eye positions [B, 2, 2] (x, y) as float64 numpy; NaN entries replaced by the aligned-face defaults."""
    fallback = default_eyes(height, width).numpy()
    if eyes is None:
        return np.broadcast_to(fallback, (batch, 2, 2)).copy()
    arr = eyes.detach().to("cpu", torch.float64).numpy().reshape(batch, 2, 2).copy()
    bad = ~np.isfinite(arr).all(axis=2)
    arr[bad] = np.broadcast_to(fallback, (batch, 2, 2))[bad]
    return arr


# ----------------------------------------------------------------------------------------------------------------
# Stroke samplers
# ----------------------------------------------------------------------------------------------------------------


class _StrokeMask(nn.Module):
    """Common forward: sample strokes per sample on the CPU, rasterise the batch on the input's device."""

    stream = 0

    def __init__(self, tile: int = 8, chunk_pixels: int = 1 << 21):
        super().__init__()
        self.tile = int(tile)
        self.chunk_pixels = int(chunk_pixels)

    def sample_strokes(self, rng: np.random.Generator, height: int, width: int, eyes: np.ndarray) -> list[tuple]:
        """Segments (x0, y0, x1, y1, width) in pixels for one sample.  ``eyes``: [2, 2] (x, y)."""
        raise NotImplementedError

    def sample(self, seed: int, index: int, epoch: int, height: int, width: int, eyes: np.ndarray, attempt: int = 0):
        return self.sample_strokes(sample_rng(seed, index, epoch, attempt, self.stream), height, width, eyes)

    def rasterize(self, rows: list[tuple], batch: int, height: int, width: int, device) -> torch.Tensor:
        return rasterize_capsules(_segments_tensor(rows, device), batch, height, width, self.tile, self.chunk_pixels)

    @torch.no_grad()
    def forward(self, like: torch.Tensor, index, epoch: int = 0, seed: int = 0, eyes: torch.Tensor | None = None):
        """Mask [B, 1, H, W] in ``like``'s dtype and device (``like``: any [B, C, H, W] tensor)."""
        batch, _, height, width = like.shape
        eyes_np = _eyes_numpy(eyes, batch, height, width)
        rows = []
        for b, idx in enumerate(_as_list(index, batch)):
            rows += [(b, *seg) for seg in self.sample(seed, idx, epoch, height, width, eyes_np[b])]
        mask = self.rasterize(rows, batch, height, width, like.device)
        return mask.to(like.dtype if like.is_floating_point() else torch.float32)


class FreeFormMask(_StrokeMask):
    """SC-FEGAN Algorithm 1, "free-form masking with eye-positions" (arXiv 1902.06838 sec. 3.1).

    numLine = rand(maxDraw); per line a random start, startAngle = rand(360), numV = rand(maxLine); per vertex j
    angle = startAngle + rand(-maxAngle, maxAngle) (+180 deg on odd j), length = rand(maxLength), draw the segment,
    advance x += length sin(angle), y += length cos(angle).  After each line, with probability ``eye_line_prob``,
    a line from a randomly chosen eye position (random angle, length rand(maxLength)).  ``rand(n)`` for counts is
    an integer in [1, n]; lengths are uniform in [0, maxLength).  Vertices are clipped to the image.

    Defaults (the paper gives no numbers): maxDraw 20, maxLine 20, maxAngle 60 deg, maxLength 150, width 15 -- the
    abtExp port (utils/utils.py:105-148), the one port that implements Algorithm 1 with all
    five numbers at 512 px.  Lengths and widths are in pixels at ``reference_size`` (512, the paper's resolution)
    and scale with min(H, W) / reference_size.  ``width`` may be a number or a [min, max] range drawn per line
    (yingrliu uses widths up to 25).
    """

    stream = _STREAM_FREE_FORM

    def __init__(
        self,
        max_draw: int = 20,  # abtExp port, utils/utils.py:105-148
        max_line: int = 20,  # abtExp port (vertices per line)
        max_angle: float = 60.0,  # degrees, abtExp port
        max_length: float = 150.0,  # px at reference_size, abtExp port
        width: float | Sequence[float] = 15.0,  # px at reference_size, abtExp port
        eye_line_prob: float = 1.0,  # Algorithm 1 step 4: "after each stroke" -> always
        reference_size: int = 512,  # CelebA-HQ at 512 (paper)
        tile: int = 8,  # performance only: 8 px tiles fit 15 px strokes (2-3x faster than 16 on the CPU)
        chunk_pixels: int = 1 << 21,
    ):
        super().__init__(tile, chunk_pixels)
        if max_draw < 1 or max_line < 1:
            raise ValueError(f"max_draw and max_line must be >= 1, got {max_draw}, {max_line}")
        self.max_draw, self.max_line = int(max_draw), int(max_line)
        self.max_angle, self.max_length = float(max_angle), float(max_length)
        self.width = tuple(float(w) for w in width) if isinstance(width, Sequence) else (float(width), float(width))
        self.eye_line_prob = float(eye_line_prob)
        self.reference_size = int(reference_size)

    def extra_repr(self) -> str:
        return (
            f"max_draw={self.max_draw}, max_line={self.max_line}, max_angle={self.max_angle}, "
            f"max_length={self.max_length}, width={self.width}, eye_line_prob={self.eye_line_prob}"
        )

    def sample_strokes(self, rng, height, width, eyes):
        return [row for line in self.sample_lines(rng, height, width, eyes) for row in line]

    def sample_lines(self, rng, height, width, eyes, num_lines: int | None = None) -> list[list[tuple]]:
        """The segments grouped by line (each line with its eye line); ``num_lines`` None: rand(maxDraw)."""
        scale = min(height, width) / self.reference_size
        max_len = self.max_length * scale
        xmax, ymax = width - 1.0, height - 1.0
        lines = []
        if num_lines is None:
            num_lines = int(rng.integers(1, self.max_draw + 1))
        # Per line: one vectorised draw of its parameters, then a cheap scalar walk (vertices are clipped in turn).
        for _ in range(num_lines):
            rows = []
            x, y, start_angle, w_u, eye_u, eye_angle, eye_len = rng.uniform(size=7)
            x, y = x * xmax, y * ymax
            start_angle *= 360.0
            lo, hi = self.width
            w = max((lo + (hi - lo) * w_u) * scale, 1.0)
            num_v = int(rng.integers(1, self.max_line + 1))
            jitter = rng.uniform(-self.max_angle, self.max_angle, num_v)
            lengths = rng.uniform(0, max_len, num_v)
            eye = int(rng.integers(0, 2))
            for j in range(num_v):
                a = math.radians(start_angle + jitter[j] + (180.0 if j % 2 else 0.0))
                nx = min(max(x + lengths[j] * math.sin(a), 0.0), xmax)
                ny = min(max(y + lengths[j] * math.cos(a), 0.0), ymax)
                rows.append((x, y, nx, ny, w))
                x, y = nx, ny
            if eye_u < self.eye_line_prob:
                ex = min(max(float(eyes[eye][0]), 0.0), xmax)
                ey = min(max(float(eyes[eye][1]), 0.0), ymax)
                a = math.radians(eye_angle * 360.0)
                length = eye_len * max_len
                nx = min(max(ex + length * math.sin(a), 0.0), xmax)
                ny = min(max(ey + length * math.cos(a), 0.0), ymax)
                rows.append((ex, ey, nx, ny, w))
            lines.append(rows)
        return lines


class BrushStrokeMask(_StrokeMask):
    """DeepFill v2 ``brush_stroke_mask`` (JiahuiYu/generative_inpainting inpaint_ops.py:156-221), parameters exact.

    strokes randint(1, 4) -> 1-3; num_vertex randint(4, 12) -> 4-11 steps; angle_min/max = mean_angle -/+ U(0,
    angle_range); step angle U(angle_min, angle_max), 2*pi - angle on even steps; average_radius = sqrt(H^2 + W^2)
    / 8; step length clip(N(avg_r, avg_r // 2), 0, 2 avg_r); vertices clipped to the image and truncated to ints;
    width int(U(12, 40)); line through the vertices plus a disc of diameter width at each vertex.

    The flip bug (``mask.transpose`` result never assigned, lines 205-208, so no flip ever happens) is fixed: with
    ``flip=True`` the intended left-right and up-down flips are each applied when N(0, 1) > 0.  Widths are in
    absolute pixels as in DeepFill v2 unless ``reference_size`` is given (then scaled by min(H, W) / reference_size).
    """

    stream = _STREAM_BRUSH

    def __init__(
        self,
        min_strokes: int = 1,  # randint(1, 4)
        max_strokes: int = 4,  # exclusive, DeepFill v2
        min_num_vertex: int = 4,  # DeepFill v2
        max_num_vertex: int = 12,  # exclusive, DeepFill v2
        mean_angle: float = 2 * math.pi / 5,  # DeepFill v2
        angle_range: float = 2 * math.pi / 15,  # DeepFill v2
        min_width: float = 12,  # DeepFill v2
        max_width: float = 40,  # DeepFill v2
        flip: bool = True,  # the intended flips (DeepFill v2 never applies them: bug)
        reference_size: int | None = None,  # None: absolute pixels as DeepFill v2
        tile: int = 16,
        chunk_pixels: int = 1 << 21,
    ):
        super().__init__(tile, chunk_pixels)
        self.min_strokes, self.max_strokes = int(min_strokes), int(max_strokes)
        self.min_num_vertex, self.max_num_vertex = int(min_num_vertex), int(max_num_vertex)
        self.mean_angle, self.angle_range = float(mean_angle), float(angle_range)
        self.min_width, self.max_width = float(min_width), float(max_width)
        self.flip = bool(flip)
        self.reference_size = reference_size

    def sample_strokes(self, rng, height, width, eyes):
        return [row for line in self.sample_lines(rng, height, width, eyes) for row in line]

    def sample_lines(self, rng, height, width, eyes, num_lines: int | None = None) -> list[list[tuple]]:
        """The segments grouped by stroke; ``num_lines`` None: randint(min_strokes, max_strokes)."""
        scale = 1.0 if self.reference_size is None else min(height, width) / self.reference_size
        average_radius = math.sqrt(height * height + width * width) / 8
        lines = []
        if num_lines is None:
            num_lines = int(rng.integers(self.min_strokes, self.max_strokes))
        for _ in range(num_lines):
            num_vertex = int(rng.integers(self.min_num_vertex, self.max_num_vertex))
            angle_min = self.mean_angle - rng.uniform(0, self.angle_range)
            angle_max = self.mean_angle + rng.uniform(0, self.angle_range)
            angles = []
            for i in range(num_vertex):
                a = rng.uniform(angle_min, angle_max)
                angles.append(2 * math.pi - a if i % 2 == 0 else a)
            vertex = [(int(rng.integers(0, width)), int(rng.integers(0, height)))]
            for i in range(num_vertex):
                r = float(np.clip(rng.normal(average_radius, average_radius // 2), 0, 2 * average_radius))
                nx = np.clip(vertex[-1][0] + r * math.cos(angles[i]), 0, width - 1)
                ny = np.clip(vertex[-1][1] + r * math.sin(angles[i]), 0, height - 1)
                vertex.append((int(nx), int(ny)))
            w = max(float(int(rng.uniform(self.min_width, self.max_width))) * scale, 1.0)
            lines.append([(*vertex[k], *vertex[k + 1], w) for k in range(num_vertex)])
        if self.flip and lines:
            flip_lr, flip_ud = rng.normal() > 0, rng.normal() > 0
            fixed = []
            for rows in lines:
                out = []
                for x0, y0, x1, y1, w in rows:
                    if flip_lr:
                        x0, x1 = width - 1 - x0, width - 1 - x1
                    if flip_ud:
                        y0, y1 = height - 1 - y0, height - 1 - y1
                    out.append((x0, y0, x1, y1, w))
                fixed.append(out)
            lines = fixed
        return lines


# ----------------------------------------------------------------------------------------------------------------
# Combiner
# ----------------------------------------------------------------------------------------------------------------


class MaskGenerator(nn.Module):
    """Training masks: free-form and/or brush strokes, optional hair union, coverage following a target distribution.

    ``mode``: ``free_form`` (paper, Algorithm 1 only), ``brush`` (DeepFill v2 only), ``choice`` (per sample, free-form
    with probability ``free_form_prob``, else brush) or ``union`` (both OR-ed).  With probability ``hair_prob`` the
    hair segment (label ``hair_label``, 13 in CelebAMask-HQ) of ``seg`` is OR-ed in ("Mask = Mask + HairMask, added
    at random", Algorithm 1 step 5; 0.35 between abtExp's ~0.4 and bensalahhoussam's ~1/3).

    Coverage (fraction of M = 1 pixels of the final mask):

    * ``coverage_bins`` given (default: :data:`LIU2018_COVERAGE_BINS`, the six (0.01, 0.1] ... (0.5, 0.6] categories
      of Liu et al. 2018) -- per sample a bin is drawn with ``coverage_probs`` (None: equal, as Liu et al.) and a
      target t uniformly inside it; ``max_lines`` lines (free-form) / strokes (brush; interleaved in ``union``) are
      drawn and the mask is the hair (when added) plus the shortest prefix of them whose coverage reaches t.  The
      prefix is accepted when its coverage is inside the bin (one rasterisation gives every prefix: each pixel keeps
      the index of the first line covering it).  Algorithm 1's numLine = rand(maxDraw) gives no control over
      coverage (its measured median was 39.5 % with hair, 46 % of the masks above 40 %); the line *shapes* stay the
      paper's.  Otherwise the sample is re-drawn (``max_tries``) and finally clipped into the bin as below.
    * ``coverage_bins=None``: Algorithm 1's own line count; coverage kept in [min_coverage, max_coverage]: a sample
      outside is re-drawn up to ``max_tries`` times, then clipped deterministically -- a too-large mask is
      intersected with the largest square (centred on a random mask pixel) that keeps coverage <= max, a too-small
      one is united with the smallest square (at a random centre) that brings coverage to >= min.  The clip reaches
      the bounds whenever max - min > 4 (H + W) / (H W).
    """

    MODES = ("free_form", "brush", "choice", "union")

    def __init__(
        self,
        free_form: FreeFormMask | None = None,
        brush: BrushStrokeMask | None = None,
        mode: str = "free_form",
        free_form_prob: float = 0.5,
        hair_prob: float = 0.35,
        hair_label: int = HAIR_LABEL,
        min_coverage: float = 0.05,  # coverage_bins=None only
        max_coverage: float = 0.6,
        max_tries: int = 10,
        coverage_bins: Sequence[Sequence[float]] | None = LIU2018_COVERAGE_BINS,
        coverage_probs: Sequence[float] | None = None,
        max_lines: int = 40,
        lines_per_pass: int = 8,
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= min_coverage <= max_coverage <= 1.0:
            raise ValueError(f"need 0 <= min_coverage <= max_coverage <= 1, got {min_coverage}, {max_coverage}")
        self.free_form = free_form if free_form is not None else FreeFormMask()
        self.brush = brush if brush is not None else BrushStrokeMask()
        self.mode = mode
        self.free_form_prob = float(free_form_prob)
        self.hair_prob = float(hair_prob)
        self.hair_label = int(hair_label)
        self.min_coverage, self.max_coverage = float(min_coverage), float(max_coverage)
        self.max_tries = int(max_tries)
        self.coverage_bins = None
        self.coverage_probs = None
        if coverage_bins is not None:
            bins = tuple((float(lo), float(hi)) for lo, hi in coverage_bins)
            if not bins or any(not 0.0 <= lo < hi <= 1.0 for lo, hi in bins):
                raise ValueError(f"coverage_bins must be [lo, hi] pairs with 0 <= lo < hi <= 1, got {coverage_bins!r}")
            probs = (
                np.full(len(bins), 1.0 / len(bins))
                if coverage_probs is None
                else np.asarray(coverage_probs, dtype=np.float64)
            )
            if probs.shape != (len(bins),) or (probs < 0).any() or probs.sum() <= 0:
                raise ValueError(f"coverage_probs must be {len(bins)} non-negative weights, got {coverage_probs!r}")
            self.coverage_bins, self.coverage_probs = bins, tuple((probs / probs.sum()).tolist())
        self.max_lines = int(max_lines)
        self.lines_per_pass = max(1, int(lines_per_pass))
        if self.max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self.last_stats: dict = {}

    def extra_repr(self) -> str:
        cov = (
            f"coverage_bins={self.coverage_bins}, coverage_probs={self.coverage_probs}"
            if self.coverage_bins
            else f"coverage=[{self.min_coverage}, {self.max_coverage}]"
        )
        return (
            f"mode={self.mode!r}, free_form_prob={self.free_form_prob}, hair_prob={self.hair_prob}, {cov}, "
            f"max_tries={self.max_tries}"
        )

    # -- coverage-targeted sampling ------------------------------------------------------------------------------
    def _sample_lines(self, seed, idx, epoch, height, width, eyes, attempt):
        """(lines, add_hair, bin index, target fraction) for one sample and attempt."""
        rng = sample_rng(seed, idx, epoch, attempt, _STREAM_COMBINE)
        use_ff = self.mode in ("free_form", "union") or (self.mode == "choice" and rng.uniform() < self.free_form_prob)
        use_brush = self.mode in ("brush", "union") or (self.mode == "choice" and not use_ff)
        add_hair = rng.uniform() < self.hair_prob
        # The bin and the target are drawn once per sample (not per attempt): re-draws must not favour the bins
        # that are easy to hit (e.g. large ones when the hair alone is larger than a small bin).
        cov_rng = sample_rng(seed, idx, epoch, 0, _STREAM_COVERAGE)
        k = int(cov_rng.choice(len(self.coverage_bins), p=self.coverage_probs))
        lo, hi = self.coverage_bins[k]
        target = lo + (hi - lo) * cov_rng.uniform()
        ff = (
            self.free_form.sample_lines(
                sample_rng(seed, idx, epoch, attempt, self.free_form.stream), height, width, eyes, self.max_lines
            )
            if use_ff
            else []
        )
        br = (
            self.brush.sample_lines(
                sample_rng(seed, idx, epoch, attempt, self.brush.stream), height, width, eyes, self.max_lines
            )
            if use_brush
            else []
        )
        if ff and br:  # union: alternate free-form lines and brush strokes
            lines = [ln for pair in zip(ff, br) for ln in pair][: self.max_lines]
        else:
            lines = ff or br
        return lines, add_hair, k, target

    def _forward_binned(self, like, indices, epoch, seed, eyes_np, seg) -> torch.Tensor:
        batch, _, height, width = like.shape
        device = like.device
        total = height * width
        mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        pending = list(range(batch))
        tries, bins, last = [0] * batch, [0] * batch, {}
        for attempt in range(max(1, self.max_tries)):
            samples = {
                b: self._sample_lines(seed, indices[b], epoch, height, width, eyes_np[b], attempt) for b in pending
            }
            n = len(pending)
            # first[k] = 0 for added hair, 1 + j for pixels whose first covering line is j, NO_HIT elsewhere.
            first = torch.full((n, 1, height, width), NO_HIT, dtype=torch.int32, device=device)
            if seg is not None:
                hair = torch.tensor([samples[b][1] for b in pending], device=device).view(-1, 1, 1, 1)
                first.masked_fill_((seg[pending] == self.hair_label) & hair, 0)
            goal = [math.ceil(samples[b][3] * total - 1e-9) for b in pending]
            counts = (first == 0).flatten(1).sum(1).tolist()
            chosen = [0 if counts[k] >= goal[k] else None for k in range(n)]
            # Rasterise lines a few at a time, only for the samples that have not reached their target yet.
            for start in range(0, self.max_lines, self.lines_per_pass):
                todo = [k for k in range(n) if chosen[k] is None and start < len(samples[pending[k]][0])]
                if not todo:
                    break
                rows, order = [], []
                for slot, k in enumerate(todo):
                    for j, line in enumerate(samples[pending[k]][0][start : start + self.lines_per_pass]):
                        rows += [(slot, *r) for r in line]
                        order += [1 + start + j] * len(line)
                part = rasterize_capsules(
                    _segments_tensor(rows, device),
                    len(todo),
                    height,
                    width,
                    self.free_form.tile,
                    self.free_form.chunk_pixels,
                    order=torch.tensor(order, dtype=torch.int32),
                )
                sel = torch.tensor(todo, device=device)
                merged = torch.minimum(first[sel], part)
                first[sel] = merged
                # Coverage after each line so far: a histogram of first-hit indices per sample, cumulated.
                nbin = start + self.lines_per_pass + 2
                idx = (
                    merged.flatten(1).clamp(max=nbin - 1).long()
                    + torch.arange(len(todo), device=device).view(-1, 1) * nbin
                )
                cum = torch.bincount(idx.view(-1), minlength=len(todo) * nbin).view(len(todo), nbin).cumsum(1)
                cum = cum[:, start + 1 : start + 1 + self.lines_per_pass].tolist()
                for slot, k in enumerate(todo):
                    for j, c in enumerate(cum[slot]):
                        if c >= goal[k]:
                            chosen[k] = start + 1 + j
                            break
            still = []
            for k, b in enumerate(pending):
                lo, hi = self.coverage_bins[samples[b][2]]
                lo_n, hi_n = math.ceil(lo * total - 1e-9), math.floor(hi * total + 1e-9)
                level = chosen[k] if chosen[k] is not None else NO_HIT - 1
                mask[b] = first[k] <= level
                tries[b], bins[b], last[b] = attempt + 1, samples[b][2], (lo_n, hi_n)
                if not lo_n <= int(mask[b].sum()) <= hi_n:
                    still.append(b)
            pending = still
            if not pending:
                break
        for b in pending:
            mask[b] = self._clip(mask[b], seed, indices[b], epoch, *last[b])
        self.last_stats = {"tries": tries, "clipped": list(pending), "bins": bins}
        return mask

    def _sample(self, seed, idx, epoch, height, width, eyes, attempt):
        """Stroke rows and the hair decision for one sample and attempt."""
        rng = sample_rng(seed, idx, epoch, attempt, _STREAM_COMBINE)
        use_ff = self.mode in ("free_form", "union") or (self.mode == "choice" and rng.uniform() < self.free_form_prob)
        use_brush = self.mode in ("brush", "union") or (self.mode == "choice" and not use_ff)
        add_hair = rng.uniform() < self.hair_prob
        rows = []
        if use_ff:
            rows += self.free_form.sample(seed, idx, epoch, height, width, eyes, attempt)
        if use_brush:
            rows += self.brush.sample(seed, idx, epoch, height, width, eyes, attempt)
        return rows, add_hair

    def _render(self, samples, sel, seg, height, width, device):
        rows = [(k, *r) for k, b in enumerate(sel) for r in samples[b][0]]
        mask = rasterize_capsules(
            _segments_tensor(rows, device), len(sel), height, width, self.free_form.tile, self.free_form.chunk_pixels
        )
        if seg is not None:
            hair = torch.tensor([samples[b][1] for b in sel], device=device).view(-1, 1, 1, 1)
            mask |= (seg[sel] == self.hair_label) & hair
        return mask

    @torch.no_grad()
    def forward(
        self,
        like: torch.Tensor,
        index,
        epoch: int = 0,
        seed: int = 0,
        eyes: torch.Tensor | None = None,
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask [B, 1, H, W] float {0, 1} in ``like``'s dtype/device.  ``seg``: long [B, 1, H, W] (-1 = unknown)."""
        batch, _, height, width = like.shape
        device = like.device
        indices = _as_list(index, batch)
        eyes_np = _eyes_numpy(eyes, batch, height, width)
        if seg is not None:
            seg = seg.to(device).view(batch, 1, height, width)
        if self.coverage_bins is not None:
            mask = self._forward_binned(like, indices, epoch, seed, eyes_np, seg)
            return mask.to(like.dtype if like.is_floating_point() else torch.float32)
        lo = math.ceil(self.min_coverage * height * width - 1e-9)
        hi = math.floor(self.max_coverage * height * width + 1e-9)

        mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        pending = list(range(batch))
        tries = [0] * batch
        for attempt in range(max(1, self.max_tries)):
            samples = {b: self._sample(seed, indices[b], epoch, height, width, eyes_np[b], attempt) for b in pending}
            drawn = self._render(samples, pending, seg, height, width, device)
            counts = drawn.flatten(1).sum(1).tolist()
            still = []
            for k, b in enumerate(pending):
                mask[b] = drawn[k]
                tries[b] = attempt + 1
                if not lo <= counts[k] <= hi:
                    still.append(b)
            pending = still
            if not pending:
                break
        for b in pending:
            mask[b] = self._clip(mask[b], seed, indices[b], epoch, lo, hi)
        self.last_stats = {"tries": tries, "clipped": list(pending)}
        return mask.to(like.dtype if like.is_floating_point() else torch.float32)

    @staticmethod
    def _clip(mask: torch.Tensor, seed: int, idx: int, epoch: int, lo: int, hi: int) -> torch.Tensor:
        """Bring the count of ``mask`` ([1, H, W] bool) into [lo, hi] with a square (see the class docstring)."""
        _, height, width = mask.shape
        rng = sample_rng(seed, idx, epoch, 0, _STREAM_FALLBACK)
        ys = torch.arange(height, device=mask.device).view(-1, 1)
        xs = torch.arange(width, device=mask.device).view(1, -1)
        count = int(mask.sum())
        if count > hi:
            on = mask[0].nonzero()
            cy, cx = on[int(rng.integers(0, on.shape[0]))].tolist()

            def box(s):
                return mask & ((ys - cy).abs() <= s) & ((xs - cx).abs() <= s)

            lo_s, hi_s = -1, max(height, width)  # box(-1) is empty (count 0 <= hi); box(max) is the whole mask (> hi)
            while hi_s - lo_s > 1:
                mid = (lo_s + hi_s) // 2
                if int(box(mid).sum()) <= hi:
                    lo_s = mid
                else:
                    hi_s = mid
            return box(lo_s)
        if count < lo:
            cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))

            def grow(s):
                return mask | (((ys - cy).abs() <= s) & ((xs - cx).abs() <= s))

            lo_s, hi_s = -1, max(height, width)  # grow(-1) is the mask (< lo); grow(max) is everything (>= lo)
            while hi_s - lo_s > 1:
                mid = (lo_s + hi_s) // 2
                if int(grow(mid).sum()) >= lo:
                    hi_s = mid
                else:
                    lo_s = mid
            return grow(hi_s)
        return mask


# ----------------------------------------------------------------------------------------------------------------
# User-stroke masks (evaluation)
# ----------------------------------------------------------------------------------------------------------------

# Face parts a user edits, as CelebAMask-HQ label sets (19-class order, CelebAMask-HQ g_mask.py).
USER_PARTS = {
    "r_eye": [5],
    "l_eye": [4],
    "r_brow": [7],
    "l_brow": [6],
    "nose": [2],
    "mouth": [10, 11, 12],
}
# Per part, for images without labels: centroid (x, y) and covariance (xx, xy, yy) in px at 512, medians over 300
# celebamask_mini label maps (aligned CelebA-HQ faces; measured for this project, see notes/a2.md).
USER_PART_PRIORS = {
    "r_eye": [194.0, 245.0, 129.0, 4.0, 20.0],
    "l_eye": [318.0, 245.0, 131.0, -3.0, 19.0],
    "r_brow": [189.0, 213.0, 500.0, 30.0, 36.0],
    "l_brow": [321.0, 213.0, 527.0, -32.0, 37.0],
    "nose": [255.0, 295.0, 296.0, -3.0, 793.0],
    "mouth": [255.0, 384.0, 672.0, -1.0, 120.0],
}


class UserStrokeMask(nn.Module):
    """Masks like a user's edit in the SC-FEGAN demo: a few thick strokes scribbled over one face part.

    Per sample (seeded by (seed, index, epoch) as the training masks): one part of ``parts`` is chosen uniformly
    among those present in ``seg`` (at least ``min_part_area`` of the image; without labels, among ``priors``, the
    mean part geometry of aligned faces).  From the part's pixels (or prior) its centroid and covariance give an
    ellipse of half-axes 2 sigma (+ ``margin``); ``min_strokes``..``max_strokes`` strokes run along its major axis,
    side by side across the minor axis, wide enough together to cover it (at least ``min_width`` px at 512),
    each a polyline of ``vertices`` vertices with a little jitter, as a hand draws.  The colour strokes are the same
    polylines with a ``color_width_ratio`` times thinner brush, so they lie inside the mask; the sketch inside the
    mask is the part's edges (the pipeline's sketch x M), as a user traces the contour.

    ``forward`` returns the mask [B, 1, H, W] (M = 1 erased) or, with ``return_color=True``, (mask, colour-stroke
    mask).  ``last_parts`` holds the part chosen per sample.
    """

    stream = _STREAM_USER
    draws_color_strokes = True

    def __init__(
        self,
        parts: dict | None = None,
        priors: dict | None = None,
        min_strokes: int = 1,  # "a few strokes": design choice
        max_strokes: int = 3,
        vertices: int = 4,
        margin: float = 0.25,  # ellipse grown by 25 % + 4 px so the part's border is inside the mask
        min_width: float = 10.0,  # px at 512 (the official demo.py:146-159 draws masks with thickness 12)
        color_width_ratio: float = 0.4,
        jitter: float = 0.1,  # vertex jitter, fraction of the stroke width
        min_part_area: float = 1e-4,  # fraction of the image: smaller parts count as absent
        reference_size: int = 512,
        tile: int = 8,
        chunk_pixels: int = 1 << 21,
    ):
        super().__init__()
        self.parts = {str(k): [int(v) for v in vals] for k, vals in dict(parts or USER_PARTS).items()}
        self.priors = {str(k): [float(v) for v in vals] for k, vals in dict(priors or USER_PART_PRIORS).items()}
        if not self.parts:
            raise ValueError("UserStrokeMask: parts is empty")
        if not 1 <= int(min_strokes) <= int(max_strokes):
            raise ValueError(f"need 1 <= min_strokes <= max_strokes, got {min_strokes}, {max_strokes}")
        if not 0.0 < float(color_width_ratio) <= 1.0:
            raise ValueError(f"color_width_ratio must be in (0, 1], got {color_width_ratio}")
        self.min_strokes, self.max_strokes = int(min_strokes), int(max_strokes)
        self.vertices = max(2, int(vertices))
        self.margin, self.min_width = float(margin), float(min_width)
        self.color_width_ratio, self.jitter = float(color_width_ratio), float(jitter)
        self.min_part_area = float(min_part_area)
        self.reference_size = int(reference_size)
        self.tile, self.chunk_pixels = int(tile), int(chunk_pixels)
        self.last_parts: list[str] = []

    def extra_repr(self) -> str:
        return f"parts={sorted(self.parts)}, strokes=[{self.min_strokes}, {self.max_strokes}], margin={self.margin}"

    def _geometry(self, name: str, seg_b: torch.Tensor | None, height: int, width: int):
        """(cx, cy, cov 2x2) of part ``name``: from the label map when present, else the prior (scaled)."""
        if seg_b is not None:
            ys, xs = torch.nonzero(
                torch.isin(seg_b[0], torch.tensor(self.parts[name], device=seg_b.device)), as_tuple=True
            )
            pts = torch.stack([xs, ys], 1).to("cpu", torch.float64).numpy()
            return pts[:, 0].mean(), pts[:, 1].mean(), np.cov(pts.T) + np.eye(2) * (1.0 / 12.0)
        cx, cy, sxx, sxy, syy = self.priors[name]
        sx, sy = width / self.reference_size, height / self.reference_size
        return cx * sx, cy * sy, np.array([[sxx * sx * sx, sxy * sx * sy], [sxy * sx * sy, syy * sy * sy]])

    def sample_strokes(self, rng, height: int, width: int, present: list[str], seg_b) -> tuple[str, list, list]:
        """(part, mask rows, colour rows) for one sample; rows (x0, y0, x1, y1, width) in px."""
        name = present[int(rng.integers(0, len(present)))]
        cx, cy, cov = self._geometry(name, seg_b, height, width)
        evals, evecs = np.linalg.eigh(cov)
        u, v = evecs[:, 1], evecs[:, 0]  # major, minor axis
        scale = min(height, width) / self.reference_size
        pad = 4.0 * scale
        half_a = 2.0 * math.sqrt(max(evals[1], 0.0)) * (1.0 + self.margin) + pad
        half_b = 2.0 * math.sqrt(max(evals[0], 0.0)) * (1.0 + self.margin) + pad
        n = int(rng.integers(self.min_strokes, self.max_strokes + 1))
        w = max(2.0 * half_b / n, self.min_width * scale)
        # Stroke centre lines side by side across the minor axis; their capsules of width w tile [-half_b, half_b].
        offsets = (np.arange(n) - (n - 1) / 2.0) * w
        along = (
            np.linspace(-half_a + w / 2.0, half_a - w / 2.0, self.vertices)
            if half_a > w / 2.0
            else np.zeros(self.vertices)
        )
        rows, colour = [], []
        for i, off in enumerate(offsets):
            ts = along if i % 2 == 0 else along[::-1]  # back and forth, as one scribbles
            jit = rng.normal(0.0, self.jitter * w, size=(self.vertices, 2))
            pts = [(cx + t * u[0] + off * v[0] + jx, cy + t * u[1] + off * v[1] + jy) for t, (jx, jy) in zip(ts, jit)]
            pts = [(min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)) for x, y in pts]
            for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
                rows.append((x0, y0, x1, y1, w + 2.0 * self.jitter * w * 2.0))  # widened by the jitter's 2 sigma
                colour.append((x0, y0, x1, y1, max(w * self.color_width_ratio, 1.0)))
        return name, rows, colour

    @torch.no_grad()
    def forward(
        self,
        like: torch.Tensor,
        index,
        epoch: int = 0,
        seed: int = 0,
        eyes: torch.Tensor | None = None,
        seg: torch.Tensor | None = None,
        return_color: bool = False,
    ):
        batch, _, height, width = like.shape
        device = like.device
        if seg is not None:
            seg = seg.to(device).view(batch, 1, height, width)
        min_px = self.min_part_area * height * width
        rows, colour, names = [], [], []
        for b, idx in enumerate(_as_list(index, batch)):
            rng = sample_rng(seed, idx, epoch, 0, self.stream)
            seg_b = None
            present = [p for p in self.parts if p in self.priors]
            if seg is not None and bool((seg[b] >= 0).any()):
                counts = {
                    p: int(torch.isin(seg[b], torch.tensor(labs, device=device)).sum())
                    for p, labs in self.parts.items()
                }
                found = [p for p in self.parts if counts[p] >= max(min_px, 3)]
                if found:
                    present, seg_b = found, seg[b]
            if not present:
                raise ValueError(
                    f"UserStrokeMask: no part of {sorted(self.parts)} is in the label map of sample {idx} "
                    f"and none has a prior in `priors`"
                )
            name, r, c = self.sample_strokes(rng, height, width, present, seg_b)
            names.append(name)
            rows += [(b, *x) for x in r]
            colour += [(b, *x) for x in c]
        self.last_parts = names
        dtype = like.dtype if like.is_floating_point() else torch.float32
        mask = rasterize_capsules(
            _segments_tensor(rows, device), batch, height, width, self.tile, self.chunk_pixels
        ).to(dtype)
        if not return_color:
            return mask
        col = rasterize_capsules(_segments_tensor(colour, device), batch, height, width, self.tile, self.chunk_pixels)
        return mask, col.to(dtype) * mask
