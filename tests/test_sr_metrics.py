"""BasicSR-protocol PSNR / SSIM: hand cases, parity with a cv2 port, and the bicubic x4 baseline."""

import math

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_data

from metrics.sr_metrics import (
    bicubic_sr_baseline,
    calculate_psnr,
    calculate_ssim,
    modcrop,
    rgb_to_y,
    sr_metrics,
    tensor_to_uint8,
)

PSNR_ONE_LEVEL = 10 * math.log10(255.0**2)  # MSE = 1 -> 48.1308 dB


def _const(value_255: float, shape=(1, 3, 24, 24)) -> torch.Tensor:
    return torch.full(shape, value_255 / 255.0, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# Quantisation and Y
# --------------------------------------------------------------------------------------------------
def test_tensor_to_uint8_clamps_and_rounds():
    x = torch.tensor([-0.1, 0.0, 0.2, 128.4 / 255, 128.6 / 255, 1.0, 1.3])
    expected = [0, 0, 51, 128, 129, 255, 255]
    q = tensor_to_uint8(x)
    assert q.dtype == torch.float64 and q.tolist() == expected
    q8 = tensor_to_uint8(x, as_uint8=True)
    assert q8.dtype == torch.uint8 and q8.tolist() == expected


@pytest.mark.parametrize(
    "rgb, y",
    [
        ((1, 0, 0), 16 + 65.481),
        ((0, 1, 0), 16 + 128.553),
        ((0, 0, 1), 16 + 24.966),
        ((1, 1, 1), 235.0),  # 16 + 219
        ((0, 0, 0), 16.0),
    ],
)
def test_rgb_to_y_primaries(rgb, y):
    img = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    out = rgb_to_y(img)
    assert out.shape == (2, 1, 4, 5) and out.dtype == torch.float64
    assert torch.allclose(out, torch.full_like(out, y), atol=1e-12)


def test_rgb_to_y_not_rounded():
    # 0.5 grey: 16 + 219 * 0.5 = 125.5 exactly, kept fractional (BasicSR does not round Y for PSNR).
    assert rgb_to_y(torch.full((3, 1, 1), 0.5)).item() == pytest.approx(125.5, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# PSNR / SSIM hand cases
# --------------------------------------------------------------------------------------------------
def test_psnr_one_level_apart():
    a, b = _const(100), _const(101)
    assert PSNR_ONE_LEVEL == pytest.approx(48.1308036, abs=1e-6)
    assert calculate_psnr(a, b).item() == pytest.approx(PSNR_ONE_LEVEL, abs=1e-9)
    # Y: every channel one level up moves Y by 219/255 -> PSNR + 20 log10(255/219) (= +1.3224 dB).
    expected_y = PSNR_ONE_LEVEL + 20 * math.log10(255 / 219)
    assert calculate_psnr(a, b, test_y_channel=True).item() == pytest.approx(expected_y, abs=1e-9)


def test_identical_images_inf_and_one():
    x = torch.rand(3, 3, 20, 20)
    psnr = calculate_psnr(x, x.clone(), crop_border=2)
    assert psnr.shape == (3,) and torch.isinf(psnr).all()
    ssim = calculate_ssim(x, x.clone(), crop_border=2, test_y_channel=True)
    assert torch.allclose(ssim, torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_quantisation_happens_first():
    # Values inside the same uint8 bin are equal after tensor2img rounding.
    a = _const(100.2)
    b = _const(99.8)
    assert torch.isinf(calculate_psnr(a, b)).all()


def test_ssim_constant_images():
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = 2.55^2 = 6.5025.
    c1 = 6.5025
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    ssim = calculate_ssim(_const(100), _const(110))
    assert ssim.item() == pytest.approx(expected, abs=1e-12)


def test_per_image_values_in_batch():
    hr = torch.rand(3, 3, 32, 32)
    sr = torch.stack([hr[0], torch.full_like(hr[1], 0.5), hr[2].flip(-1)])
    batch = calculate_psnr(sr, hr, crop_border=4)
    singles = torch.cat([calculate_psnr(sr[i], hr[i], crop_border=4) for i in range(3)])
    assert batch.shape == (3,) and torch.isinf(batch[0])
    assert torch.equal(batch, singles)


def test_crop_border_removes_exactly_the_border():
    ref = torch.rand(1, 3, 30, 30)
    img = ref.clone()
    c = 4
    img[..., :c, :] = 1 - img[..., :c, :]  # corrupt a ring of width c only
    img[..., -c:, :] = 1 - img[..., -c:, :]
    img[..., :, :c] = 1 - img[..., :, :c]
    img[..., :, -c:] = 1 - img[..., :, -c:]
    assert torch.isinf(calculate_psnr(img, ref, crop_border=c)).all()
    assert torch.isfinite(calculate_psnr(img, ref, crop_border=c - 1)).all()
    assert calculate_ssim(img, ref, crop_border=c).item() == pytest.approx(1.0, abs=1e-12)
    # Cropping inside the metric equals cropping beforehand.
    noisy = (ref + 0.05 * torch.randn_like(ref)).clamp(0, 1)
    inner = (slice(None), slice(None), slice(c, -c), slice(c, -c))
    assert torch.equal(calculate_psnr(noisy, ref, crop_border=c), calculate_psnr(noisy[inner], ref[inner]))
    assert torch.allclose(calculate_ssim(noisy, ref, crop_border=c), calculate_ssim(noisy[inner], ref[inner]))


def test_shape_errors():
    with pytest.raises(ValueError):
        calculate_psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError):
        calculate_ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), crop_border=4)  # 8x8 < 11x11


