"""MATLAB-bicubic ``imresize``: kernel values, hand-worked cases, parity with a loop port of BasicSR."""

import math

import numpy as np
import pytest
import torch
from conftest import shared_data

from ops.imresize import cubic, imresize, resize_matrix, resize_weights


# --------------------------------------------------------------------------------------------------
# Independent reference: a plain-numpy, loop-for-loop port of BasicSR
# ``basicsr/utils/matlab_functions.py`` (calculate_weights_indices + imresize), float64.
# --------------------------------------------------------------------------------------------------
def _ref_cubic(x):
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * (
        (absx > 1) * (absx <= 2)
    )


def _ref_weights_indices(in_length, out_length, scale, kernel_width, antialiasing):
    if scale < 1 and antialiasing:
        kernel_width = kernel_width / scale
    x = np.linspace(1, out_length, out_length)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    indices = left.reshape(out_length, 1) + np.linspace(0, p - 1, p).reshape(1, p)
    distance_to_center = u.reshape(out_length, 1) - indices
    if scale < 1 and antialiasing:
        weights = scale * _ref_cubic(distance_to_center * scale)
    else:
        weights = _ref_cubic(distance_to_center)
    weights = weights / weights.sum(1).reshape(out_length, 1)
    # BasicSR: drop the first / last tap column when it holds zeros.
    weights_zero_tmp = np.sum(weights == 0, 0)
    if not math.isclose(weights_zero_tmp[0], 0, rel_tol=1e-6):
        indices = indices[:, 1 : p - 1]
        weights = weights[:, 1 : p - 1]
    if not math.isclose(weights_zero_tmp[-1], 0, rel_tol=1e-6):
        indices = indices[:, 0 : p - 2]
        weights = weights[:, 0 : p - 2]
    sym_len_s = -indices.min() + 1
    sym_len_e = indices.max() - in_length
    indices = indices + sym_len_s - 1
    return weights, indices, int(sym_len_s), int(sym_len_e)


def _ref_imresize(img, scale, antialiasing=True):
    """img: float64 [C, H, W] numpy array -> [C, ceil(H*scale), ceil(W*scale)]."""
    in_c, in_h, in_w = img.shape
    out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
    weights_h, indices_h, sym_len_hs, sym_len_he = _ref_weights_indices(in_h, out_h, scale, 4, antialiasing)
    weights_w, indices_w, sym_len_ws, sym_len_we = _ref_weights_indices(in_w, out_w, scale, 4, antialiasing)

    # H: symmetric copying, then one weighted sum per output row.
    img_aug = np.zeros((in_c, in_h + sym_len_hs + sym_len_he, in_w))
    img_aug[:, sym_len_hs : sym_len_hs + in_h, :] = img
    img_aug[:, :sym_len_hs, :] = img[:, :sym_len_hs, :][:, ::-1, :]
    if sym_len_he > 0:
        img_aug[:, sym_len_hs + in_h :, :] = img[:, -sym_len_he:, :][:, ::-1, :]
    out_1 = np.zeros((in_c, out_h, in_w))
    kw = weights_h.shape[1]
    for i in range(out_h):
        idx = int(indices_h[i][0])
        for j in range(in_c):
            out_1[j, i, :] = img_aug[j, idx : idx + kw, :].T @ weights_h[i]

    # W: same on the columns.
    out_1_aug = np.zeros((in_c, out_h, in_w + sym_len_ws + sym_len_we))
    out_1_aug[:, :, sym_len_ws : sym_len_ws + in_w] = out_1
    out_1_aug[:, :, :sym_len_ws] = out_1[:, :, :sym_len_ws][:, :, ::-1]
    if sym_len_we > 0:
        out_1_aug[:, :, sym_len_ws + in_w :] = out_1[:, :, -sym_len_we:][:, :, ::-1]
    out_2 = np.zeros((in_c, out_h, out_w))
    kw = weights_w.shape[1]
    for i in range(out_w):
        idx = int(indices_w[i][0])
        for j in range(in_c):
            out_2[j, :, i] = out_1_aug[j, :, idx : idx + kw] @ weights_w[i]
    return out_2


