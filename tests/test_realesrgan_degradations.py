"""Real-ESRGAN degradations: each operation against its formula, the JPEG step against PIL, the pipeline seeded."""

import io
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CONF_DIR
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage, special

from ops import blur_kernels as bk
from ops.degradations import USMSharp, filter2d, gaussian_noise, poisson_noise, resize, sample_resize_scale
from ops.diffjpeg import DiffJPEG, quant_tables
from synthesis.realesrgan import RealESRGANDegradation


def _degradation_cfg() -> dict:
    cfg = OmegaConf.load(CONF_DIR / "data" / "degradation" / "realesrgan.yaml")
    cfg.seed = 0
    return OmegaConf.to_container(cfg, resolve=True)


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("size", [7, 13, 21])
def test_every_kernel_type_sums_to_one_is_point_symmetric_and_centred(size):
    kernels = [
        bk.bivariate_gaussian(size, 1.3),
        bk.bivariate_gaussian(size, 2.5, 0.7, 0.6),
        bk.bivariate_generalized_gaussian(size, 1.1, None, 0.0, 0.6),
        bk.bivariate_generalized_gaussian(size, 2.0, 0.9, -1.2, 3.0),
        bk.bivariate_plateau(size, 1.5, None, 0.0, 1.7),
        bk.bivariate_plateau(size, 2.2, 0.8, 2.0, 1.2),
        bk.circular_lowpass_kernel(math.pi / 2, size),
    ]
    ax = np.arange(size) - size // 2
    for k in kernels:
        assert k.shape == (size, size)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # correlation == convolution
        assert abs((k.sum(0) * ax).sum()) < 1e-12 and abs((k.sum(1) * ax).sum()) < 1e-12  # mass centre at 0


def test_isotropic_kernel_equals_the_analytic_gaussian():
    sigma, size = 1.7, 21
    x = np.arange(size) - 10.0
    g = np.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(bk.bivariate_gaussian(size, sigma), g / g.sum(), rtol=1e-12)
    # and it is the outer product of the 1-D Gaussian
    g1 = np.exp(-(x**2) / (2 * sigma**2))
    np.testing.assert_allclose(bk.bivariate_gaussian(size, sigma), np.outer(g1, g1) / g1.sum() ** 2, rtol=1e-12)


def test_anisotropic_kernel_axes_rotation_and_covariance():
    size, sx, sy = 21, 2.0, 0.8
    x = np.arange(size) - 10.0
    xx, yy = np.meshgrid(x, x)  # xx varies along columns
    axis_aligned = np.exp(-0.5 * (xx**2 / sx**2 + yy**2 / sy**2))
    np.testing.assert_allclose(bk.bivariate_gaussian(size, sx, sy, 0.0), axis_aligned / axis_aligned.sum(), rtol=1e-12)
    # a quarter turn swaps the axes
    np.testing.assert_allclose(
        bk.bivariate_gaussian(size, sx, sy, math.pi / 2), (axis_aligned / axis_aligned.sum()).T, atol=1e-15
    )
    # second moments of a kernel well inside its support = the covariance R diag(sx^2, sy^2) R^T
    theta = 0.5
    k = bk.bivariate_gaussian(size, 1.5, 0.7, theta)
    cov = np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])
    np.testing.assert_allclose(cov, bk.sigma_matrix(1.5, 0.7, theta), atol=2e-3)


def test_generalized_and_plateau_kernels_follow_their_formulas():
    size, s = 11, 1.3
    c = size // 2
    # beta = 1: the generalised Gaussian is the Gaussian
    np.testing.assert_allclose(
        bk.bivariate_generalized_gaussian(size, s, None, 0.0, 1.0), bk.bivariate_gaussian(size, s), rtol=1e-12
    )
    # ratios to the centre: exp(-0.5 q^beta) and 1 / (1 + q^beta), q = (x^2 + y^2) / s^2
    for beta in (0.5, 2.0, 4.0):
        k = bk.bivariate_generalized_gaussian(size, s, None, 0.0, beta)
        for dx, dy in ((1, 0), (2, 1), (3, 3)):
            q = (dx * dx + dy * dy) / s**2
            assert k[c + dy, c + dx] / k[c, c] == pytest.approx(math.exp(-0.5 * q**beta), rel=1e-12)
        p = bk.bivariate_plateau(size, s, None, 0.0, beta)
        for dx, dy in ((1, 0), (2, 1), (3, 3)):
            q = (dx * dx + dy * dy) / s**2
            assert p[c + dy, c + dx] / p[c, c] == pytest.approx(1 / (1 + q**beta), rel=1e-12)


