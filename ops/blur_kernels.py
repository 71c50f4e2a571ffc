"""Blur kernels of Real-ESRGAN's degradation model (Wang et al. 2021, arXiv 2107.10833, Sec. 3.1 / 3.3;
BasicSR ``basicsr/data/degradations.py``, ``realesrgan/data/realesrgan_dataset.py``).

Made on the CPU, per sample, in the data-loader workers (as Real-ESRGAN does), from a ``numpy.random.Generator``
so that a run's seed fixes them; applied batched on the device by ``ops.degradations.filter2d``.

Every kernel is ``k x k`` (k odd), centred on the grid ``-(k//2) .. k//2`` and normalised to sum 1:

* Gaussian (isotropic or anisotropic): ``exp(-0.5 * q)`` with ``q = x^T S^-1 x``, ``S = R diag(sx^2, sy^2) R^T``
  (R: rotation by theta); isotropic means ``sy = sx``, ``theta = 0``.
* generalised Gaussian: ``exp(-0.5 * q^beta)`` (beta = 1: the Gaussian).
* plateau: ``1 / (1 + q^beta)``.
* sinc (2-D circular low-pass, cutoff ``omega`` in radians): ``omega * J1(omega r) / (2 pi r)``; the centre
  ``omega^2 / (4 pi)`` is its limit at r = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def mesh_grid(kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(xx, yy) of a ``k x k`` grid centred at zero; xx varies along columns."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    ax = np.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)


def sigma_matrix(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Covariance ``R diag(sig_x^2, sig_y^2) R^T`` of a Gaussian rotated by ``theta`` (radians)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rot @ np.diag([sig_x**2, sig_y**2]) @ rot.T


def _quadratic_form(kernel_size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    xx, yy = mesh_grid(kernel_size)
    inv = np.linalg.inv(sigma_matrix(sig_x, sig_y, theta))
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def _normalise(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def bivariate_gaussian(kernel_size: int, sig_x: float, sig_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Normalised (an)isotropic Gaussian; ``sig_y=None`` means isotropic."""
    sig_y = sig_x if sig_y is None else sig_y
    return _normalise(np.exp(-0.5 * _quadratic_form(kernel_size, sig_x, sig_y, theta)))


def bivariate_generalized_gaussian(
    kernel_size: int, sig_x: float, sig_y: float | None, theta: float, beta: float
) -> np.ndarray:
    """Normalised generalised Gaussian ``exp(-0.5 q^beta)`` (Pascal et al. 2013, arXiv 1302.6498)."""
    sig_y = sig_x if sig_y is None else sig_y
    return _normalise(np.exp(-0.5 * np.power(_quadratic_form(kernel_size, sig_x, sig_y, theta), beta)))


