"""Colour-map channel for SC-FEGAN, computed on the batch's device (REFERENCE 1.11 "Colour map").

Paper: median filter 3 -> 20 x bilateral filter -> face segmentation (GFC) -> each segment painted with its median
colour -> x M.  Here the segmentation is the CelebAMask-HQ 19-class label map when the batch carries one
(REFERENCE 1.11 Rec., background as its own segment); samples without labels are segmented by k-means on the
device (features: colour + ``position_weight`` x normalised position), each cluster painted with its median colour.
Output in [-1, 1] (image convention); the pipeline multiplies it by the mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import bilateral_blur, get_gaussian_kernel2d, median_blur
from torch import nn


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


class ColorMapExtractor(nn.Module):
    """Colour map [B, 3, H, W] in [-1, 1] of an image batch in [-1, 1], with optional label maps.

    Defaults and sources:
      * ``median_kernel`` 3: paper (REFERENCE 1.11, median filter of size 3).
      * ``bilateral_iterations`` 20: paper ("20 applications of a bilateral filter", corroborated by ports).
      * ``bilateral_kernel`` 9, ``bilateral_sigma_color`` 25/255, ``bilateral_sigma_space`` 25: yingrliu's
        ``bilateralFilter(9, 25, 25)`` (REFERENCE 1.11 "Ports deviate"; the port that also uses median 3), with
        sigma_color rescaled from 0-255 to the [0, 1] images filtered here.
      * k-means fallback (no paper counterpart: GFC parsing is replaced by clustering when no labels exist):
        ``num_clusters`` 16 on a 4 x 4 grid initialisation (deterministic, no random init), ``kmeans_iterations`` 10,
        ``position_weight`` 0.5 (colour in [0, 1] per channel, position in [0, 1]), clustering on a
        ``kmeans_downsample`` x 4 area-downsampled image, then every full-resolution pixel assigned to the nearest
        centre.  Design choices, configurable.
      * ``bilateral_window`` ``disk``: the window of ``cv2.bilateralFilter``, which every port ran (taps within
        radius kernel // 2); ``square`` is kornia's ``bilateral_blur`` window.
      * ``bilateral_impl``: ``auto`` = OpenCV on CPU tensors (20 x 9 x 9 bilateral of a 2 x 512^2 batch: ~1 s, against
        ~35 s for kornia's CPU tap loop; kornia when window=square) and :func:`bilateral_taps` (the same filter,
        O(image) memory) on other devices; ``opencv`` / ``taps`` / ``kornia`` (``kornia.filters.bilateral_blur``,
        needs window=square) force one.
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
        num_classes: int = 19,
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
        self.median_kernel = int(median_kernel)
        self.bilateral_kernel = int(bilateral_kernel)
        self.bilateral_sigma_color = float(bilateral_sigma_color)
        self.bilateral_sigma_space = float(bilateral_sigma_space)
        self.bilateral_iterations = int(bilateral_iterations)
        self.bilateral_impl = bilateral_impl
        self.bilateral_window = bilateral_window
        self.num_classes = int(num_classes)
        self.num_clusters = int(num_clusters)
        self.kmeans_iterations = int(kmeans_iterations)
        self.position_weight = float(position_weight)
        self.kmeans_downsample = max(1, int(kmeans_downsample))

    def extra_repr(self) -> str:
        return (
            f"median={self.median_kernel}, bilateral={self.bilateral_iterations}x(k={self.bilateral_kernel}, "
            f"sigma_color={self.bilateral_sigma_color:.4f}, sigma_space={self.bilateral_sigma_space}, "
            f"impl={self.bilateral_impl!r}, window={self.bilateral_window!r}), "
            f"k-means(k={self.num_clusters}, it={self.kmeans_iterations}, position_weight={self.position_weight})"
        )

    # -- filtering ---------------------------------------------------------------------------------------------
    def smooth(self, x01: torch.Tensor) -> torch.Tensor:
        """Median filter then repeated bilateral filter of an image in [0, 1]."""
        if self.median_kernel > 1:
            x01 = median_blur(x01, self.median_kernel)
        impl = self.bilateral_impl
        if impl == "auto":
            if x01.device.type != "cpu":
                impl = "taps"
            else:
                impl = "opencv" if self.bilateral_window == "disk" else "kornia"
        for _ in range(self.bilateral_iterations):
            if impl == "opencv":
                x01 = bilateral_opencv(
                    x01, self.bilateral_kernel, self.bilateral_sigma_color, self.bilateral_sigma_space
                )
            elif impl == "kornia":
                x01 = bilateral_blur(
                    x01,
                    self.bilateral_kernel,
                    self.bilateral_sigma_color,
                    (self.bilateral_sigma_space, self.bilateral_sigma_space),
                )
            else:
                x01 = bilateral_taps(
                    x01,
                    self.bilateral_kernel,
                    self.bilateral_sigma_color,
                    self.bilateral_sigma_space,
                    window=self.bilateral_window,
                )
        return x01

    # -- k-means -----------------------------------------------------------------------------------------------
    def _features(self, x01: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x01.shape
        ys = (torch.arange(height, device=x01.device, dtype=x01.dtype) + 0.5) / height
        xs = (torch.arange(width, device=x01.device, dtype=x01.dtype) + 0.5) / width
        pos = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).unsqueeze(0).expand(batch, -1, -1, -1)
        feats = torch.cat([x01, pos * self.position_weight], 1)
        return feats.flatten(2).transpose(1, 2)  # [B, N, 5]

    @staticmethod
    def _assign(feats: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        dist = (centres.square().sum(-1).unsqueeze(1) - 2 * torch.bmm(feats, centres.transpose(1, 2)))
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

    # -- forward -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, image: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """``image``: [B, 3, H, W] in [-1, 1]; ``seg``: optional long [B, 1, H, W] labels, -1 (or absent) = none.

        Returns [B, 3, H, W] in [-1, 1] in the image's dtype: every segment (labelled samples) or cluster (others)
        painted with the median colour of the filtered image.
        """
        batch, _, height, width = image.shape
        x01 = ((image.float() + 1.0) * 0.5).clamp(0, 1)
        smooth = self.smooth(x01)
        num_regions = max(self.num_classes + 1, self.num_clusters)
        regions = None
        has_seg = torch.zeros(batch, dtype=torch.bool, device=image.device)
        if seg is not None:
            seg = seg.to(image.device).view(batch, 1, height, width).long()
            has_seg = (seg >= 0).flatten(1).any(1)
            # an unlabelled pixel in a labelled sample (should not happen) is a segment of its own
            regions = torch.where(seg >= 0, seg.clamp(max=self.num_classes - 1), torch.full_like(seg, self.num_classes))
        if not bool(has_seg.all()):
            clusters = torch.zeros(batch, 1, height, width, dtype=torch.long, device=image.device)
            todo = (~has_seg).nonzero().flatten()
            clusters[todo] = self.kmeans_regions(smooth[todo])
            regions = clusters if regions is None else torch.where(has_seg.view(-1, 1, 1, 1), regions, clusters)
        painted = region_median(smooth, regions, num_regions)
        return (painted * 2.0 - 1.0).to(image.dtype if image.is_floating_point() else torch.float32)