@pytest.mark.parametrize("size,cutoff", [(7, math.pi / 3), (13, math.pi / 5), (21, 2.5)])
def test_sinc_kernel_equals_the_bessel_function_formula(size, cutoff):
    ref = np.empty((size, size))
    c = (size - 1) / 2
    for i in range(size):
        for j in range(size):
            r = math.hypot(i - c, j - c)
            ref[i, j] = cutoff**2 / (4 * math.pi) if r == 0 else cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    np.testing.assert_allclose(bk.circular_lowpass_kernel(cutoff, size), ref / ref.sum(), rtol=1e-12, atol=1e-15)
    padded = bk.circular_lowpass_kernel(cutoff, size, pad_to=21)
    p = (21 - size) // 2
    assert padded.shape == (21, 21) and padded.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(padded[p : p + size, p : p + size], ref / ref.sum(), rtol=1e-12, atol=1e-15)


def test_sampled_kernels_are_seeded_and_follow_the_published_probabilities():
    kcfg = _degradation_cfg()["kernels"]
    a = bk.sample_degradation_kernels(np.random.default_rng(3), kcfg)
    b = bk.sample_degradation_kernels(np.random.default_rng(3), kcfg)
    assert all(np.array_equal(a[k], b[k]) for k in a) and set(a) == {"kernel1", "kernel2", "sinc_kernel"}
    rng = np.random.default_rng(0)
    n, sinc_final = 600, 0
    for _ in range(n):
        ks = bk.sample_degradation_kernels(rng, kcfg)
        for k in ks.values():
            assert k.shape == (21, 21) and k.dtype == np.float32 and abs(float(k.sum()) - 1) < 1e-5
        sinc_final += ks["sinc_kernel"][10, 10] < 1  # else the pulse
    assert abs(sinc_final / n - 0.8) < 0.05  # final_sinc_prob 0.8
    # the kernel type follows kernel_prob (0.45 iso ...): an isotropic Gaussian is the outer product of its centre row
    iso = 0
    rng = np.random.default_rng(1)
    for _ in range(n):
        k = bk.random_mixed_kernel(
            rng, ["iso", "aniso"], [0.45, 0.55], 21, [0.2, 3], [-math.pi, math.pi], [0.5, 4], [1, 2]
        )
        iso += np.allclose(k, k.T, atol=1e-12) and np.allclose(k, k[::-1], atol=1e-12)
    assert abs(iso / n - 0.45) < 0.06
    with pytest.raises(ValueError, match="kernel_list"):
        bk.random_mixed_kernel(rng, ["gauss"], [1.0], 7, [1, 2], [0, 1], [1, 2], [1, 2])


# ------------------------------------------------------------------ device ops
def test_filter2d_is_per_sample_reflect_padded_correlation():
    torch.manual_seed(0)
    img = torch.rand(3, 3, 17, 19, dtype=torch.float64)
    kernels = torch.rand(3, 7, 7, dtype=torch.float64)
    out = filter2d(img, kernels)
    for i in range(3):
        for ch in range(3):
            ref = ndimage.correlate(img[i, ch].numpy(), kernels[i].numpy(), mode="mirror")  # torch 'reflect'
            np.testing.assert_allclose(out[i, ch].numpy(), ref, rtol=1e-10)
    pulse = torch.from_numpy(bk.pulse_kernel(21))
    assert torch.equal(filter2d(img, pulse[None].expand(3, 21, 21)), img)


