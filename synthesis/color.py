"""Colour-map channel for SC-FEGAN, computed on the batch's device (arXiv 1902.06838 sec. 3.1).

Paper: median filter 3 -> 20 x bilateral filter -> face segmentation (GFC) -> each segment painted with its median
colour -> x M.  Segmentation, per sample (``segmentation='auto'``):

* the CelebAMask-HQ 19-class label map when the batch carries one (for the paper's GFC, background its own segment);
* else a face-parsing network when ``parsing_weights`` is given (:mod:`archs.bisenet`, the CelebAMask-HQ BiSeNet of
  zllrunning/face-parsing.PyTorch; its classes are mapped to the CelebAMask-HQ order);
* else regions that follow boundaries rather than luminance levels: SLIC superpixels (Achanta et al., TPAMI 2012) on
  the filtered image in CIELAB, then region merging on their adjacency graph -- two adjacent regions merge when
  the mean colour difference *across their shared boundary* is small (shading changes slowly, so a lit and a
  shadowed cheek merge, while skin/hair/lip boundaries are steps) and their mean colours are not too far apart --
  and finally every region smaller than ``min_region_area`` is merged into its most similar neighbour, so small
  objects (earrings, background text) vanish into what surrounds them;
* ``segmentation='kmeans'``: the previous colour+position k-means clustering.

Speed: the filtering runs at ``work_size`` (the short side; the bilateral kernel and sigma_space scale with it)
and per-region medians use a ``median_bins``-bin histogram per region instead of a sort; labels stay at full
resolution.  Output in [-1, 1] (image convention), constant on every region; the pipeline multiplies it by M.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.filters import bilateral_blur, get_gaussian_kernel2d, median_blur
from torch import nn

SEGMENTATIONS = ("auto", "labels", "parsing", "regions", "kmeans")


def bilateral_taps(
    image: torch.Tensor,
    kernel_size: int,
    sigma_color: float,
    sigma_space: float,
    window: str = "disk",
    border_type: str = "reflect",
) -> torch.Tensor:
    """Bilateral filter with the L1 colour distance, summed tap by tap (memory O(image), any device).

    Weight of a neighbour at offset r: exp(-|r|^2 / (2 sigma_space^2)) x exp(-d^2 / (2 sigma_color^2)), d the sum of
    absolute channel differences to the centre pixel.  ``window='disk'`` keeps the taps with |r| <= kernel_size // 2,
    which is OpenCV's ``cv2.bilateralFilter(src, d=kernel_size, sigmaColor, sigmaSpace)`` (the ports' filter; equal
    to it within 1e-6 on float images); ``window='square'`` keeps the whole square, which is
    ``kornia.filters.bilateral_blur(..., color_distance_type='l1')``.  Border: reflect-101 (both libraries' default).
    kornia's own off-CPU path unfolds every window instead: 81 x a 16 x 3 x 512 x 512 batch is ~4 GB per temporary.
    """
    if window not in ("disk", "square"):
        raise ValueError(f"window must be 'disk' or 'square', got {window!r}")
    k = int(kernel_size)
    pad = (k - 1) // 2
    height, width = image.shape[-2:]
    space = get_gaussian_kernel2d((k, k), (sigma_space, sigma_space), device="cpu", dtype=torch.float64)
    space = space.reshape(-1).tolist()
    scale = -0.5 / sigma_color**2
    padded = F.pad(image, (pad, pad, pad, pad), mode=border_type)
    weighted = torch.zeros_like(image)
    normalizer = torch.zeros_like(image[:, :1])
    for tap in range(k * k):
        dy, dx = divmod(tap, k)
        if window == "disk" and (dy - pad) ** 2 + (dx - pad) ** 2 > pad * pad:
            continue
        values = padded[..., dy : dy + height, dx : dx + width]
        dist = (values - image).abs().sum(1, keepdim=True)
        weight = dist.square_().mul_(scale).exp_().mul_(space[tap])
        weighted.addcmul_(values, weight)
        normalizer.add_(weight)
    return weighted.div_(normalizer)


def bilateral_opencv(image: torch.Tensor, kernel_size: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """``cv2.bilateralFilter`` per sample (CPU tensors; float32 in, float32 out)."""
    arr = image.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    out = np.stack([cv2.bilateralFilter(a, int(kernel_size), float(sigma_color), float(sigma_space)) for a in arr])
    if out.ndim == 3:  # one channel: OpenCV drops the channel axis
        out = out[..., None]
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(image.device, image.dtype)


def region_median(values: torch.Tensor, regions: torch.Tensor, num_regions: int) -> torch.Tensor:
    """Paint every region of every sample with its per-channel median (numpy's: mean of the two middle values).

    ``values``: [B, C, H, W]; ``regions``: long [B, 1, H, W] in [0, num_regions).  Two stable sorts (by value, then
    by region key) give each region's sorted values in one contiguous run; exact and deterministic.
    """
    batch, channels, height, width = values.shape
    key = (regions.view(batch, -1) + torch.arange(batch, device=values.device).view(-1, 1) * num_regions).reshape(-1)
    v = values.permute(1, 0, 2, 3).reshape(channels, -1)
    v_sorted, order = torch.sort(v, dim=1, stable=True)
    k_by_value = key[order]
    k_sorted, order2 = torch.sort(k_by_value, dim=1, stable=True)
    v_sorted = torch.gather(v_sorted, 1, order2)
    counts = torch.bincount(key, minlength=batch * num_regions)
    starts = torch.cumsum(counts, 0) - counts
    lo = (starts + (counts - 1).clamp(min=0) // 2).clamp(max=key.numel() - 1)
    hi = (starts + counts // 2).clamp(max=key.numel() - 1)
    med = (v_sorted[:, lo] + v_sorted[:, hi]) * 0.5  # [C, B * R]; empty regions are never looked up
    painted = med[:, key].view(channels, batch, height, width).permute(1, 0, 2, 3)
    return painted.contiguous()


def bilateral(image: torch.Tensor, kernel_size: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """``cv2.bilateralFilter`` (disk window) on CPU tensors, the same filter tap by tap elsewhere."""
    if image.device.type == "cpu":
        return bilateral_opencv(image, kernel_size, sigma_color, sigma_space)
    return bilateral_taps(image, kernel_size, sigma_color, sigma_space, window="disk")


def median_filter(image: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Median filter (reflect-101 border): ``cv2.medianBlur`` on CPU float32 (k 3 or 5), kornia elsewhere."""
    k = int(kernel_size)
    if k <= 1:
        return image
    if image.device.type == "cpu" and k in (3, 5):
        arr = image.detach().to(torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        out = np.stack([cv2.medianBlur(a, k).reshape(a.shape) for a in arr])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(image.dtype)
    return median_blur(image, k)


def region_median_table(values: torch.Tensor, regions: torch.Tensor, num_regions: int, bins: int = 1024):
    """Per-region, per-channel medians [B, R, C] of ``values`` in [0, 1] from a ``bins``-bin histogram (the centre
    of the bin holding the lower median: within half a bin of numpy's median), and region sizes [B, R]."""
    batch, channels = values.shape[:2]
    q = (values.clamp(0, 1) * bins).long().clamp(max=bins - 1)  # [B, C, H, W]
    key = regions.view(batch, 1, -1) + torch.arange(batch, device=values.device).view(-1, 1, 1) * num_regions
    key = (key * channels + torch.arange(channels, device=values.device).view(1, -1, 1)) * bins + q.flatten(2)
    hist = torch.bincount(key.flatten(), minlength=batch * num_regions * channels * bins)
    hist = hist.view(batch, num_regions, channels, bins)
    counts = hist[..., 0, :].sum(-1)  # [B, R]
    rank = ((counts - 1).clamp(min=0) // 2).view(batch, num_regions, 1, 1)
    below = hist.cumsum(-1) > rank  # first bin whose cumulative count passes the lower-median rank
    idx = below.to(torch.uint8).argmax(-1)
    return (idx.to(values.dtype) + 0.5) / bins, counts


def paint_regions(table: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W]: every pixel the ``table`` [B, R, C] row of its region (long [B, 1, H, W])."""
    batch, _, height, width = regions.shape
    flat = regions.view(batch, -1, 1).expand(-1, -1, table.shape[-1])
    return torch.gather(table, 1, flat).transpose(1, 2).reshape(batch, -1, height, width)


def _resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if labels.shape[-2:] == tuple(size):
        return labels
    return F.interpolate(labels.float(), size=size, mode="nearest").long()


# ----------------------------------------------------------------------------------------------------------------
# Superpixels and region merging (labels without a parser), batched on the device
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def slic(lab: torch.Tensor, step: int, compactness: float = 10.0, iterations: int = 5) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012) of a CIELAB batch [B, 3, H, W]: k-means in (L, a, b, y, x) with the
    spatial distance weighted by ``compactness / step``, every pixel compared with the centres of its grid cell and
    of the 8 cells around it (the paper's 2S x 2S search window).  Labels long [B, 1, H, W] in
    [0, ceil(H/step) * ceil(W/step)), initialised to the grid cells."""
    batch, _, height, width = lab.shape
    device, dtype = lab.device, lab.dtype
    step = int(step)
    gy, gx = math.ceil(height / step), math.ceil(width / step)
    cells = gy * gx
    ys = torch.arange(height, device=device, dtype=dtype).view(1, 1, -1, 1).expand(batch, 1, height, width)
    xs = torch.arange(width, device=device, dtype=dtype).view(1, 1, 1, -1).expand(batch, 1, height, width)
    spatial = compactness / step
    feats = torch.cat([lab, ys * spatial, xs * spatial], 1)  # [B, 5, H, W]; spatial weight folded in
    cell = (torch.arange(height, device=device) // step).view(-1, 1) * gx + (
        torch.arange(width, device=device) // step
    ).view(1, -1)
    labels = cell.view(1, 1, height, width).expand(batch, 1, height, width).contiguous()
    offset = torch.arange(batch, device=device).view(-1, 1) * cells
    flat = feats.flatten(2).transpose(1, 2).reshape(-1, 5)
    far = 1e6  # an empty or outside-the-grid centre
    for _ in range(int(iterations)):
        key = (labels.view(batch, -1) + offset).flatten()
        sums = torch.zeros(batch * cells, 5, device=device, dtype=dtype).index_add_(0, key, flat)
        count = torch.bincount(key, minlength=batch * cells).to(dtype)
        centres = sums / count.clamp(min=1).unsqueeze(1)
        centres[count == 0] = far
        grid = F.pad(centres.view(batch, gy, gx, 5).permute(0, 3, 1, 2), (1, 1, 1, 1), value=far)
        best = torch.full((batch, 1, height, width), float("inf"), device=device, dtype=dtype)
        new = labels.clone()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = grid[:, :, 1 + dy : 1 + dy + gy, 1 + dx : 1 + dx + gx]
                up = shifted.repeat_interleave(step, 2).repeat_interleave(step, 3)[:, :, :height, :width]
                dist = (feats - up).square_().sum(1, keepdim=True)
                better = dist < best
                best = torch.minimum(dist, best)
                new = torch.where(better, (cell + (dy * gx + dx)).view(1, 1, height, width), new)
        labels = new
    return labels


def _compact(global_labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    uniq, inverse = torch.unique(global_labels, return_inverse=True)
    return inverse.view_as(global_labels), int(uniq.numel())


def _region_graph(g: torch.Tensor, feats: torch.Tensor, num: int):
    """Region adjacency graph of compact labels ``g`` [B, H, W] (4-neighbours) over features [B, C, H, W]:
    edges (i, j) with i < j, the summed feature distance of the pixel pairs across each shared boundary and their
    number, and each region's area and feature sum."""
    area = torch.bincount(g.flatten(), minlength=num).to(feats.dtype)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    total = torch.zeros(num, feats.shape[1], device=feats.device, dtype=feats.dtype).index_add_(0, g.flatten(), flat)
    a = torch.cat([g[:, :, :-1].flatten(), g[:, :-1, :].flatten()])
    b = torch.cat([g[:, :, 1:].flatten(), g[:, 1:, :].flatten()])
    diff = torch.cat(
        [
            (feats[..., :-1] - feats[..., 1:]).square().sum(1).sqrt().flatten(),
            (feats[..., :-1, :] - feats[..., 1:, :]).square().sum(1).sqrt().flatten(),
        ]
    )
    cross = a != b
    i, j, sums = _aggregate_edges(a[cross], b[cross], diff[cross], torch.ones_like(diff[cross]), num)
    return i, j, sums[0], sums[1], area, total


def _aggregate_edges(a, b, diff_sum, length, num):
    """Unique undirected edges of (a, b) with their summed boundary differences and lengths."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    keys, inv = torch.unique(lo * num + hi, return_inverse=True)
    sums = torch.zeros(2, keys.numel(), device=diff_sum.device, dtype=diff_sum.dtype)
    sums[0].index_add_(0, inv, diff_sum)
    sums[1].index_add_(0, inv, length)
    return keys // num, keys % num, sums


def _union(num: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Root (smallest member) of every node after merging along the edges (i, j): min-label propagation with
    pointer jumping (rounds ~ log of the longest merge chain)."""
    parent = torch.arange(num, device=i.device)
    while True:
        m = torch.minimum(parent[i], parent[j])
        new = parent.clone()
        new.scatter_reduce_(0, i, m, reduce="amin")
        new.scatter_reduce_(0, j, m, reduce="amin")
        new = new[new]
        if torch.equal(new, parent):
            return parent
        parent = new


def _best_edges(num: int, i, j, cost, allowed_i, allowed_j) -> torch.Tensor:
    """Edges that are the cheapest allowed edge of one of their endpoints (Boruvka step)."""
    inf = torch.full((num,), float("inf"), device=cost.device, dtype=cost.dtype)
    ci = torch.where(allowed_i, cost, torch.full_like(cost, float("inf")))
    cj = torch.where(allowed_j, cost, torch.full_like(cost, float("inf")))
    best = inf.clone()
    best.scatter_reduce_(0, i, ci, reduce="amin")
    best.scatter_reduce_(0, j, cj, reduce="amin")
    return (allowed_i & (ci <= best[i])) | (allowed_j & (cj <= best[j]))


@torch.no_grad()
def merge_regions(
    labels: torch.Tensor,
    feats: torch.Tensor,
    boundary_threshold: float,
    mean_threshold: float,
    min_area: int,
    max_rounds: int = 100,
) -> torch.Tensor:
    """Merge adjacent regions of ``labels`` [B, 1, H, W] (feature map ``feats`` [B, C, H, W], e.g. CIELAB).

    Phase 1, repeated until nothing merges: each region merges with its neighbour of lowest boundary contrast (mean
    feature distance between the 4-adjacent pixel pairs across the shared boundary) when that contrast is below
    ``boundary_threshold`` and the regions' mean features are closer than ``mean_threshold``.  Phase 2: every
    region smaller than ``min_area`` pixels merges into the neighbour with the closest mean, until none is left
    (a region alone in its image stays).  The pixels are visited once, to build the region adjacency graph; the
    rounds then work on the graph.  Returns compact labels [B, 1, H, W] (0 .. regions of the sample - 1).
    """
    batch, _, height, width = labels.shape
    per = int(labels.max()) + 1
    g, num = _compact(
        labels.view(batch, height, width) + torch.arange(batch, device=labels.device).view(-1, 1, 1) * per
    )
    i, j, diff_sum, length, area, total = _region_graph(g, feats, num)
    sample = torch.zeros(num, dtype=torch.long, device=g.device)
    sample[g.flatten()] = torch.arange(batch, device=g.device).repeat_interleave(height * width)
    mapping = torch.arange(num, device=g.device)  # superpixel -> current region
    for phase in (1, 2):
        for _ in range(max_rounds):
            if i.numel() == 0:
                break
            mean = total / area.clamp(min=1).unsqueeze(1)
            mean_dist = (mean[i] - mean[j]).square().sum(1).sqrt()
            if phase == 1:
                boundary = diff_sum / length.clamp(min=1)
                ok = (boundary < boundary_threshold) & (mean_dist < mean_threshold)
                chosen = _best_edges(num, i, j, boundary, ok, ok)
            else:
                small = area < min_area
                chosen = _best_edges(num, i, j, mean_dist, small[i], small[j])
            if not bool(chosen.any()):
                break
            root = _union(num, i[chosen], j[chosen])
            uniq, new_id = torch.unique(root, return_inverse=True)
            num_new = int(uniq.numel())
            mapping = new_id[mapping]
            area = torch.zeros(num_new, device=area.device, dtype=area.dtype).index_add_(0, new_id, area)
            total = torch.zeros(num_new, total.shape[1], device=total.device, dtype=total.dtype).index_add_(
                0, new_id, total
            )
            sample = torch.zeros(num_new, dtype=sample.dtype, device=sample.device).scatter_(0, new_id, sample)
            a, b = new_id[i], new_id[j]
            keep = a != b
            i, j, sums = _aggregate_edges(a[keep], b[keep], diff_sum[keep], length[keep], num_new)
            diff_sum, length, num = sums[0], sums[1], num_new
    g = mapping[g]  # compact ids in sample order (unique sorts, and samples own increasing id ranges)
    first = torch.zeros(batch, dtype=torch.long, device=g.device)
    first[1:] = torch.bincount(sample, minlength=batch).cumsum(0)[:-1]
    return (g - first.view(-1, 1, 1)).view(batch, 1, height, width)


class ColorMapExtractor(nn.Module):
    """Colour map [B, 3, H, W] in [-1, 1] of an image batch in [-1, 1], with optional label maps.

    Every default is cited in ``conf/data/synthesis/default.yaml``.  Filtering: ``median_kernel`` (paper: 3) at
    full resolution, area-downsampling to ``work_size`` (None: full resolution), ``bilateral_iterations`` (paper:
    20) x bilateral(``bilateral_kernel``, ``bilateral_sigma_color``, ``bilateral_sigma_space``) (yingrliu's 9, 25,
    25), kernel and sigma_space in pixels at ``reference_size`` scaled to the working resolution.
    ``bilateral_impl``: ``auto`` = OpenCV on CPU tensors, the tap loop (:func:`bilateral_taps`, the same filter,
    O(image) memory) elsewhere; ``opencv`` / ``taps`` / ``kornia`` (``kornia.filters.bilateral_blur``, square
    window) force one.  Segmentation: see the module docstring.
    """

    def __init__(
        self,
        median_kernel: int = 3,
        bilateral_kernel: int = 9,
        bilateral_sigma_color: float = 25.0 / 255.0,
        bilateral_sigma_space: float = 25.0,
        bilateral_iterations: int = 20,
        bilateral_impl: str = "auto",
        bilateral_window: str = "disk",
        work_size: int | None = 256,
        reference_size: int = 512,
        median_bins: int | None = 1024,
        num_classes: int = 19,
        segmentation: str = "auto",
        parsing_weights: str | os.PathLike | None = None,
        parsing_size: int = 512,
        superpixel_size: float = 16.0,
        superpixel_compactness: float = 10.0,
        superpixel_iterations: int = 3,
        merge_boundary_threshold: float = 4.0,
        merge_mean_threshold: float = 25.0,
        min_region_area: float = 0.002,
        num_clusters: int = 16,
        kmeans_iterations: int = 10,
        position_weight: float = 0.5,
        kmeans_downsample: int = 4,
    ):
        super().__init__()
        if bilateral_impl not in ("auto", "opencv", "taps", "kornia"):
            raise ValueError(f"bilateral_impl must be auto, opencv, taps or kornia, got {bilateral_impl!r}")
        if bilateral_window not in ("disk", "square"):
            raise ValueError(f"bilateral_window must be disk or square, got {bilateral_window!r}")
        if bilateral_impl == "opencv" and bilateral_window != "disk":
            raise ValueError("bilateral_impl=opencv has a disk window; use taps or kornia for window=square")
        if bilateral_impl == "kornia" and bilateral_window != "square":
            raise ValueError("kornia.filters.bilateral_blur has a square window: set bilateral_window=square")
        if segmentation not in SEGMENTATIONS:
            raise ValueError(f"color segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
        self.parsing_weights = None if parsing_weights in (None, "") else str(parsing_weights)
        if segmentation == "parsing" and not self.parsing_weights:
            raise ValueError(
                "color segmentation=parsing needs parsing_weights: the path of the CelebAMask-HQ "
                "BiSeNet state dict (zllrunning/face-parsing.PyTorch 79999_iter.pth)"
            )
        self.median_kernel = int(median_kernel)
        self.bilateral_kernel = int(bilateral_kernel)
        self.bilateral_sigma_color = float(bilateral_sigma_color)
        self.bilateral_sigma_space = float(bilateral_sigma_space)
        self.bilateral_iterations = int(bilateral_iterations)
        self.bilateral_impl = bilateral_impl
        self.bilateral_window = bilateral_window
        self.work_size = None if work_size in (None, 0) else int(work_size)
        self.reference_size = int(reference_size)
        self.median_bins = None if median_bins in (None, 0) else int(median_bins)
        self.num_classes = int(num_classes)
        self.segmentation = segmentation
        self.parsing_size = int(parsing_size)
        self.superpixel_size = float(superpixel_size)
        self.superpixel_compactness = float(superpixel_compactness)
        self.superpixel_iterations = int(superpixel_iterations)
        self.merge_boundary_threshold = float(merge_boundary_threshold)
        self.merge_mean_threshold = float(merge_mean_threshold)
        self.min_region_area = float(min_region_area)
        self.num_clusters = int(num_clusters)
        self.kmeans_iterations = int(kmeans_iterations)
        self.position_weight = float(position_weight)
        self.kmeans_downsample = max(1, int(kmeans_downsample))
        self.parser = None
        if self.parsing_weights and segmentation in ("auto", "parsing"):
            from archs.bisenet import load_bisenet

            self.parser = load_bisenet(self.parsing_weights, self.num_classes)

    def extra_repr(self) -> str:
        seg = self.segmentation
        if self.parser is not None:
            seg += f", parsing={self.parsing_weights!r}"
        elif seg in ("auto", "regions"):
            seg += (
                f", regions(slic {self.superpixel_size}px, merge boundary<{self.merge_boundary_threshold}, "
                f"mean<{self.merge_mean_threshold}, min_area={self.min_region_area})"
            )
        else:
            seg += f", k-means(k={self.num_clusters})"
        return (
            f"median={self.median_kernel}, work_size={self.work_size}, bilateral={self.bilateral_iterations}x(k="
            f"{self.bilateral_kernel}, sigma_color={self.bilateral_sigma_color:.4f}, sigma_space="
            f"{self.bilateral_sigma_space}, impl={self.bilateral_impl!r}, window={self.bilateral_window!r}), "
            f"median_bins={self.median_bins}, segmentation={seg}"
        )

    # -- filtering ---------------------------------------------------------------------------------------------
    def work_shape(self, height: int, width: int) -> tuple[int, int]:
        if self.work_size is None or min(height, width) <= self.work_size:
            return height, width
        scale = self.work_size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def smooth(self, x01: torch.Tensor) -> torch.Tensor:
        """Median filter at full resolution, area-downsample to the working size, repeated bilateral filter."""
        height, width = x01.shape[-2:]
        if self.median_kernel > 1:
            x01 = median_filter(x01, self.median_kernel)
        wh, ww = self.work_shape(height, width)
        scale = min(wh, ww) / self.reference_size if self.work_size is not None else 1.0
        kernel, sigma_space = self.bilateral_kernel, self.bilateral_sigma_space
        if (wh, ww) != (height, width):
            x01 = F.interpolate(x01, size=(wh, ww), mode="area")
            kernel = max(3, int(round(kernel * scale)) | 1)  # odd, scaled with the image
            sigma_space = sigma_space * scale
        impl = self.bilateral_impl
        if impl == "auto":
            if x01.device.type != "cpu":
                impl = "taps"
            else:
                impl = "opencv" if self.bilateral_window == "disk" else "kornia"
        for _ in range(self.bilateral_iterations):
            if impl == "opencv":
                x01 = bilateral_opencv(x01, kernel, self.bilateral_sigma_color, sigma_space)
            elif impl == "kornia":
                x01 = bilateral_blur(x01, kernel, self.bilateral_sigma_color, (sigma_space, sigma_space))
            else:
                x01 = bilateral_taps(x01, kernel, self.bilateral_sigma_color, sigma_space, window=self.bilateral_window)
        return x01

    # -- k-means (segmentation='kmeans') -----------------------------------------------------------------------
    def _features(self, x01: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x01.shape
        ys = (torch.arange(height, device=x01.device, dtype=x01.dtype) + 0.5) / height
        xs = (torch.arange(width, device=x01.device, dtype=x01.dtype) + 0.5) / width
        pos = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).unsqueeze(0).expand(batch, -1, -1, -1)
        feats = torch.cat([x01, pos * self.position_weight], 1)
        return feats.flatten(2).transpose(1, 2)  # [B, N, 5]

    @staticmethod
    def _assign(feats: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        dist = centres.square().sum(-1).unsqueeze(1) - 2 * torch.bmm(feats, centres.transpose(1, 2))
        return dist.argmin(-1)  # ||f||^2 is the same for every centre

    def kmeans_regions(self, x01: torch.Tensor) -> torch.Tensor:
        """Cluster labels long [B, 1, H, W] in [0, num_clusters)."""
        batch, _, height, width = x01.shape
        k = self.num_clusters
        small = x01
        if self.kmeans_downsample > 1 and min(height, width) // self.kmeans_downsample >= 8:
            small = F.interpolate(x01, scale_factor=1 / self.kmeans_downsample, mode="area")
        feats = self._features(small)
        sh, sw = small.shape[-2:]
        gx = math.ceil(math.sqrt(k))
        gy = math.ceil(k / gx)
        cells = [(j, i) for i in range(gy) for j in range(gx)][:k]
        init = torch.tensor(
            [int((i + 0.5) * sh / gy) * sw + int((j + 0.5) * sw / gx) for j, i in cells], device=x01.device
        )
        centres = feats[:, init]  # [B, k, 5]
        for _ in range(self.kmeans_iterations):
            assign = self._assign(feats, centres)
            onehot = F.one_hot(assign, k).to(feats.dtype)  # [B, N, k]
            sums = torch.bmm(onehot.transpose(1, 2), feats)
            counts = onehot.sum(1).unsqueeze(-1)
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        return self._assign(self._features(x01), centres).view(batch, 1, height, width)

    # -- superpixels + region merging (segmentation='regions') -------------------------------------------------
    def merged_regions(self, smooth: torch.Tensor) -> torch.Tensor:
        """Region labels long [B, 1, h, w] of filtered images in [0, 1] at the working resolution."""
        height, width = smooth.shape[-2:]
        lab = rgb_to_lab(smooth.clamp(0, 1))
        step = max(2, int(round(self.superpixel_size * min(height, width) / self.reference_size)))
        sp = slic(lab, step, self.superpixel_compactness, self.superpixel_iterations)
        min_area = max(1, int(round(self.min_region_area * height * width)))
        return merge_regions(sp, lab, self.merge_boundary_threshold, self.merge_mean_threshold, min_area)

    # -- forward -----------------------------------------------------------------------------------------------
    def _paint(self, smooth: torch.Tensor, regions: torch.Tensor, num_regions: int) -> torch.Tensor:
        """Each region (labels at full resolution) painted with the median of the filtered image over it."""
        height, width = regions.shape[-2:]
        if self.median_bins is None:
            full = (
                smooth
                if smooth.shape[-2:] == (height, width)
                else F.interpolate(smooth, size=(height, width), mode="bilinear", align_corners=False)
            )
            return region_median(full, regions, num_regions)
        small_regions = _resize_labels(regions, smooth.shape[-2:])
        table, counts = region_median_table(smooth, small_regions, num_regions, self.median_bins)
        missing = counts == 0  # a region thinner than a working pixel: take its medians at full resolution
        present = torch.zeros_like(missing)
        present.view(-1).scatter_(
            0,
            (
                regions.view(regions.shape[0], -1)
                + torch.arange(regions.shape[0], device=regions.device).view(-1, 1) * num_regions
            ).flatten(),
            True,
        )
        if bool((missing & present).any()):
            full = F.interpolate(smooth, size=(height, width), mode="bilinear", align_corners=False)
            full_table, _ = region_median_table(full, regions, num_regions, self.median_bins)
            table = torch.where((missing & present).unsqueeze(-1), full_table, table)
        return paint_regions(table, regions)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """``image``: [B, 3, H, W] in [-1, 1]; ``seg``: optional long [B, 1, H, W] labels, -1 (or absent) = none.

        Returns [B, 3, H, W] in [-1, 1] in the image's dtype: every segment painted with the median colour of the
        filtered image.
        """
        batch, _, height, width = image.shape
        x01 = ((image.float() + 1.0) * 0.5).clamp(0, 1)
        smooth = self.smooth(x01)
        has_seg = torch.zeros(batch, dtype=torch.bool, device=image.device)
        regions = torch.zeros(batch, 1, height, width, dtype=torch.long, device=image.device)
        num_regions = self.num_classes + 1
        if seg is not None and self.segmentation in ("auto", "labels"):
            seg = seg.to(image.device).view(batch, 1, height, width).long()
            has_seg = (seg >= 0).flatten(1).any(1)
            # an unlabelled pixel in a labelled sample (should not happen) is a segment of its own
            regions = torch.where(seg >= 0, seg.clamp(max=self.num_classes - 1), torch.full_like(seg, self.num_classes))
        todo = (~has_seg).nonzero().flatten()
        if todo.numel():
            if self.parser is not None:
                from archs.bisenet import BISENET_TO_CELEBAMASK

                parser = self.parser.to(image.device)
                lut = torch.tensor(BISENET_TO_CELEBAMASK, device=image.device)
                parsed = parser.parse(x01[todo].to(next(parser.parameters()).dtype), self.parsing_size)
                regions[todo] = lut[parsed.clamp(0, len(BISENET_TO_CELEBAMASK) - 1)]
            elif self.segmentation == "kmeans":
                found = self.kmeans_regions(smooth[todo])
                regions[todo] = _resize_labels(found, (height, width))
                num_regions = max(num_regions, self.num_clusters)
            else:
                found = self.merged_regions(smooth[todo])
                num_regions = max(num_regions, int(found.max()) + 1)
                regions[todo] = _resize_labels(found, (height, width))
        painted = self._paint(smooth, regions, num_regions)
        return (painted * 2.0 - 1.0).to(image.dtype if image.is_floating_point() else torch.float32)
