"""NIQE (metrics/niqe.py): the MATLAB value on Set14 baboon, and the pieces against hand computations."""

import math

import numpy as np
import pytest
import torch

from conftest import shared_data
from metrics import niqe as N


def _aggd_by_hand(x):
    """estimateaggdparam written out directly: sample moments, then a plain search over the 0.2:0.001:10 grid."""
    x = np.asarray(x, dtype=np.float64).ravel()
    neg, pos = x[x < 0], x[x > 0]
    sl = math.sqrt(sum(v * v for v in neg) / len(neg))
    sr = math.sqrt(sum(v * v for v in pos) / len(pos))
    g = sl / sr
    rhat = (sum(abs(v) for v in x) / len(x)) ** 2 / (sum(v * v for v in x) / len(x))
    target = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    best, best_err = None, math.inf
    for i in range(9801):
        a = 0.2 + 0.001 * i
        r = math.gamma(2 / a) ** 2 / (math.gamma(1 / a) * math.gamma(3 / a))
        if (r - target) ** 2 < best_err:
            best, best_err = a, (r - target) ** 2
    s = math.sqrt(math.gamma(1 / best) / math.gamma(3 / best))
    return best, sl * s, sr * s


def test_aggd_fit_on_a_tiny_array_matches_the_direct_formula():
    block = np.array([[-2.0, -1.0, 0.5], [1.0, 3.0, -0.5]])
    alpha, bl, br = N.estimate_aggd_param(block)
    ha, hbl, hbr = _aggd_by_hand(block)
    assert alpha == pytest.approx(ha, abs=1e-9)
    assert bl == pytest.approx(hbl, rel=1e-12) and br == pytest.approx(hbr, rel=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_aggd_fit_recovers_known_distributions(kind):
    rng = np.random.default_rng(0)
    if kind == "gaussian":  # GGD shape 2, scale sigma * sqrt(2)
        x, shape, scale = rng.normal(0, 1.5, 200_000), 2.0, 1.5 * math.sqrt(2)
    else:  # GGD shape 1, scale b
        x, shape, scale = rng.laplace(0, 0.7, 200_000), 1.0, 0.7
    alpha, bl, br = N.estimate_aggd_param(x)
    assert alpha == pytest.approx(shape, abs=0.05)
    assert bl == pytest.approx(scale, rel=0.02) and br == pytest.approx(scale, rel=0.02)


def test_mscn_matches_local_moments_by_hand():
    img = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0], [70.0, 80.0, 95.0]])
    window = np.full((3, 3), 1 / 9)
    out = N.mscn(img, window)
    padded = np.pad(img, 1, mode="edge")  # MATLAB 'replicate' borders
    for r in range(3):
        for c in range(3):
            patch = padded[r:r + 3, c:c + 3]
            mu = patch.mean()
            sigma = math.sqrt(abs((patch**2).mean() - mu**2))
            assert out[r, c] == pytest.approx((img[r, c] - mu) / (sigma + 1), rel=1e-12)
    assert np.allclose(N.mscn(np.full((5, 5), 7.0), window), 0, atol=1e-12)  # flat image: no structure


def test_compute_feature_layout():
    rng = np.random.default_rng(1)
    block = rng.normal(size=(8, 8))
    feat = N.compute_feature(block)
    assert len(feat) == 18
    a, bl, br = N.estimate_aggd_param(block)
    assert feat[:2] == pytest.approx([a, (bl + br) / 2])
    # horizontal neighbour products, circular as in BasicSR: shape, mean (paper Eq. 8), left and right scales
    a, bl, br = N.estimate_aggd_param(block * np.roll(block, 1, axis=1))
    mean = (br - bl) * math.gamma(2 / a) / math.gamma(1 / a)
    assert feat[2:6] == pytest.approx([a, mean, bl, br])


def test_y_conversion_is_matlab_bt601_rounded():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [12, 200, 77]]], dtype=np.uint8)
    y = N.rgb_to_y_rounded(rgb)
    expected = [round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255) for r, g, b in rgb[0].tolist()]
    assert y[0].tolist() == expected == [16, 235, 81, 127]


def test_pristine_parameters_ship_with_the_code():
    mu, cov, win = N.load_pristine_params()
    assert mu.shape == (1, 36) and cov.shape == (36, 36) and win.shape == (7, 7)
    assert win.sum() == pytest.approx(1.0) and np.allclose(cov, cov.T)


def test_small_or_flat_images_are_refused_clearly():
    with pytest.raises(ValueError, match="96x96"):
        N.calculate_niqe(np.zeros((100, 150, 3), dtype=np.uint8))  # one block only
    with pytest.raises(ValueError, match="undefined"):
        N.calculate_niqe(np.full((200, 200, 3), 128, dtype=np.uint8))  # flat: no finite block features


def test_baboon_gives_the_matlab_value():
    import cv2

    path = shared_data("sr", "val", "Set14", "baboon.png")
    rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    value = N.calculate_niqe(rgb, crop_border=0)
    assert round(value, 4) == 5.7296
    assert value == pytest.approx(5.72957338, abs=2e-5)  # MATLAB R2021a niqe_release
    # The tensor path of the evaluation ([0, 1] floats, quantised to uint8 first) gives the same number.
    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    assert N.calculate_niqe(t[None], crop_border=0) == value
    # Noise makes an image less natural: NIQE goes up.
    noisy = np.clip(rgb + np.random.default_rng(0).normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    assert N.calculate_niqe(noisy, crop_border=4) > value + 1


def _synthetic_rgb():
    """A seeded 192x288 test image (smooth colour waves plus noise); numpy's PCG64 stream is stable."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:192, 0:288] / 32.0
    base = np.stack([np.sin(x + 0.3 * y), np.cos(0.7 * y - x), np.sin(x * y / 6)], -1) * 90 + 128
    return np.clip(np.round(base + rng.normal(0, 12, base.shape)), 0, 255).astype(np.uint8)


def test_equals_basicsr_on_a_synthetic_image():
    # Reference: BasicSR 1.4.2 ``basicsr.metrics.niqe.calculate_niqe(bgr, crop, input_order='HWC', convert_to='y')``
    # run on this image (torch 2.13 CPU, numpy float32 path).  Before the half-scale resize followed BasicSR's
    # float32 evaluation order these were 18.310895 and 20.201845 (8e-4 and 7e-5 off).
    rgb = _synthetic_rgb()
    assert N.calculate_niqe(rgb, crop_border=0) == pytest.approx(18.310075316357135, abs=1e-9)
    assert N.calculate_niqe(rgb, crop_border=4) == pytest.approx(20.20177686503106, abs=1e-9)


# BasicSR 1.4.2 calculate_niqe(cv2.imread(path), 0) on the shared Set14/Set5 images (same script as above).
BASICSR_NIQE = {("Set14", "baboon"): 5.729564038, ("Set14", "ppt3"): 5.447277711, ("Set14", "flowers"): 2.885987507,
                ("Set14", "monarch"): 3.498502842, ("Set5", "baby"): 3.265576931}


@pytest.mark.parametrize("folder,name", sorted(BASICSR_NIQE))
def test_equals_basicsr_on_set14_and_set5(folder, name):
    import cv2

    path = shared_data("sr", "val", folder, f"{name}.png")
    rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    # ppt3 was 3.6e-4 off, flowers 2.7e-4 (float64 resize weights; float64 AGGD moments).
    assert N.calculate_niqe(rgb, crop_border=0) == pytest.approx(BASICSR_NIQE[(folder, name)], abs=2e-9)