def test_usm_sharp_matches_cv2_gaussian_blur_and_the_usm_formula():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.random((12, 12, 3)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    x = torch.from_numpy(img.transpose(2, 0, 1))[None]
    usm = USMSharp()
    blur = cv2.GaussianBlur(img, (51, 51), 0)  # BORDER_REFLECT_101 = torch 'reflect'
    np.testing.assert_allclose(usm.blur(x)[0].numpy().transpose(1, 2, 0), blur, atol=2e-6)
    residual = img - blur
    mask = cv2.GaussianBlur((np.abs(residual) * 255 > 10).astype(np.float32), (51, 51), 0)
    ref = mask * np.clip(img + 0.5 * residual, 0, 1) + (1 - mask) * img
    np.testing.assert_allclose(usm(x)[0].numpy().transpose(1, 2, 0), ref, atol=2e-6)


def test_gaussian_noise_statistics_and_gray_noise():
    g = torch.Generator().manual_seed(0)
    img = torch.full((2, 3, 128, 128), 0.5, dtype=torch.float64)
    noise = gaussian_noise(img, torch.tensor([10.0, 25.0]), torch.tensor([0.0, 1.0]), g)
    assert noise[0].std().item() == pytest.approx(10 / 255, rel=0.03)
    assert noise[1].std().item() == pytest.approx(25 / 255, rel=0.03)
    assert abs(noise.mean().item()) < 1e-3
    assert torch.equal(noise[1, 0], noise[1, 1]) and torch.equal(noise[1, 1], noise[1, 2])  # gray: one plane
    assert not torch.equal(noise[0, 0], noise[0, 1])
    again = gaussian_noise(img, torch.tensor([10.0, 25.0]), torch.tensor([0.0, 1.0]), torch.Generator().manual_seed(0))
    assert torch.equal(noise, again)


def test_poisson_noise_variance_equals_its_mean_over_the_level_count():
    # 256 distinct levels -> vals = 256; on a flat region of value v the output is Poisson(256 v) / 256
    levels = torch.arange(256, dtype=torch.float64) / 255
    img = torch.empty(1, 3, 256, 256, dtype=torch.float64)
    img[..., :8, :] = levels.expand(8, 256)
    v = 100 / 255
    img[..., 8:, :] = v
    g = torch.Generator().manual_seed(0)
    noise = poisson_noise(img, 1.0, 0.0, g)[..., 8:, :]
    assert noise.mean().item() == pytest.approx(0.0, abs=2e-4)
    assert noise.var().item() == pytest.approx(v / 256, rel=0.03)  # variance = mean / vals
    # scale multiplies the noise, gray noise is one plane for all channels
    scaled = poisson_noise(img, 2.5, 0.0, torch.Generator().manual_seed(0))[..., 8:, :]
    torch.testing.assert_close(scaled, 2.5 * noise)
    gray = poisson_noise(img, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(gray[0, 0], gray[0, 2])


def test_resize_modes_and_the_resize_factor_distribution():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    torch.testing.assert_close(resize(x, "area", scale=0.5), F.avg_pool2d(x, 2))
    assert resize(x, "bilinear", scale=0.7).shape[-2:] == (11, 14)  # floor(H * r)
    assert resize(x, "bicubic", size=(5, 6)).shape[-2:] == (5, 6)
    flat = torch.full_like(x, 0.25)
    for mode in ("area", "bilinear", "bicubic"):
        torch.testing.assert_close(resize(flat, mode, scale=1.3), torch.full_like(resize(flat, mode, scale=1.3), 0.25))
    torch.testing.assert_close(resize(x, "bilinear", scale=2.0), F.interpolate(x, scale_factor=2.0, mode="bilinear"))
    assert resize(x, "bicubic", scale=1) is x
    with pytest.raises(ValueError, match="resize mode"):
        resize(x, "nearest", scale=2)
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_resize_scale([0.2, 0.7, 0.1], [0.15, 1.5], g) for _ in range(4000)])
    up, down, keep = (draws > 1).mean(), (draws < 1).mean(), (draws == 1).mean()
    assert abs(up - 0.2) < 0.025 and abs(down - 0.7) < 0.025 and abs(keep - 0.1) < 0.02
    assert draws.min() >= 0.15 and draws.max() <= 1.5
    assert abs(draws[draws < 1].mean() - (0.15 + 1) / 2) < 0.02  # U(0.15, 1)


# ------------------------------------------------------------------ JPEG
def _test_image(seed=0, h=60, w=76):
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(2, 3, 12, 10, generator=g), size=(h, w), mode="bicubic", align_corners=False)
    img = base + 0.03 * torch.randn(2, 3, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round() / 255


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=2)  # 4:2:0
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64)
    return torch.from_numpy(dec).permute(2, 0, 1)


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_diffjpeg_matches_pil_encoder_and_decoder(quality):
    img = _test_image()  # 60x76: not a multiple of 16, so the MCU padding is exercised
    ref = torch.stack([_pil_jpeg(im, quality) for im in img])
    out = DiffJPEG()(img, quality) * 255
    diff = (out.round().double() - ref).abs()
    # measured (see README): 0.95-1.2 levels mean; PIL's own error to the original is several times larger
    assert diff.mean() < 1.5, f"q{quality}: mean |ours - PIL| {diff.mean():.3f} levels"
    assert diff.mean() < 0.5 * (img.double() * 255 - ref).abs().mean()
    # Real-ESRGAN's DiffJPEG conventions (nearest chroma, unrounded tables, float samples) are much farther off
    realesrgan = DiffJPEG(table_rounding="none", chroma_upsampling="nearest", sample_rounding=False)(img, quality) * 255
    assert (realesrgan.round().double() - ref).abs().mean() > diff.mean()


