"""Sketch channel for SC-FEGAN, extracted on the batch's device (arXiv 1902.06838 sec. 3.1; SC-FEGAN issue #24).

The paper: HED edges (CLAHE first, author in issue #24), post-processed as pix2pix does (``PostprocessHED.m``):
NMS of the edge map along the orientation of its smoothed Hessian (``convTri(E, 4)``, ``edgesNmsMex(E, O, 1, 5,
1.01)``), threshold 25/255, ``bwmorph thin``, ``bwareaopen 5``; the paper adds curve smoothing and removal of small
edges.  Detectors (``detector``):

* ``hed``: the BSDS500 HED network (:mod:`archs.hed`, weights from ``hed_weights``), batched on the device, then
  the pix2pix post-processing above plus curve smoothing.
* ``classic`` (default without HED weights): a hand-made boundary detector built to behave like HED rather than
  like Canny -- edge-preserving smoothing (median + repeated bilateral) so texture is flattened before any
  derivative is taken; soft colour boundaries at two scales, each with surround inhibition (Grigorescu, Petkov &
  Westenberg 2003, "Contour detection based on nonclassical receptive field inhibition": a pixel's gradient minus
  the mean gradient of its surround, so dense texture cancels itself while isolated contours survive), combined by
  a geometric mean (a boundary must exist at both scales); then the same NMS as HED's post-processing, hysteresis
  (weak boundary pixels kept only when 8-connected to a strong one, so contours are continuous), curve smoothing,
  thinning and removal of short components.
* ``canny`` (the previous default): CLAHE gray -> ``kornia.filters.canny``; ``dexined``: kornia's DexiNed with
  local weights.  Both then thinning and small-component removal.

Curve smoothing (all detectors): the binary edge map is blurred (Gaussian, ``curve_smoothing_sigma``) and
re-thresholded at ``curve_smoothing_level`` before thinning, which straightens one-pixel zig-zags and closes
one-pixel gaps.  Thinning is Guo-Hall (MATLAB ``bwmorph(..., 'thin', inf)``); connected components use kornia's
exact block union-find labelling, so no step iterates once per pixel of edge length.
Output: float {0, 1} [B, 1, H, W]; the pipeline multiplies it by the mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.contrib import connected_components_union_find
from kornia.enhance import equalize_clahe
from kornia.filters import canny, gaussian_blur2d
from torch import nn

# BGR mean of the DexiNed (and Caffe HED) input: kornia.models.dexined.DexiNed docstring.
DEXINED_BGR_MEAN = (103.939, 116.779, 123.68)
DETECTORS = ("auto", "classic", "hed", "canny", "dexined")


# ----------------------------------------------------------------------------------------------------------------
# Binary morphology on the device
# ----------------------------------------------------------------------------------------------------------------


def _thin_luts() -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion look-up tables of Guo & Hall's thinning (as ``skimage.morphology._skeletonize._generate_thin_luts``).

    Neighbour bits: x1 = E (bit 0), x2 = NE, x3 = N, x4 = NW, x5 = W, x6 = SW, x7 = S, x8 = SE (bit 7).
    """

    def bits(n):
        return [(n >> i) & 1 for i in range(8)]

    def g12(n):
        b = bits(n)
        crossings = sum(1 for i in (0, 2, 4, 6) if not b[i] and (b[i + 1] or b[(i + 2) % 8]))
        n1 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[k - 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[(k + 1) % 8])
        return crossings == 1 and 2 <= min(n1, n2) <= 3

    def g3(n):
        b = bits(n)
        return not ((b[1] or b[2] or not b[7]) and b[0])

    def g3p(n):
        b = bits(n)
        return not ((b[5] or b[6] or not b[3]) and b[4])

    first = torch.tensor([g12(n) and g3(n) for n in range(256)], dtype=torch.bool)
    second = torch.tensor([g12(n) and g3p(n) for n in range(256)], dtype=torch.bool)
    return first, second