# --------------------------------------------------------------------------------------------------
# Parity with a cv2/numpy port of basicsr/metrics/psnr_ssim.py (HWC BGR uint8-valued arrays)
# --------------------------------------------------------------------------------------------------
def _ref_to_y(img_bgr):
    img = img_bgr.astype(np.float32) / 255.0
    y = np.dot(img, [24.966, 128.553, 65.481]) + 16.0  # bgr2ycbcr(y_only=True), float32 in
    return (y / 255.0 * 255.0)[..., None]


def _ref_ssim_channel(img, img2):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def _ref_metrics(img_chw, ref_chw, crop, y):
    def prep(t):
        bgr = (t.clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255.0).round()  # tensor2img
        bgr = bgr[crop:-crop, crop:-crop] if crop else bgr
        return (_ref_to_y(bgr) if y else bgr).astype(np.float64)

    a, b = prep(img_chw), prep(ref_chw)
    psnr = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    ssim = np.mean([_ref_ssim_channel(a[..., i], b[..., i]) for i in range(a.shape[2])])
    return psnr, ssim


@pytest.mark.parametrize("y", [False, True])
def test_matches_basicsr_port(y):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 40, 36, generator=g, dtype=torch.float64)
    img = ref + 0.08 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
    psnr = calculate_psnr(img, ref, crop_border=4, test_y_channel=y)
    ssim = calculate_ssim(img, ref, crop_border=4, test_y_channel=y)
    for i in range(2):
        rp, rs = _ref_metrics(img[i], ref[i], 4, y)
        assert psnr[i].item() == pytest.approx(rp, abs=1e-5)
        assert ssim[i].item() == pytest.approx(rs, abs=1e-6)


def test_sr_metrics_bundle():
    hr = torch.rand(2, 3, 32, 32)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    m = sr_metrics(sr, hr, crop_border=4)
    assert set(m) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in m.values())
    assert torch.equal(m["psnr_y"], calculate_psnr(sr, hr, 4, test_y_channel=True))
    assert torch.equal(m["psnr_rgb"], calculate_psnr(sr, hr, 4, test_y_channel=False))
    assert torch.allclose(m["ssim_y"], calculate_ssim(sr, hr, 4, test_y_channel=True), atol=1e-12)
    assert torch.allclose(m["ssim_rgb"], calculate_ssim(sr, hr, 4, test_y_channel=False), atol=1e-12)


def test_modcrop_and_baseline_shapes():
    hr = torch.rand(1, 3, 19, 22)
    assert modcrop(hr, 4).shape == (1, 3, 16, 20)
    lr, sr = bicubic_sr_baseline(hr, scale=4)
    assert lr.shape == (1, 3, 4, 5) and sr.shape == (1, 3, 16, 20)
    assert lr.dtype == sr.dtype == torch.float32
    for t in (lr, sr):  # both on the uint8 grid, inside [0, 1]
        assert torch.allclose(t * 255, (t * 255).round(), atol=1e-4)
        assert t.min() >= 0 and t.max() <= 1


# --------------------------------------------------------------------------------------------------
# Regression targets: bicubic x4 baseline under BasicSR's protocol (matlab_functions.py, psnr_ssim.py)
# --------------------------------------------------------------------------------------------------
SET5 = {
    "baby": (31.7867, 0.8577),
    "bird": (30.1862, 0.8738),
    "butterfly": (22.0998, 0.7374),
    "head": (31.6173, 0.7548),
    "woman": (26.4670, 0.8326),
}
SET14 = {
    "baboon": (22.4381, 0.4528),
    "barbara": (25.1486, 0.6871),
    "bridge": (24.4674, 0.5667),
    "coastguard": (25.4715, 0.5223),
    "comic": (21.6913, 0.5837),
    "face": (31.5797, 0.7530),
    "flowers": (25.5238, 0.7221),
    "foreman": (29.3699, 0.8668),
    "lenna": (29.8408, 0.8143),
    "man": (25.6984, 0.6764),
    "monarch": (27.4600, 0.8816),
    "pepper": (30.5960, 0.8379),
    "ppt3": (21.9298, 0.8195),
    "zebra": (24.0693, 0.6852),
}


def _baseline(name):
    from datamodules.image_io import read_image

    folder = shared_data("sr", "val", name)
    results = {}
    for path in sorted(folder.glob("*.png")):
        hr = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]  # gray -> 3 channels
        _, sr = bicubic_sr_baseline(hr, scale=4)
        hr = modcrop(hr, 4)
        psnr = calculate_psnr(sr, hr, crop_border=4, test_y_channel=True)
        ssim = calculate_ssim(sr, hr, crop_border=4, test_y_channel=True)
        results[path.stem] = (psnr.item(), ssim.item())
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, table, mean_psnr, mean_ssim",
    [("Set5", SET5, 28.4314, 0.8113), ("Set14", SET14, 26.0918, 0.7050)],
)
def test_bicubic_x4_baseline(name, table, mean_psnr, mean_ssim):
    results = _baseline(name)
    assert set(results) == set(table)
    for stem, (psnr, ssim) in table.items():
        assert results[stem][0] == pytest.approx(psnr, abs=1e-3), stem
        assert results[stem][1] == pytest.approx(ssim, abs=2e-4), stem
    assert np.mean([r[0] for r in results.values()]) == pytest.approx(mean_psnr, abs=0.002)
    assert np.mean([r[1] for r in results.values()]) == pytest.approx(mean_ssim, abs=0.0005)
