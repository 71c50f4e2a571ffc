"""Free-form training masks for SC-FEGAN, sampled per sample on the CPU and rasterised on the batch's device.

Mask convention (REFERENCE 1.6): float {0, 1}, shape [B, 1, H, W], **M = 1 where the image is erased**.

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
from typing import Sequence

import numpy as np
import torch
from torch import nn

QUANT = 8  # sub-pixel quantisation of stroke geometry (1/8 px); int64 keeps the capsule test exact up to ~64k px
HAIR_LABEL = 13  # CelebAMask-HQ 19-class order (celebamask_mini README; REFERENCE 1.11)

# Streams of the per-sample generator: independent sequences for independent decisions.
_STREAM_COMBINE, _STREAM_FREE_FORM, _STREAM_BRUSH, _STREAM_FALLBACK, _STREAM_NOISE = range(5)
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
    segments: torch.Tensor, batch: int, height: int, width: int, tile: int = 16, chunk_pixels: int = 1 << 21
) -> torch.Tensor:
    """Rasterise capsules into a bool mask [batch, 1, H, W] on ``segments.device``.

    ``segments``: int64 [N, 6] rows (b, x0, y0, x1, y1, r) with coordinates and radius in 1/QUANT pixel, pixel
    (row i, column j) having its centre at (x, y) = (j, i).  A pixel is set when its centre lies within r of the
    segment (both end discs included).  The arithmetic is integer, so the result is identical on every device.
    """
    device = segments.device
    nty, ntx = -(-height // tile), -(-width // tile)
    canvas = torch.zeros(batch * nty * ntx, tile * tile, dtype=torch.int32, device=device)
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
            canvas.index_add_(0, pair_tile[sl], hit.to(torch.int32))
    out = canvas.view(batch, nty, ntx, tile, tile).permute(0, 1, 3, 2, 4).reshape(batch, nty * tile, ntx * tile)
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

    def __init__(self, tile: int = 16, chunk_pixels: int = 1 << 21):
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
    """SC-FEGAN Algorithm 1, "free-form masking with eye-positions" (REFERENCE 1.11).

    numLine = rand(maxDraw); per line a random start, startAngle = rand(360), numV = rand(maxLine); per vertex j
    angle = startAngle + rand(-maxAngle, maxAngle) (+180 deg on odd j), length = rand(maxLength), draw the segment,
    advance x += length sin(angle), y += length cos(angle).  After each line, with probability ``eye_line_prob``,
    a line from a randomly chosen eye position (random angle, length rand(maxLength)).  ``rand(n)`` for counts is
    an integer in [1, n]; lengths are uniform in [0, maxLength).  Vertices are clipped to the image.

    Defaults (the paper gives no numbers): maxDraw 20, maxLine 20, maxAngle 60 deg, maxLength 150, width 15 -- the
    abtExp port (utils/utils.py:105-148), REFERENCE 1.11 table, the one port that implements Algorithm 1 with all
    five numbers at 512 px.  Lengths and widths are in pixels at ``reference_size`` (512, the paper's resolution)
    and scale with min(H, W) / reference_size.  ``width`` may be a number or a [min, max] range drawn per line
    (yingrliu uses widths up to 25).
    """

    stream = _STREAM_FREE_FORM

    def __init__(
        self,
        max_draw: int = 20,  # abtExp port, REFERENCE 1.11
        max_line: int = 20,  # abtExp port (vertices per line)
        max_angle: float = 60.0,  # degrees, abtExp port
        max_length: float = 150.0,  # px at reference_size, abtExp port
        width: float | Sequence[float] = 15.0,  # px at reference_size, abtExp port
        eye_line_prob: float = 1.0,  # Algorithm 1 step 4: "after each stroke" -> always
        reference_size: int = 512,  # CelebA-HQ at 512 (paper)
        tile: int = 16,
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
        scale = min(height, width) / self.reference_size
        max_len = self.max_length * scale
        xmax, ymax = width - 1.0, height - 1.0
        rows = []
        # Per line: one vectorised draw of its parameters, then a cheap scalar walk (vertices are clipped in turn).
        for _ in range(int(rng.integers(1, self.max_draw + 1))):
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
        return rows


class BrushStrokeMask(_StrokeMask):
    """DeepFill v2 ``brush_stroke_mask`` (inpaint_ops.py:156-221; REFERENCE 1.11 table), parameters exact.

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
        scale = 1.0 if self.reference_size is None else min(height, width) / self.reference_size
        average_radius = math.sqrt(height * height + width * width) / 8
        rows = []
        for _ in range(int(rng.integers(self.min_strokes, self.max_strokes))):
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
            rows += [(*vertex[k], *vertex[k + 1], w) for k in range(num_vertex)]
        if self.flip and rows:
            flip_lr, flip_ud = rng.normal() > 0, rng.normal() > 0
            fixed = []
            for x0, y0, x1, y1, w in rows:
                if flip_lr:
                    x0, x1 = width - 1 - x0, width - 1 - x1
                if flip_ud:
                    y0, y1 = height - 1 - y0, height - 1 - y1
                fixed.append((x0, y0, x1, y1, w))
            rows = fixed
        return rows


# ----------------------------------------------------------------------------------------------------------------
# Combiner
# ----------------------------------------------------------------------------------------------------------------


class MaskGenerator(nn.Module):
    """Training masks: free-form and/or brush strokes, optional hair union, coverage kept inside bounds.

    ``mode``: ``free_form`` (paper, Algorithm 1 only), ``brush`` (DeepFill v2 only), ``choice`` (per sample, free-form
    with probability ``free_form_prob``, else brush) or ``union`` (both OR-ed).  With probability ``hair_prob`` the
    hair segment (label ``hair_label``, 13 in CelebAMask-HQ) of ``seg`` is OR-ed in ("Mask = Mask + HairMask, added
    at random", Algorithm 1 step 5; 0.35 from REFERENCE 1.11's recommended 0.3-0.4).

    Coverage (fraction of M = 1 pixels of the final mask) is kept in [min_coverage, max_coverage]: a sample outside
    the bounds is re-drawn (new sub-stream ``attempt``) up to ``max_tries`` times; if it is still outside, it is
    clipped deterministically -- a too-large mask is intersected with the largest square (centred on a random mask
    pixel) that keeps coverage <= max, a too-small one is united with the smallest square (at a random centre) that
    brings coverage to >= min.  The clip reaches the bounds whenever max - min > 4 (H + W) / (H W).
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
        min_coverage: float = 0.05,  # design choice: brackets the Algorithm-1 coverage at 512 (4-59 %, median 36 %)
        max_coverage: float = 0.6,
        max_tries: int = 10,
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
        self.last_stats: dict = {}

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, free_form_prob={self.free_form_prob}, hair_prob={self.hair_prob}, "
            f"coverage=[{self.min_coverage}, {self.max_coverage}], max_tries={self.max_tries}"
        )

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