_THIN_LUTS = _thin_luts()
# Correlation weights giving each neighbour its bit (skimage's ``mask``).
_NEIGHBOUR_WEIGHTS = torch.tensor([[8.0, 4.0, 2.0], [16.0, 0.0, 1.0], [32.0, 64.0, 128.0]]).view(1, 1, 3, 3)


def _neighbour_code(skel: torch.Tensor) -> torch.Tensor:
    """8-bit neighbourhood code of every pixel (the correlation with ``_NEIGHBOUR_WEIGHTS``, zero border), by
    shifted integer adds: exact, and much cheaper than a float conv2d on the CPU."""
    p = F.pad(skel.to(torch.uint8), (1, 1, 1, 1))
    c = p[..., 1:-1, 2:].clone()  # E, bit 0
    c += p[..., :-2, 2:] * 2  # NE
    c += p[..., :-2, 1:-1] * 4  # N
    c += p[..., :-2, :-2] * 8  # NW
    c += p[..., 1:-1, :-2] * 16  # W
    c += p[..., 2:, :-2] * 32  # SW
    c += p[..., 2:, 1:-1] * 64  # S
    c += p[..., 2:, 2:] * 128  # SE
    return c.long()


@torch.no_grad()
def thin(binary: torch.Tensor, max_iter: int | None = None) -> torch.Tensor:
    """Thin a binary map [B, 1, H, W] to 1-pixel-wide curves (MATLAB ``bwmorph thin``, ``max_iter`` None = inf)."""
    skel = binary > 0.5
    luts = [lut.to(binary.device) for lut in _THIN_LUTS]
    it = 0
    while max_iter is None or it < max_iter:
        before = int(skel.sum())
        for lut in luts:
            skel = skel & ~lut[_neighbour_code(skel)]
        it += 1
        if int(skel.sum()) == before:
            break
    return skel.to(binary.dtype if binary.is_floating_point() else torch.float32)


def _labels(binary: torch.Tensor) -> torch.Tensor:
    """8-connected component labels (0 = background), exact, linear memory (kornia block union-find)."""
    return connected_components_union_find(binary.to(torch.uint8))


@torch.no_grad()
def remove_small_components(binary: torch.Tensor, min_size: int = 5) -> torch.Tensor:
    """Remove 8-connected foreground components with fewer than ``min_size`` pixels (MATLAB ``bwareaopen``)."""
    fg = binary > 0.5
    if min_size > 1 and fg.any():
        labels = _labels(fg)
        sizes = torch.bincount(labels.flatten())
        fg = fg & (sizes[labels] >= min_size)
    return fg.to(binary.dtype if binary.is_floating_point() else torch.float32)


@torch.no_grad()
def hysteresis(weak_or_strong: torch.Tensor) -> torch.Tensor:
    """Canny hysteresis from kornia's ``hysteresis=False`` output (0 / 0.5 weak / 1 strong): keep the 8-connected
    edge components that contain a strong pixel.  Same result as ``canny(..., hysteresis=True)``, whose loop grows
    edges one pixel per iteration (hundreds of full-image passes on a face), but in O(log) union-find rounds."""
    fg = weak_or_strong > 0.25
    labels = _labels(fg)
    has_strong = torch.zeros(int(labels.max()) + 1, dtype=torch.bool, device=labels.device)
    has_strong[labels[weak_or_strong > 0.75]] = True
    has_strong[0] = False
    return has_strong[labels]


# ----------------------------------------------------------------------------------------------------------------
# pix2pix / Piotr Dollar toolbox post-processing of a soft edge map (PostprocessHED.m)
# ----------------------------------------------------------------------------------------------------------------


def _pad_symmetric(x: torch.Tensor, pad: int) -> torch.Tensor:
    """MATLAB 'symmetric' padding (the edge pixel repeated: ``d c b a | a b c d``) of the last two dims."""
    if pad <= 0:
        return x
    pad_h, pad_w = min(pad, x.shape[-2]), min(pad, x.shape[-1])
    x = torch.cat([x[..., :pad_h, :].flip(-2), x, x[..., -pad_h:, :].flip(-2)], -2)
    x = torch.cat([x[..., :pad_w].flip(-1), x, x[..., -pad_w:].flip(-1)], -1)
    if pad_h < pad or pad_w < pad:  # tiny images: replicate the rest
        x = F.pad(x, (pad - pad_w, pad - pad_w, pad - pad_h, pad - pad_h), mode="replicate")
    return x