def test_diffjpeg_per_sample_quality_tables_and_gradients():
    qy, qc = quant_tables(torch.tensor([50.0, 10.0, 100.0]))
    assert qy[0, 0, 0] == 16 and qc[0, 0, 0] == 17  # quality 50: the T.81 tables
    assert qy[1, 0, 0] == math.floor((16 * 500 + 50) / 100) and qy[1, 7, 7] == 255  # q10: x5, clipped to 255
    assert torch.all(qy[2] == 1)
    img = _test_image(1, 32, 32)
    jpeg = DiffJPEG()
    both = jpeg(img, torch.tensor([20.0, 90.0]))
    torch.testing.assert_close(both[0], jpeg(img[:1], 20.0)[0])
    torch.testing.assert_close(both[1], jpeg(img[1:], 90.0)[0])
    assert (both[0] - img[0]).abs().mean() > (both[1] - img[1]).abs().mean()  # lower quality, larger error
    x = img.clone().requires_grad_(True)
    DiffJPEG(differentiable=True)(x, 50.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ the pipeline
def test_second_order_degradation_is_seeded_sized_and_8bit():
    cfg = _degradation_cfg()
    rng = np.random.default_rng(0)
    ks = [bk.sample_degradation_kernels(rng, cfg["kernels"]) for _ in range(3)]
    kernels = {k: torch.stack([torch.from_numpy(d[k]) for d in ks]) for k in ks[0]}
    deg = RealESRGANDegradation(4, cfg["first"], cfg["second"], cfg["final"], cfg["resize_modes"], cfg["jpeg"])
    x = torch.rand(3, 3, 64, 64)

    def run(seed):
        return deg(
            x,
            kernels["kernel1"],
            kernels["kernel2"],
            kernels["sinc_kernel"],
            torch.Generator().manual_seed(seed),
            torch.Generator().manual_seed(seed + 1),
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (3, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and torch.equal(a, (a * 255).round() / 255)
    with pytest.raises(ValueError, match="multiple of the scale"):
        deg(torch.rand(1, 3, 30, 32), kernels["kernel1"][:1], kernels["kernel2"][:1], kernels["sinc_kernel"][:1])


@pytest.mark.parametrize("sinc_first", [1.0, 0.0])
def test_pipeline_is_the_composition_of_its_operations_in_the_published_order(sinc_first):
    """With the random choices pinned (keep size, area, zero Gaussian noise, fixed JPEG quality), the pipeline equals
    blur1 -> JPEG -> blur2 -> resize -> then [resize + sinc] -> JPEG or JPEG -> [resize + sinc], rounded."""
    cfg = _degradation_cfg()
    pinned = {"resize_prob": [0, 0, 1], "gaussian_noise_prob": 1.0, "noise_range": [0, 0], "jpeg_range": [40, 40]}
    first, second = {**cfg["first"], **pinned}, {**cfg["second"], **pinned, "blur_prob": 1.0, "jpeg_range": [60, 60]}
    deg = RealESRGANDegradation(4, first, second, {"sinc_first_prob": sinc_first}, ["area"], cfg["jpeg"])
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    k1 = torch.from_numpy(np.stack([bk.bivariate_gaussian(21, 1.5)] * 2)).float()
    k2 = torch.from_numpy(np.stack([bk.bivariate_gaussian(21, 0.8, 0.4, 0.3)] * 2)).float()
    sinc = torch.from_numpy(np.stack([bk.circular_lowpass_kernel(2.0, 11, pad_to=21)] * 2)).float()
    out = deg(x, k1, k2, sinc, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    jpeg = DiffJPEG(**cfg["jpeg"])
    y = jpeg(filter2d(x, k1).clamp(0, 1), 40.0)
    y = F.interpolate(filter2d(y, k2), size=(8, 8), mode="area").clamp(0, 1)
    if sinc_first:
        y = jpeg(filter2d(y, sinc).clamp(0, 1), 60.0)
    else:
        y = filter2d(jpeg(y, 60.0), sinc)
    ref = (y * 255).round().clamp(0, 255) / 255
    assert torch.equal(out, ref)
