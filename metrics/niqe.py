"""NIQE (Mittal, Soundararajan & Bovik, "Making a 'Completely Blind' Image Quality Analyzer", 2013).

A port of the MATLAB ``niqe_release`` as BasicSR ``basicsr/metrics/niqe.py`` does it, in
numpy/scipy (the image filtering in float32 as BasicSR, see ``niqe``):

1. the image is quantised to uint8 (as BasicSR ``tensor2img``), converted to the MATLAB BT.601 Y channel,
   cropped by ``crop_border`` and **rounded** (BasicSR: "round is necessary for being consistent with MATLAB");
2. it is cropped to a whole number of 96x96 blocks (no overlap, the official setting);
3. at two scales (the second made by MATLAB bicubic ``imresize(0.5)`` with antialiasing, evaluated in float32 in
   BasicSR's order, ``ops.imresize.imresize_basicsr_f32``, so that values equal BasicSR's bit for bit):
   MSCN coefficients ``(I - mu) / (sigma + 1)`` with the 7x7 Gaussian window of the release (replicated
   borders), then per block (96x96, then 48x48) 18 features: the GGD fit of the MSCN block (shape, mean of the
   two AGGD scales) and, for the 4 pairwise products (horizontal, vertical, both diagonals; circular shifts as
   in BasicSR), the AGGD fit (shape, mean, left and right scales);
4. a multivariate Gaussian is fitted to the blocks' 36 features and compared with the pristine model:
   ``sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)^T)``.

The pristine model (``niqe_pris_params.npz``: ``mu_pris_param`` [1, 36], ``cov_pris_param`` [36, 36],
``gaussian_window`` [7, 7]) is a copy of BasicSR's ``basicsr/metrics/niqe_pris_params.npz`` (the MATLAB
release's ``modelparameters.mat``), distributed by BasicSR under the Apache License 2.0
(https://github.com/XPixelGroup/BasicSR).  Check: Set14 ``baboon.png`` gives 5.7296 (MATLAB R2021a 5.72957338); on
Set5 + Set14 every image equals BasicSR 1.4.2's ``calculate_niqe`` bit for bit on the same machine
(tests/test_niqe.py).  Across CPUs the value moves in the 4th decimal (up to 8e-4 measured, issue 23): the AGGD shape
is an argmin on a 0.001 grid, so float32 rounding differences in MKL's kernels can move a block by a grid step.

Lower is better.  An image needs at least two 96x96 blocks after ``crop_border`` (the covariance of the block
features needs two), and at least two blocks with finite features (flat blocks have none); otherwise NIQE is
undefined and :class:`ValueError` says why.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import convolve
from scipy.special import gamma

from ops.imresize import imresize_basicsr_f32

__all__ = [
    "load_pristine_params",
    "estimate_aggd_param",
    "compute_feature",
    "mscn",
    "niqe",
    "calculate_niqe",
    "rgb_to_y_rounded",
]

PARAMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "niqe_pris_params.npz")
BLOCK_SIZE = 96

# The shape grid of BasicSR / MATLAB estimateaggdparam: 0.2:0.001:10.
_GAM = np.arange(0.2, 10.001, 0.001)
_GAM_RECIPROCAL = np.reciprocal(_GAM)  # 1/a as a reciprocal times k, as BasicSR: k/a can differ in the last bit
_R_GAM = np.square(gamma(_GAM_RECIPROCAL * 2)) / (gamma(_GAM_RECIPROCAL) * gamma(_GAM_RECIPROCAL * 3))


@lru_cache(maxsize=4)
def load_pristine_params(path: str = PARAMS_FILE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu_pris_param [1, 36], cov_pris_param [36, 36], gaussian_window [7, 7])`` from the npz file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NIQE pristine parameters {path!r} are missing (they ship with the code)")
    with np.load(path) as p:
        return p["mu_pris_param"].copy(), p["cov_pris_param"].copy(), p["gaussian_window"].copy()


def estimate_aggd_param(block: np.ndarray) -> tuple[float, float, float]:
    """Fit an asymmetric generalised Gaussian: ``(alpha, beta_l, beta_r)`` (paper Eq. 7; BasicSR, MATLAB).

    ``alpha`` is the grid value in 0.2..10 (step 0.001) whose ``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))`` is
    nearest to the moment estimate ``rhat (g^3 + 1)(g + 1) / (g^2 + 1)^2`` with ``g = sigma_l / sigma_r`` and
    ``rhat = E|x|^2 / E[x^2]``; ``beta = sigma * sqrt(Gamma(1/alpha) / Gamma(3/alpha))`` on each side.
    """
    # The block keeps its dtype (float32 in NIQE, as in BasicSR): the moments are float32 means there.
    block = np.asarray(block).ravel()
    left_std = np.sqrt(np.mean(block[block < 0] ** 2))
    right_std = np.sqrt(np.mean(block[block > 0] ** 2))
    gammahat = left_std / right_std
    rhat = np.mean(np.abs(block)) ** 2 / np.mean(block**2)
    rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    alpha = _GAM[np.argmin((_R_GAM - rhatnorm) ** 2)]
    scale = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return float(alpha), float(left_std * scale), float(right_std * scale)


def compute_feature(block: np.ndarray) -> list[float]:
    """The 18 features of one MSCN block (BasicSR ``compute_feature``)."""
    alpha, beta_l, beta_r = estimate_aggd_param(block)
    feat = [alpha, (beta_l + beta_r) / 2]
    # Products of neighbouring coefficients: horizontal, vertical, main and anti diagonal.
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = estimate_aggd_param(block * shifted)
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))  # paper Eq. 8
        feat.extend([alpha, mean, beta_l, beta_r])
    return feat


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients ``(I - mu) / (sigma + 1)`` (paper Eq. 1).

    ``mu`` and ``sigma`` are local Gaussian-weighted moments with replicated borders (MATLAB
    ``imfilter(..., 'replicate')``, scipy ``mode='nearest'``); ``sigma = sqrt(|E[I^2] - mu^2|)``.
    """
    img = np.asarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float64)
    mu = convolve(img, window, mode="nearest")  # output in the input's dtype
    sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode="nearest") - np.square(mu)))
    return (img - mu) / (sigma + 1)