def conv_tri(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Piotr Dollar's ``convTri(x, r)`` for integer r >= 1: separable triangle filter [1 .. r+1 .. 1] / (r+1)^2,
    symmetric border.  [B, C, H, W] -> same."""
    r = int(radius)
    if r < 1:
        return x
    # the triangle is a box of width r + 1 convolved with itself (as convTri computes it): two stride-1 box means
    xp = _pad_symmetric(x, r)
    return F.avg_pool2d(F.avg_pool2d(xp, r + 1, stride=1), r + 1, stride=1)


def matlab_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``[gx, gy] = gradient(x)``: central differences inside, one-sided at the borders (x = along W)."""

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        if n < 2:
            return torch.zeros_like(t)
        inner = (t.narrow(dim, 2, n - 2) - t.narrow(dim, 0, n - 2)) * 0.5
        first = t.narrow(dim, 1, 1) - t.narrow(dim, 0, 1)
        last = t.narrow(dim, n - 1, 1) - t.narrow(dim, n - 2, 1)
        return torch.cat([first, inner, last], dim)

    return along(x, -1), along(x, -2)


def nms_orientation(edges: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Edge normal orientation in [0, pi) as pix2pix computes it for ``edgesNmsMex``:
    ``[Ox, Oy] = gradient(convTri(E, 4)); [Oxx, ~] = gradient(Ox); [Oxy, Oyy] = gradient(Oy);
    O = mod(atan(Oyy .* sign(-Oxy) ./ (Oxx + 1e-5)), pi)``, except that sign(0) is taken as 1: with MATLAB's
    sign(0) = 0 an exactly axis-aligned horizontal ridge (Oxy = 0, common in synthetic or padded images) gets O = 0
    and is suppressed along the wrong axis; elsewhere the two agree."""
    ox, oy = matlab_gradient(conv_tri(edges, radius))
    oxx, _ = matlab_gradient(ox)
    oxy, oyy = matlab_gradient(oy)
    sign = torch.where(oxy > 0, -1.0, 1.0).to(edges.dtype)  # sign(-Oxy), with sign(0) = 1
    return torch.remainder(torch.atan(oyy * sign / (oxx + 1e-5)), math.pi)


def edges_nms(edges: torch.Tensor, orientation: torch.Tensor, r: int = 1, s: int = 5, m: float = 1.01) -> torch.Tensor:
    """Piotr Dollar's ``edgesNmsMex(E, O, r, s, m)``: a pixel is zeroed when ``m * E`` is below the bilinearly
    interpolated E at any offset d in [-r, r] \\ {0} along the normal (cos O, sin O) (coordinates clamped to the
    image); then the ``s`` pixels along every border are faded linearly (x ``i / s``, i the distance to it)."""
    batch, _, height, width = edges.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=edges.device, dtype=edges.dtype),
        torch.arange(width, device=edges.device, dtype=edges.dtype),
        indexing="ij",
    )
    co, si = torch.cos(orientation[:, 0]), torch.sin(orientation[:, 0])
    keep = torch.ones_like(edges, dtype=torch.bool)
    scaled = edges * m
    for d in [d for d in range(-int(r), int(r) + 1) if d != 0]:
        px = (xs + d * co).clamp(0, width - 1.001)
        py = (ys + d * si).clamp(0, height - 1.001)
        grid = torch.stack([px / max(width - 1, 1) * 2 - 1, py / max(height - 1, 1) * 2 - 1], -1)
        e0 = F.grid_sample(edges, grid, mode="bilinear", padding_mode="border", align_corners=True)
        keep &= scaled >= e0
    out = torch.where(keep, edges, torch.zeros_like(edges))
    s = int(s)
    if s > 0:
        fade_y = (torch.arange(height, device=edges.device, dtype=edges.dtype)).clamp(max=s)
        fade_y = torch.minimum(fade_y, fade_y.flip(0)) / s
        fade_x = (torch.arange(width, device=edges.device, dtype=edges.dtype)).clamp(max=s)
        fade_x = torch.minimum(fade_x, fade_x.flip(0)) / s
        out = out * fade_y.view(-1, 1) * fade_x.view(1, -1)
    return out


def smooth_curves(binary: torch.Tensor, sigma: float, level: float) -> torch.Tensor:
    """Curve smoothing of a binary edge map: Gaussian blur (sigma px), re-threshold at ``level`` (a fraction of a
    straight line's blurred peak), so 1-px zig-zags straighten and 1-px gaps close; thin afterwards."""
    if sigma <= 0:
        return binary > 0.5
    radius = max(1, math.ceil(3 * sigma))
    x = binary.float()
    blurred = gaussian_blur2d(x, (2 * radius + 1, 2 * radius + 1), (sigma, sigma))
    peak = 1.0 / (math.sqrt(2 * math.pi) * sigma)  # blurred peak of an infinite straight 1-px line
    return blurred >= level * min(1.0, peak)


# ----------------------------------------------------------------------------------------------------------------
# Extractor
# ----------------------------------------------------------------------------------------------------------------


def _scale(value: float, height: int, width: int, reference: int | None, floor: float = 0.5) -> float:
    """A length given in pixels at ``reference`` resolution, at this image's min(H, W)."""
    if reference is None:
        return value
    return max(floor, value * min(height, width) / reference)


class SketchExtractor(nn.Module):
    """Binary sketch {0, 1} [B, 1, H, W] of an image batch in [-1, 1] (RGB), on the batch's device.

    ``detector``: ``auto`` (``hed`` when ``hed_weights`` is set, else ``dexined`` when ``dexined_weights`` is set,
    else ``classic``), ``classic``, ``hed``, ``canny`` or ``dexined``; see the module docstring.  Lengths (sigmas,
    minimum lengths) are in pixels at ``reference_size`` and scale with min(H, W).  Every default is cited in
    ``conf/data/synthesis/default.yaml``.
    """

    def __init__(
        self,
        detector: str = "auto",
        clahe_clip_limit: float = 2.0,
        clahe_grid_size: tuple[int, int] | list[int] = (8, 8),
        reference_size: int | None = 512,
        # HED (pix2pix PostprocessHED.m)
        hed_weights: str | os.PathLike | None = None,
        hed_pad: int = 128,
        nms: bool = True,
        nms_orientation_radius: int = 4,
        nms_radius: int = 1,
        nms_border: int = 5,
        nms_multiplier: float = 1.01,
        hed_threshold: float = 25.0 / 255.0,
        # classic
        classic_median: int = 5,
        classic_bilateral_iterations: int = 5,
        classic_bilateral_kernel: int = 9,
        classic_bilateral_sigma_color: float = 0.1,
        classic_bilateral_sigma_space: float = 3.0,
        classic_scales: tuple[float, ...] | list[float] = (1.5, 3.0),
        classic_surround: float = 4.0,
        classic_inhibition: float = 1.5,
        classic_low: float = 0.04,
        classic_high: float = 0.12,
        classic_min_length: int = 20,
        # canny (previous default)
        low_threshold: float = 0.1,
        high_threshold: float = 0.2,
        kernel_size: int | None = None,
        sigma: float = 3.0,
        # dexined
        dexined_weights: str | os.PathLike | None = None,
        dexined_threshold: float = 0.5,
        # all detectors
        curve_smoothing_sigma: float = 1.0,
        curve_smoothing_level: float = 0.5,
        thinning: bool = True,
        thinning_max_iter: int | None = None,
        min_component_size: int = 5,
    ):
        super().__init__()
        if detector not in DETECTORS:
            raise ValueError(f"sketch detector must be one of {DETECTORS}, got {detector!r}")
        self.hed_weights = None if hed_weights in (None, "") else str(hed_weights)
        self.dexined_weights = None if dexined_weights in (None, "") else str(dexined_weights)
        if detector == "auto":
            detector = "hed" if self.hed_weights else ("dexined" if self.dexined_weights else "classic")
        if detector == "hed" and not self.hed_weights:
            raise ValueError(
                "sketch detector=hed needs hed_weights: the path of the BSDS500 HED state dict "
                "(sniklaus/pytorch-hed network-bsds500.pytorch)"
            )
        if detector == "dexined" and not self.dexined_weights:
            raise ValueError("sketch detector=dexined needs dexined_weights: the path of the kornia DexiNed weights")
        self.detector = detector
        self.clahe_clip_limit = float(clahe_clip_limit)
        self.clahe_grid_size = tuple(int(g) for g in clahe_grid_size)
        self.reference_size = None if reference_size is None else int(reference_size)
        self.hed_pad = int(hed_pad)
        self.nms = bool(nms)
        self.nms_orientation_radius = int(nms_orientation_radius)
        self.nms_radius, self.nms_border, self.nms_multiplier = int(nms_radius), int(nms_border), float(nms_multiplier)
        self.hed_threshold = float(hed_threshold)
        self.classic_median = int(classic_median)
        self.classic_bilateral_iterations = int(classic_bilateral_iterations)
        self.classic_bilateral_kernel = int(classic_bilateral_kernel)
        self.classic_bilateral_sigma_color = float(classic_bilateral_sigma_color)
        self.classic_bilateral_sigma_space = float(classic_bilateral_sigma_space)
        self.classic_scales = tuple(float(s) for s in classic_scales)
        self.classic_surround = float(classic_surround)
        self.classic_inhibition = float(classic_inhibition)
        self.classic_low, self.classic_high = float(classic_low), float(classic_high)
        self.classic_min_length = int(classic_min_length)
        self.low_threshold, self.high_threshold = float(low_threshold), float(high_threshold)
        self.kernel_size = None if kernel_size is None else int(kernel_size)
        self.sigma = float(sigma)
        self.dexined_threshold = float(dexined_threshold)
        self.curve_smoothing_sigma = float(curve_smoothing_sigma)
        self.curve_smoothing_level = float(curve_smoothing_level)
        self.thinning = bool(thinning)
        self.thinning_max_iter = thinning_max_iter
        self.min_component_size = int(min_component_size)
        self.hed = None
        self.dexined = None
        if detector == "hed":
            from archs.hed import load_hed

            self.hed = load_hed(self.hed_weights)
        elif detector == "dexined":
            self.dexined = self._load_dexined(self.dexined_weights)

    @staticmethod
    def _load_dexined(path: str) -> nn.Module:
        from kornia.models.dexined import DexiNed  # kornia 0.9.0 location (kornia.filters.DexiNed is gone)

        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(
                f"DexiNed weights file {str(file)!r} not found (sketch.dexined_weights); download the BIPED "
                "weights (HF kornia/dexined) to that path, or set dexined_weights: null for the classic detector"
            )
        net = DexiNed(pretrained=False)
        try:
            from weights.pretrained import load_pretrained

            state = load_pretrained(file, "DexiNed weights")
        except Exception as err:  # EOFError, UnpicklingError, zip errors: no path in them
            raise ValueError(
                f"DexiNed weights {str(file)!r} (sketch.dexined_weights, {file.stat().st_size} bytes) "
                f"cannot be read with torch.load(weights_only=True): empty, truncated, or a pickle "
                f"that runs code? {type(err).__name__}: {err}"
            ) from err
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"DexiNed weights {str(file)!r} hold a {type(state).__name__}, not a state dict")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"DexiNed weights {str(file)!r}: not a kornia DexiNed state dict ({err})") from err
        net.eval().requires_grad_(False)
        return net

    def extra_repr(self) -> str:
        if self.detector == "hed":
            detail = f"hed={self.hed_weights!r}, nms={self.nms}, threshold={self.hed_threshold:.4f}"
        elif self.detector == "dexined":
            detail = f"dexined={self.dexined_weights!r}, threshold={self.dexined_threshold}"
        elif self.detector == "canny":
            detail = f"canny, thresholds=({self.low_threshold}, {self.high_threshold}), sigma={self.sigma}"
        else:
            detail = (
                f"classic, bilateral={self.classic_bilateral_iterations}x{self.classic_bilateral_kernel}, "
                f"scales={self.classic_scales}, surround={self.classic_surround}, "
                f"inhibition={self.classic_inhibition}, hysteresis=({self.classic_low}, {self.classic_high}), "
                f"min_length={self.classic_min_length}"
            )
        return (
            f"{detail}, clahe=({self.clahe_clip_limit}, {self.clahe_grid_size}), "
            f"curve_smoothing={self.curve_smoothing_sigma}, thinning={self.thinning}, "
            f"min_component_size={self.min_component_size}"
        )

    def gaussian(self, height: int, width: int) -> tuple[float, int]:
        """Canny's Gaussian (sigma, kernel size) at this resolution: ``sigma`` is in pixels at ``reference_size``
        and scales with min(H, W) (floor 0.5); the kernel defaults to 2 ceil(3 sigma) + 1."""
        sigma = _scale(self.sigma, height, width, self.reference_size)
        kernel_size = self.kernel_size if self.kernel_size is not None else 2 * math.ceil(3 * sigma) + 1
        return sigma, kernel_size

    def _clahe(self, x01: torch.Tensor) -> torch.Tensor:
        return equalize_clahe(x01.clamp(0, 1), clip_limit=self.clahe_clip_limit, grid_size=self.clahe_grid_size)

    # -- soft boundary maps ------------------------------------------------------------------------------------
    def hed_edges(self, x01: torch.Tensor) -> torch.Tensor:
        """HED fused edge probability [B, 1, H, W]: CLAHE per channel, reflect-pad ``hed_pad`` (pix2pix
        batch_hed.py pads 128 so the border gets full context), BGR, the network, crop."""
        net = self.hed.to(x01.device)
        bgr = self._clahe(x01).flip(1)
        height, width = bgr.shape[-2:]
        pad = min(self.hed_pad, height - 1, width - 1)
        if pad > 0:
            bgr = F.pad(bgr, (pad, pad, pad, pad), mode="reflect")
        prob = net(bgr.to(next(net.parameters()).dtype)).float()
        return prob[..., pad : pad + height, pad : pad + width]

    def smooth_for_classic(self, x01: torch.Tensor) -> torch.Tensor:
        """Edge-preserving smoothing: CLAHE on luminance (the paper's sketch pre-processing), median, repeated
        bilateral.  Flattens texture (skin pores, hair strands, lace) while keeping part boundaries sharp."""
        from synthesis.color import bilateral, median_filter  # OpenCV on CPU, tap loop / kornia elsewhere

        height, width = x01.shape[-2:]
        gray = rgb_to_grayscale(x01)
        eq = self._clahe(gray)
        x = (x01 * (eq / gray.clamp(min=1e-3)).clamp(0, 4)).clamp(0, 1)  # CLAHE gain applied to RGB
        if self.classic_median > 1:
            x = median_filter(x, self.classic_median)
        k = self.classic_bilateral_kernel
        k = max(3, int(round(_scale(k, height, width, self.reference_size, floor=3)))) | 1
        sigma_space = _scale(self.classic_bilateral_sigma_space, height, width, self.reference_size)
        for _ in range(self.classic_bilateral_iterations):
            x = bilateral(x, k, self.classic_bilateral_sigma_color, sigma_space)
        return x

    def classic_boundaries(self, x01: torch.Tensor) -> torch.Tensor:
        """Soft boundary strength [B, 1, H, W] >= 0 (units: colour contrast in [0, 1]) of the classic detector."""
        smooth = self.smooth_for_classic(x01)
        height, width = smooth.shape[-2:]
        maps = []
        for s in self.classic_scales:
            sigma = _scale(s, height, width, self.reference_size)
            r = max(1, math.ceil(3 * sigma))
            blurred = gaussian_blur2d(smooth, (2 * r + 1, 2 * r + 1), (sigma, sigma))
            gx, gy = matlab_gradient(blurred)
            # colour gradient magnitude (sum of the channels' squared derivatives), scale-normalised (x sigma
            # sqrt(2 pi): a unit step then reads about 1 whatever the scale)
            mag = (gx.square() + gy.square()).sum(1, keepdim=True).sqrt() * (sigma * math.sqrt(2 * math.pi))
            ss = sigma * self.classic_surround
            rs = max(1, math.ceil(3 * ss))
            surround = gaussian_blur2d(mag, (2 * rs + 1, 2 * rs + 1), (ss, ss))
            maps.append((mag - self.classic_inhibition * surround).clamp(min=0))
        soft = maps[0]
        for extra in maps[1:]:
            soft = soft * extra
        return soft.pow(1.0 / len(maps))

    # -- binary edges ------------------------------------------------------------------------------------------
    def _nms(self, soft: torch.Tensor) -> torch.Tensor:
        if not self.nms:
            return soft
        orientation = nms_orientation(soft, self.nms_orientation_radius)
        return edges_nms(soft, orientation, self.nms_radius, self.nms_border, self.nms_multiplier)

    def edges(self, image: torch.Tensor) -> torch.Tensor:
        """Raw binary edges before curve smoothing, thinning and component removal."""
        x01 = ((image.float() + 1.0) * 0.5).clamp(0, 1)
        if self.detector == "hed":
            soft = self._nms(self.hed_edges(x01))
            return soft >= max(self.hed_threshold, torch.finfo(soft.dtype).eps)  # pix2pix: E >= max(eps, t)
        if self.detector == "classic":
            soft = self._nms(self.classic_boundaries(x01))
            tri = (soft >= self.classic_low).float() * 0.5 + (soft >= self.classic_high).float() * 0.5
            return hysteresis(tri)
        if self.detector == "canny":
            gray = self._clahe(rgb_to_grayscale(x01))
            sigma, kernel_size = self.gaussian(*gray.shape[-2:])
            _, edges = canny(
                gray,
                low_threshold=self.low_threshold,
                high_threshold=self.high_threshold,
                kernel_size=kernel_size,
                sigma=(sigma, sigma),
                hysteresis=False,
            )
            return hysteresis(edges)
        net = self.dexined.to(image.device)
        eq = self._clahe(x01)
        mean = torch.tensor(DEXINED_BGR_MEAN, device=image.device).view(1, 3, 1, 1)
        bgr = eq.flip(1) * 255.0 - mean
        height, width = bgr.shape[-2:]
        ph, pw = (-height) % 16, (-width) % 16  # DexiNed's strided blocks want multiples of 16
        if ph or pw:
            bgr = F.pad(bgr, (0, pw, 0, ph), mode="replicate")
        logits = net(bgr)[..., :height, :width]
        return torch.sigmoid(logits) > self.dexined_threshold

    def min_size(self, height: int, width: int) -> int:
        """Smallest kept component (px): ``min_component_size`` (pix2pix), and for the classic detector at least
        ``classic_min_length`` at ``reference_size`` (short-component removal)."""
        size = self.min_component_size
        if self.detector == "classic":
            size = max(size, int(round(_scale(self.classic_min_length, height, width, self.reference_size, 1))))
        return size

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image``: [B, 3, H, W] in [-1, 1], RGB.  Returns float {0, 1} [B, 1, H, W] in the image's dtype."""
        height, width = image.shape[-2:]
        edges = self.edges(image)
        if self.curve_smoothing_sigma > 0 and self.thinning:  # smoothing widens curves; thinning narrows them
            sigma = _scale(self.curve_smoothing_sigma, height, width, self.reference_size)
            edges = smooth_curves(edges, sigma, self.curve_smoothing_level)
        if self.thinning:
            edges = thin(edges, self.thinning_max_iter) > 0.5
        size = self.min_size(height, width)
        if size > 1:
            edges = remove_small_components(edges, size) > 0.5
        return edges.to(image.dtype if image.is_floating_point() else torch.float32)