def bivariate_plateau(kernel_size: int, sig_x: float, sig_y: float | None, theta: float, beta: float) -> np.ndarray:
    """Normalised plateau-shaped kernel ``1 / (1 + q^beta)``."""
    sig_y = sig_x if sig_y is None else sig_y
    return _normalise(1.0 / (np.power(_quadratic_form(kernel_size, sig_x, sig_y, theta), beta) + 1.0))


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """Normalised 2-D sinc (ideal circular low-pass) kernel, zero-padded to ``pad_to`` when larger."""
    xx, yy = mesh_grid(kernel_size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    c = kernel_size // 2
    kernel[c, c] = cutoff**2 / (4 * np.pi)  # lim_{r->0} omega J1(omega r) / (2 pi r)
    kernel = _normalise(kernel)
    if pad_to > kernel_size:
        p = (pad_to - kernel_size) // 2
        kernel = np.pad(kernel, ((p, p), (p, p)))
    return kernel


def pulse_kernel(size: int) -> np.ndarray:
    """The identity filter (Real-ESRGAN's ``pulse_tensor``: no final sinc)."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def _beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    # Real-ESRGAN: half the time below 1, half above (assumes beta_range[0] <= 1 <= beta_range[1]).
    if rng.uniform() < 0.5:
        return float(rng.uniform(beta_range[0], 1.0))
    return float(rng.uniform(1.0, beta_range[1]))


def random_mixed_kernel(
    rng: np.random.Generator,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    kernel_size: int,
    sigma_range: Sequence[float],
    rotation_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> np.ndarray:
    """One kernel of a type drawn from ``kernel_list`` with ``kernel_prob`` (BasicSR ``random_mixed_kernels``,
    without the multiplicative kernel noise, which Real-ESRGAN leaves off)."""
    unknown = [k for k in kernel_list if k not in KERNEL_TYPES]
    if unknown or len(kernel_list) != len(kernel_prob):
        raise ValueError(
            f"kernel_list {list(kernel_list)} must name types from {KERNEL_TYPES}, one probability each "
            f"(kernel_prob {list(kernel_prob)})"
        )
    p = np.asarray(kernel_prob, dtype=np.float64)
    kind = kernel_list[int(rng.choice(len(kernel_list), p=p / p.sum()))]
    sig_x = float(rng.uniform(*sigma_range))
    if kind.endswith("aniso"):
        sig_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(*rotation_range))
    else:
        sig_y, theta = sig_x, 0.0
    if kind in ("iso", "aniso"):
        return bivariate_gaussian(kernel_size, sig_x, sig_y, theta)
    if kind.startswith("generalized"):
        return bivariate_generalized_gaussian(kernel_size, sig_x, sig_y, theta, _beta(rng, betag_range))
    return bivariate_plateau(kernel_size, sig_x, sig_y, theta, _beta(rng, betap_range))


def _sinc_cutoff(rng: np.random.Generator, kernel_size: int) -> float:
    # Real-ESRGAN: the cutoff range depends on the size so that small kernels do not ring too much.
    low = np.pi / 3 if kernel_size < 13 else np.pi / 5
    return float(rng.uniform(low, np.pi))


def sample_blur_kernel(rng: np.random.Generator, cfg: dict, max_size: int) -> np.ndarray:
    """A first- or second-stage blur kernel, zero-padded to ``max_size``: with ``cfg['sinc_prob']`` a sinc,
    else a mixed kernel; its size uniform over the odd sizes in ``cfg['kernel_sizes']``."""
    size = int(rng.choice(_odd_sizes(cfg["kernel_sizes"])))
    if rng.uniform() < cfg["sinc_prob"]:
        kernel = circular_lowpass_kernel(_sinc_cutoff(rng, size), size)
    else:
        kernel = random_mixed_kernel(
            rng,
            cfg["kernel_list"],
            cfg["kernel_prob"],
            size,
            cfg["sigma_range"],
            cfg.get("rotation_range", (-math.pi, math.pi)),
            cfg["betag_range"],
            cfg["betap_range"],
        )
    p = (max_size - size) // 2
    return np.pad(kernel, ((p, p), (p, p)))


def sample_final_sinc(rng: np.random.Generator, prob: float, kernel_sizes: Sequence[int], max_size: int) -> np.ndarray:
    """The final sinc filter with probability ``prob`` (cutoff U(pi/3, pi)), else the identity."""
    if rng.uniform() < prob:
        size = int(rng.choice(_odd_sizes(kernel_sizes)))
        return circular_lowpass_kernel(float(rng.uniform(np.pi / 3, np.pi)), size, pad_to=max_size)
    return pulse_kernel(max_size)


def _odd_sizes(kernel_sizes: Sequence[int]) -> list[int]:
    """``[lo, hi]`` -> the odd sizes lo, lo+2, ..., hi (Real-ESRGAN: 7 .. 21)."""
    lo, hi = int(kernel_sizes[0]), int(kernel_sizes[1])
    if lo % 2 != 1 or hi % 2 != 1 or lo > hi:
        raise ValueError(f"kernel_sizes must be [lo, hi] with odd lo <= hi, got {list(kernel_sizes)}")
    return list(range(lo, hi + 1, 2))


def sample_degradation_kernels(rng: np.random.Generator, cfg: dict) -> dict[str, np.ndarray]:
    """``kernel1``, ``kernel2`` and ``sinc_kernel`` (float32, ``max_size`` square) for one training sample.

    ``cfg`` is the ``degradation`` config: ``blur1``, ``blur2`` (each ``kernel_list``, ``kernel_prob``,
    ``sigma_range``, ``betag_range``, ``betap_range``, ``sinc_prob``, ``kernel_sizes``), ``final_sinc_prob``,
    ``kernel_sizes``.
    """
    max_size = int(cfg["kernel_sizes"][1])
    return {
        "kernel1": sample_blur_kernel(rng, {"kernel_sizes": cfg["kernel_sizes"], **cfg["blur1"]}, max_size).astype(
            np.float32
        ),
        "kernel2": sample_blur_kernel(rng, {"kernel_sizes": cfg["kernel_sizes"], **cfg["blur2"]}, max_size).astype(
            np.float32
        ),
        "sinc_kernel": sample_final_sinc(rng, cfg["final_sinc_prob"], cfg["kernel_sizes"], max_size).astype(np.float32),
    }