def niqe(img: np.ndarray, params: tuple | None = None, block_size: int = BLOCK_SIZE) -> float:
    """NIQE of a 2-D gray / Y image on the 0..255 scale, not cropped or rounded here (``calculate_niqe`` does)."""
    # float32 as in BasicSR (its rounded Y image is float32, and scipy filters in the input's dtype).  This is
    # not cosmetic: the AGGD shape is an argmin on a 0.001 grid, so rounding moves features.  On Set14 baboon
    # this gives 5.7295640 = BasicSR 1.4.2 (MATLAB R2021a 5.72957338); all in float64 gives 5.729960.
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"niqe expects a 2-D gray/Y image, got shape {img.shape}")
    mu_pris, cov_pris, window = params if params is not None else load_pristine_params()
    h, w = img.shape
    nbh, nbw = h // block_size, w // block_size
    if nbh * nbw < 2:
        raise ValueError(
            f"NIQE needs at least two {block_size}x{block_size} blocks, got a {w}x{h} image "
            f"({nbw * nbh} block(s)); the covariance of the block features is undefined otherwise"
        )
    img = img[: nbh * block_size, : nbw * block_size]

    distparam = []
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # flat blocks give NaN features (empty means), as in MATLAB
        for scale in (1, 2):
            norm = mscn(img, window)
            bs = block_size // scale
            feats = [compute_feature(norm[i * bs:(i + 1) * bs, j * bs:(j + 1) * bs])
                     for j in range(nbw) for i in range(nbh)]  # fmt: skip
            distparam.append(np.array(feats))
            if scale == 1:
                # MATLAB imresize(im, 0.5) (bicubic, antialiased) on [0, 1], evaluated in BasicSR's float32 order:
                # ops.imresize's float64-weight matmul differs by ~1e-7, which moved NIQE by up to 3.6e-4 (ppt3).
                half = imresize_basicsr_f32(torch.from_numpy(img / np.float32(255.0)), 0.5)
                img = half.numpy() * np.float32(255.0)

    distparam = np.concatenate(distparam, axis=1)
    valid = distparam[~np.isnan(distparam).any(axis=1)]  # MATLAB nancov: complete rows only
    if len(valid) < 2:
        raise ValueError(
            f"NIQE is undefined for this image: {len(valid)} of {len(distparam)} blocks have finite features "
            "(flat blocks, e.g. a constant or saturated image, have none) and the covariance needs two"
        )
    mu_dist = np.nanmean(distparam, axis=0)
    cov_dist = np.cov(valid, rowvar=False)
    invcov = np.linalg.pinv((cov_pris + cov_dist) / 2)
    diff = mu_pris - mu_dist
    return float(np.sqrt(np.squeeze(diff @ invcov @ diff.T)))


def rgb_to_y_rounded(rgb_uint8: np.ndarray) -> np.ndarray:
    """MATLAB BT.601 Y of an HxWx3 **RGB** image on 0..255, computed as BasicSR ``to_y_channel`` (float32, on
    BGR order, ``16 + 24.966 B + 128.553 G + 65.481 R`` on [0, 1]), rounded; returned as float64."""
    bgr = np.ascontiguousarray(np.asarray(rgb_uint8)[..., ::-1]).astype(np.float32) / 255.0
    y = np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0
    y = (y / 255.0).astype(np.float32) * 255.0
    return np.round(y).astype(np.float64)


def calculate_niqe(img, crop_border: int = 0, convert_to: str = "y") -> float:
    """NIQE of one image (BasicSR ``calculate_niqe``; lower is better).

    ``img``: a float tensor ``[3, H, W]`` / ``[1, 3, H, W]`` (or 1-channel) in [0, 1], quantised to uint8 first as
    the PSNR/SSIM protocol does; or a numpy uint8 array ``HxWx3`` (RGB) or ``HxW``.  ``convert_to``: ``y`` (MATLAB
    BT.601 Y, the BasicSR default) or ``gray`` (already single-channel input only).
    """
    if torch.is_tensor(img):
        t = img.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"calculate_niqe takes one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.dim() != 3:
            raise ValueError(f"expected a [C, H, W] tensor, got shape {tuple(img.shape)}")
        arr = (t.to(torch.float64).clamp(0, 1) * 255.0).round().permute(1, 2, 0).cpu().numpy()
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    else:
        arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 3:
        if convert_to != "y":
            raise ValueError(f"convert_to must be 'y' for colour input, got {convert_to!r}")
        y = rgb_to_y_rounded(arr)
    elif arr.ndim == 2:
        y = np.round(arr)
    else:
        raise ValueError(f"expected an HxWx3 RGB or HxW gray image, got shape {arr.shape}")
    if crop_border > 0:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe(y)