# --------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, expected",
    [
        (0.0, 1.0),
        (0.25, 0.8671875),  # 1.5/64 - 2.5/16 + 1
        (0.5, 0.5625),  # 1.5/8 - 2.5/4 + 1
        (-0.5, 0.5625),  # even
        (0.75, 0.2265625),
        (1.0, 0.0),
        (1.25, -0.0703125),  # -0.5*1.953125 + 2.5*1.5625 - 5 + 2
        (1.5, -0.0625),  # -0.5*3.375 + 2.5*2.25 - 6 + 2
        (1.75, -0.0234375),
        (2.0, 0.0),
        (2.5, 0.0),
        (-3.0, 0.0),
    ],
)
def test_cubic_values(x, expected):
    assert cubic(torch.tensor([x], dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-15)


def test_cubic_partition_of_unity():
    # Taps at integer spacing sum to 1 for any phase: why interpolation preserves constants.
    phase = torch.linspace(0, 1, 17, dtype=torch.float64)
    taps = phase[:, None] + torch.arange(-2, 2, dtype=torch.float64)[None, :]
    assert torch.allclose(cubic(taps).sum(1), torch.ones(17, dtype=torch.float64), atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Hand-worked cases
# --------------------------------------------------------------------------------------------------
def test_weights_half_scale_antialiased():
    # scale 1/2: width 8, P = 10, u = 2x - 0.5, taps at 2x-5 .. 2x+4 (1-based) with
    # d = 4.5 .. -4.5; weights 0.5 * cubic(d / 2) = [0, -3, -9, 29, 111, 111, 29, -9, -3, 0] / 256
    # (already summing to 1); the all-zero end columns are trimmed -> 8 taps from 2x-4 (0-based 2x-5).
    w, idx = resize_weights(8, 4, 0.5, antialiasing=True)
    expected = torch.tensor([-3, -9, 29, 111, 111, 29, -9, -3], dtype=torch.float64) / 256
    assert w.shape == (4, 8)
    assert torch.allclose(w, expected.expand(4, 8), atol=1e-15)
    assert torch.equal(idx[:, 0], torch.tensor([-3, -1, 1, 3]))


def test_ramp_half_scale_mirror_borders():
    # 1-D ramp f(i) = i, i = 1..8, downscaled x1/2 (a 1-pixel-high image is the identity along H).
    # Interior outputs would be the tap centres 1.5, 3.5, 5.5, 7.5; mirror padding (i<1 -> 1-i,
    # i>8 -> 17-i) changes the edges:
    #   x=1: taps -2..5 read [3,2,1,1,2,3,4,5] instead of [-2..5]:
    #        (-3*5 + -9*3 + 29*1)/256 = -13/256                  -> 1.5 - 13/256
    #   x=2: tap 0 reads 1 instead of 0 (weight -3/256)         -> 3.5 - 3/256
    #   x=3, x=4: the mirror images of x=2, x=1                 -> 5.5 + 3/256, 7.5 + 13/256
    ramp = torch.arange(1, 9, dtype=torch.float64)
    expected = torch.tensor([1.5 - 13 / 256, 3.5 - 3 / 256, 5.5 + 3 / 256, 7.5 + 13 / 256], dtype=torch.float64)
    along_w = imresize(ramp.view(1, 1, 8), 0.5)
    along_h = imresize(ramp.view(1, 8, 1), 0.5)
    assert along_w.shape == (1, 1, 4) and along_h.shape == (1, 4, 1)
    assert torch.allclose(along_w.flatten(), expected, atol=1e-14)
    assert torch.allclose(along_h.flatten(), expected, atol=1e-14)


def test_step_upscale_x2_overshoot_not_clipped():
    # [0, 1] upscaled x2 (no antialiasing on upscale): u = x/2 + 0.25.
    #   x=1: u=0.75, taps -1..2 with d = 1.75, 0.75, -0.25, -1.25 -> w = [-0.0234375, 0.2265625,
    #        0.8671875, -0.0703125]; mirror reads [f(2), f(1), f(1), f(2)] = [1, 0, 0, 1]
    #        -> -0.0234375 - 0.0703125 = -0.09375 (undershoot, kept: no clipping)
    #   x=2: u=1.25, taps 0..3, d = 1.25, 0.25, -0.75, -1.75 -> reads [0, 0, 1, 1]
    #        -> 0.2265625 - 0.0234375 = 0.203125
    #   x=3, x=4 by symmetry: 0.796875, 1.09375
    v = torch.tensor([-0.09375, 0.203125, 0.796875, 1.09375], dtype=torch.float64)
    step = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    out = imresize(step, 2.0)
    assert out.shape == (1, 2, 4)  # the single row is replicated along H
    assert torch.allclose(out[0], v.expand(2, 4), atol=1e-14)
    # Separable: the outer product [0,1]x[0,1] maps to the outer product of the 1-D results.
    img = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    assert torch.allclose(imresize(img, 2.0)[0], torch.outer(v, v), atol=1e-14)


def test_identity_at_scale_one_and_constants_preserved():
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    assert torch.allclose(imresize(x, 1.0), x, atol=1e-14)
    const = torch.full((3, 20, 12), 0.3, dtype=torch.float64)
    for s in (0.25, 1 / 3, 0.5, 2.0, 4.0):
        assert torch.allclose(imresize(const, s), torch.full_like(imresize(const, s), 0.3), atol=1e-12)


def test_output_sizes_ceil():
    x = torch.rand(1, 11, 10)
    assert imresize(x, 0.25).shape == (1, 3, 3)  # ceil(2.75), ceil(2.5)
    assert imresize(x, 1 / 3).shape == (1, 4, 4)
    assert imresize(x, 4).shape == (1, 44, 40)


def test_matrix_rows_sum_to_one():
    for n, s in ((16, 0.25), (37, 1 / 3), (9, 4.0), (5, 0.5)):
        m = resize_matrix(n, s)
        assert m.shape == (math.ceil(n * s), n)
        assert torch.allclose(m.sum(1), torch.ones(m.shape[0], dtype=torch.float64), atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Parity with the numpy port
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 4.0, 2.0, 0.75])
@pytest.mark.parametrize("hw", [(32, 24), (37, 29)])
def test_matches_reference_random(scale, hw):
    rng = np.random.default_rng(0)
    img = rng.random((3, *hw))
    expected = _ref_imresize(img, scale)
    out64 = imresize(torch.from_numpy(img), scale)
    out32 = imresize(torch.from_numpy(img).float(), scale)
    assert out64.shape == expected.shape and out64.dtype == torch.float64 and out32.dtype == torch.float32
    assert np.abs(out64.numpy() - expected).max() < 1e-12
    assert np.abs(out32.numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_matches_reference_without_antialiasing(scale):
    img = np.random.default_rng(1).random((2, 21, 26))
    out = imresize(torch.from_numpy(img), scale, antialiasing=False)
    assert np.abs(out.numpy() - _ref_imresize(img, scale, antialiasing=False)).max() < 1e-12


def test_batch_and_chw_agree():
    x = torch.rand(4, 3, 30, 22)
    for s in (0.25, 4.0):
        batched = imresize(x, s)
        single = torch.stack([imresize(x[i], s) for i in range(4)])
        assert batched.shape == single.shape
        assert torch.allclose(batched, single, atol=1e-6, rtol=0)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        imresize(torch.rand(8, 8), 0.5)
    with pytest.raises(TypeError):
        imresize(torch.zeros(1, 8, 8, dtype=torch.uint8), 0.5)


def test_differentiable():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    imresize(x, 0.25).sum().backward()
    # Each output pixel's weights sum to 1 along both axes: the gradient total is the output count.
    assert x.grad is not None and x.grad.sum().item() == pytest.approx(3 * 4 * 4, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 40)
    assert torch.allclose(imresize(x.cuda(), 0.25).cpu(), imresize(x, 0.25), atol=1e-5)


def test_real_image_uint8_parity():
    from datamodules.image_io import read_image

    path = shared_data("sr", "val", "Set5", "baby.png")
    img = read_image(path).astype(np.float64).transpose(2, 0, 1)  # [3, 512, 512]
    ref_lr = _ref_imresize(img, 0.25)
    lr = imresize(torch.from_numpy(img).float(), 0.25).double().numpy()

    def to_u8(a):
        return np.clip(np.round(a * 255), 0, 255)

    assert np.abs(to_u8(lr) - to_u8(ref_lr)).max() <= 1
    assert np.abs(lr - ref_lr).max() < 1e-5
    # Upscale the uint8 LR back (the bicubic-baseline path).
    lr_u8 = to_u8(ref_lr) / 255
    ref_sr = _ref_imresize(lr_u8, 4.0)
    sr = imresize(torch.from_numpy(lr_u8).float(), 4.0).double().numpy()
    assert sr.shape == (3, 512, 512)
    assert np.abs(to_u8(sr) - to_u8(ref_sr)).max() <= 1


@pytest.mark.parametrize("hw", [(32, 24), (37, 29)])
def test_basicsr_float32_order_is_the_same_operator(hw):
    """imresize_basicsr_f32 (NIQE's half-scale) is the same resize in float32, BasicSR's evaluation order."""
    from ops.imresize import imresize_basicsr_f32

    img = torch.rand(*hw, generator=torch.Generator().manual_seed(0))
    out = imresize_basicsr_f32(img, 0.5)
    assert out.dtype == torch.float32 and out.shape == (math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))
    ref = torch.from_numpy(_ref_imresize(img.double().numpy()[None], 0.5)[0]).float()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        imresize_basicsr_f32(img[None], 0.5)
