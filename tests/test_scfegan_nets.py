"""SC-FEGAN networks: gated conv blocks, TF 'SAME' padding, LRN, generator table, SN-PatchGAN."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archs.gated_conv import (
    Conv2dSame,
    ConvTranspose2dSame,
    GatedConv2d,
    GatedDeconv2d,
    TFLocalResponseNorm,
    tf_lrn,
    tf_same_pads,
)
from archs.scfegan_generator import SCFEGANGenerator, composite, make_generator_input
from archs.sn_patch_discriminator import SNPatchDiscriminator

# Official model.py:29-86 at cnum = 64: (scope, kind, k, s, dilation, in, out, lrn).  "G" gated conv,
# "G0" gated conv without activation, "D" gated deconv.
TABLE = [
    ("gconv1_ds", "G", 7, 2, 1, 9, 64, False),
    ("gconv2_ds", "G", 5, 2, 1, 64, 128, True),
    ("gconv3_ds", "G", 5, 2, 1, 128, 256, True),
    ("gconv4_ds", "G", 3, 2, 1, 256, 512, True),
    ("gconv5_ds", "G", 3, 2, 1, 512, 512, True),
    ("gconv6_ds", "G", 3, 2, 1, 512, 512, True),
    ("gconv7_ds", "G", 3, 2, 1, 512, 512, True),
    ("co_conv1_dlt", "G", 3, 1, 2, 512, 512, True),
    ("co_conv2_dlt", "G", 3, 1, 4, 512, 512, True),
    ("co_conv3_dlt", "G", 3, 1, 8, 512, 512, True),
    ("co_conv4_dlt", "G", 3, 1, 16, 512, 512, True),
    ("deconv1", "D", 5, 2, 1, 512, 512, False),
    ("gconv8", "G", 3, 1, 1, 1024, 512, True),
    ("deconv2", "D", 5, 2, 1, 512, 512, False),
    ("gconv9", "G", 3, 1, 1, 1024, 512, True),
    ("deconv3", "D", 5, 2, 1, 512, 512, False),
    ("gconv10", "G", 3, 1, 1, 1024, 512, True),
    ("deconv4", "D", 5, 2, 1, 512, 256, False),
    ("gconv11", "G", 3, 1, 1, 512, 256, True),
    ("deconv5", "D", 5, 2, 1, 256, 128, False),
    ("gconv12", "G", 3, 1, 1, 256, 128, True),
    ("deconv6", "D", 5, 2, 1, 128, 64, False),
    ("gconv13", "G", 3, 1, 1, 128, 64, True),
    ("deconv7", "D", 5, 2, 1, 64, 3, False),
    ("gconv14", "G0", 3, 1, 1, 12, 3, False),
]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def full_width_generator(**kwargs) -> SCFEGANGenerator:
    # Meta device: shapes only, no 370 MB of weights and no init cost.
    with torch.device("meta"):
        return SCFEGANGenerator(**kwargs)


# --------------------------------------------------------------------------- generator table


def test_generator_layer_table():
    g = full_width_generator()
    assert [name for name, _ in g.named_children()] == [row[0] for row in TABLE]
    for name, kind, k, s, d, cin, cout, lrn in TABLE:
        layer = getattr(g, name)
        if kind in ("G", "G0"):
            assert isinstance(layer, GatedConv2d), name
            for conv in (layer.conv, layer.gate):
                assert conv.kernel_size == (k, k), name
                assert conv.stride == (s, s), name
                assert conv.dilation == (d, d), name
                assert (conv.in_channels, conv.out_channels) == (cin, cout), name
            assert isinstance(layer.lrn, TFLocalResponseNorm) == lrn, name
            assert layer.activation == (None if kind == "G0" else "lrelu"), name
        else:
            assert isinstance(layer, GatedDeconv2d), name
            assert isinstance(layer.deconv, nn.ConvTranspose2d)
            assert layer.deconv.kernel_size == (k, k) and layer.deconv.stride == (s, s), name
            assert (layer.deconv.in_channels, layer.deconv.out_channels) == (cin, cout), name
            assert layer.self_gated and layer.gate is None, name
            assert not any(isinstance(m, TFLocalResponseNorm) for m in layer.modules()), name


def test_generator_param_count_official():
    assert n_params(full_width_generator()) == 92_884_113


def test_generator_param_count_separate_gate_deconv():
    official = n_params(full_width_generator())
    fixed = full_width_generator(self_gated_deconv=False)
    gate_convt = sum(cin * cout * 25 + cout for _, kind, _, _, _, cin, cout, _ in TABLE if kind == "D")
    assert gate_convt == sum(n_params(getattr(fixed, n).gate) for n, kind, *_ in TABLE if kind == "D")
    assert n_params(fixed) == official + gate_convt


def test_generator_widths_scale_with_cnum():
    g = full_width_generator(cnum=8)
    assert g.gconv1_ds.conv.out_channels == 8
    assert g.gconv4_ds.conv.out_channels == 64
    assert g.gconv8.conv.in_channels == 128
    assert g.gconv13.conv.in_channels == 16
    assert g.gconv14.conv.in_channels == 12


@pytest.mark.slow
@pytest.mark.parametrize("padding_mode", ["tf_same", "symmetric"])
def test_generator_forward_small(padding_mode):
    torch.manual_seed(0)
    g = SCFEGANGenerator(cnum=8, padding_mode=padding_mode)
    x = torch.randn(2, 9, 128, 128)
    y = g(x)
    assert y.shape == (2, 3, 128, 128)
    assert torch.isfinite(y).all() and y.abs().max() <= 1
    y.mean().backward()
    assert g.gconv1_ds.conv.weight.grad is not None


def test_generator_forward_separate_gate_deconv():
    torch.manual_seed(0)
    y = SCFEGANGenerator(cnum=4, self_gated_deconv=False)(torch.randn(1, 9, 128, 256))
    assert y.shape == (1, 3, 128, 256)


@pytest.mark.parametrize("shape", [(1, 9, 192, 128), (1, 9, 128, 100), (1, 9, 64, 64)])
def test_generator_rejects_size_not_multiple_of_128(shape):
    g = SCFEGANGenerator(cnum=4)
    with pytest.raises(ValueError, match="multiples of 128"):
        g(torch.zeros(shape))


def test_generator_rejects_wrong_channels():
    with pytest.raises(ValueError, match="9"):
        SCFEGANGenerator(cnum=4)(torch.zeros(1, 8, 128, 128))


def test_make_generator_input_order():
    image = torch.randn(2, 3, 8, 8)
    sketch, mask, noise = torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float(), torch.rand(2, 1, 8, 8)
    color = torch.randn(2, 3, 8, 8)
    x = make_generator_input(image, sketch, color, mask, noise)
    assert x.shape == (2, 9, 8, 8)
    assert torch.equal(x[:, 0:3], image * (1 - mask))
    assert torch.equal(x[:, 3:4], sketch)
    assert torch.equal(x[:, 4:7], color)
    assert torch.equal(x[:, 7:8], mask)
    assert torch.equal(x[:, 8:9], noise)


def test_composite_exact_outside_mask():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    output = torch.rand(2, 3, 16, 16) * 2 - 1
    output[:, :, :2] = float("nan")  # garbage outside the mask must not leak
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:10, 3:12] = 1
    out = composite(output, image, mask)
    keep = (mask == 0).expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert torch.equal(out[~keep], output[~keep])


# --------------------------------------------------------------------------- LRN


def test_tf_lrn_matches_tf_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 24, 5, 7, dtype=torch.float64)
    c = x.shape[1]
    expected = torch.empty_like(x)
    for i in range(c):
        window = x[:, max(0, i - 5) : min(c, i + 6)]  # depth_radius 5, zero padding at the edges
        expected[:, i] = x[:, i] / torch.sqrt(5e-5 + (window**2).sum(1))
    torch.testing.assert_close(tf_lrn()(x), expected, atol=1e-6, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(tf_lrn()(x32), expected.float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3, 11, 24, 64])
def test_tf_lrn_equals_torch_local_response_norm(channels):
    """Band-matrix LRN (ops/fast_conv.py) against nn.LocalResponseNorm(11, alpha=11, beta=0.5, k=5e-5), fewer
    channels than the window included; values of very different magnitudes across channels."""
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 6, 5, generator=g) * torch.logspace(-2, 2, channels).view(1, -1, 1, 1)
    ref = nn.LocalResponseNorm(size=11, alpha=11.0, beta=0.5, k=5e-5)(x)
    lrn = tf_lrn()
    torch.testing.assert_close(lrn(x), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lrn(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-6, rtol=1e-5)
    assert lrn.state_dict() == {}  # no parameters or buffers: checkpoints as before
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    grad_out = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(
        torch.autograd.grad(lrn(xg), xg, grad_out)[0],
        torch.autograd.grad(nn.LocalResponseNorm(11, 11.0, 0.5, 5e-5)(xr), xr, grad_out)[0],
        atol=1e-5,
        rtol=1e-4,
    )


@pytest.mark.parametrize("size", [128, 256])
def test_generator_output_unchanged_by_the_fast_kernels(size, monkeypatch):
    """The whole generator against the kernels it had before ops/fast_conv.py (nn.LocalResponseNorm, PyTorch's
    dilated conv): bottleneck 1x1 and 2x2, so both dropped taps and space-to-batch are used."""
    import archs.gated_conv as gc

    torch.manual_seed(0)
    net = SCFEGANGenerator(cnum=8).eval()
    x = torch.rand(1, 9, size, size) * 2 - 1
    with torch.no_grad():
        fast = net(x)
        monkeypatch.setattr(gc.Conv2dSame, "conv_padded", lambda self, t: self._conv_forward(t, self.weight, self.bias))
        for m in net.modules():
            if isinstance(m, GatedConv2d) and m.lrn is not None:
                m.lrn = nn.LocalResponseNorm(size=11, alpha=11.0, beta=0.5, k=5e-5)
        before = net(x)
    torch.testing.assert_close(fast, before, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- TF 'SAME' padding


def test_tf_same_pad_amounts():
    assert tf_same_pads(512, 7, 2) == (2, 3)
    assert tf_same_pads(512, 5, 2) == (1, 2)
    assert tf_same_pads(512, 3, 2) == (0, 1)
    assert tf_same_pads(4, 3, 1, 16) == (16, 16)
    assert tf_same_pads(5, 3, 2) == (1, 1)  # odd input: symmetric


@pytest.mark.parametrize("k,pads", [(7, (2, 3)), (5, (1, 2)), (3, (0, 1))])
def test_conv2d_same_stride2_exact(k, pads):
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, k, stride=2, same_padding="tf_same")
    x = torch.randn(2, 3, 16, 12)
    before, after = pads
    expected = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, conv.bias, stride=2)
    y = conv(x)
    assert y.shape == (2, 4, 8, 6)
    torch.testing.assert_close(y, expected, atol=0, rtol=0)
    # The usual symmetric (k-1)//2 padding has the same size but is shifted by a pixel.
    sym = Conv2dSame(3, 4, k, stride=2, same_padding="symmetric")
    sym.load_state_dict(conv.state_dict())
    assert sym(x).shape == y.shape
    assert not torch.allclose(sym(x), y)


def test_conv2d_same_stride1_dilated():
    conv = Conv2dSame(2, 2, 3, stride=1, dilation=8, same_padding="tf_same")
    assert conv.padding == (8, 8)
    x = torch.randn(1, 2, 4, 4)
    expected = F.conv2d(F.pad(x, (8, 8, 8, 8)), conv.weight, conv.bias, dilation=8)
    # ops/fast_conv.py computes it as a 1x1 conv (only the centre tap sees the 4x4 input): float rounding only
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)


# (H, W, kernel, dilation, F.pad padding (left, right, top, bottom)): SC-FEGAN's 4x4 bottleneck at 512x512 with
# its four dilations, TF 'SAME' on odd/even/non-square sizes, sizes not a multiple of the dilation, a 5x5 kernel,
# and an asymmetric padding.
DILATED_CASES = [
    (4, 4, 3, 2, (2, 2, 2, 2)),
    (4, 4, 3, 4, (4, 4, 4, 4)),
    (4, 4, 3, 8, (8, 8, 8, 8)),
    (4, 4, 3, 16, (16, 16, 16, 16)),
    (9, 7, 3, 2, (2, 2, 2, 2)),
    (13, 10, 3, 3, (3, 3, 3, 3)),
    (8, 8, 5, 2, (4, 4, 4, 4)),
    (33, 20, 3, 4, (4, 4, 4, 4)),
    (5, 9, 3, 8, (8, 8, 8, 8)),
    (6, 5, 3, 2, (1, 3, 0, 4)),
]


@pytest.mark.parametrize("h,w,k,d,pad", DILATED_CASES)
@pytest.mark.parametrize("space_to_batch", [True, False])
def test_dilated_conv2d_equals_conv2d_with_dilation_and_gradients(h, w, k, d, pad, space_to_batch):
    from ops.fast_conv import dilated_conv2d

    g = torch.Generator().manual_seed(h * 100 + d)
    x = torch.randn(2, 5, h, w, generator=g, requires_grad=True)
    weight = torch.randn(6, 5, k, k, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    expected = F.conv2d(F.pad(x, pad), weight, bias, dilation=d)
    got = dilated_conv2d(x, weight, bias, pad, (d, d), space_to_batch=space_to_batch)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    grad_out = torch.randn(expected.shape, generator=g)
    want = torch.autograd.grad(expected, (x, weight, bias), grad_out)
    have = torch.autograd.grad(got, (x, weight, bias), grad_out)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    if d >= max(h, w):  # every off-centre tap reads padding only: its gradient is exactly zero, in both
        centre = torch.zeros(k, k, dtype=torch.bool)
        centre[k // 2, k // 2] = True
        assert torch.count_nonzero(have[1][:, :, ~centre]) == 0


@pytest.mark.parametrize("size,d", [(4, 2), (4, 16), (8, 4), (11, 2)])
def test_conv2d_same_dilated_layer_matches_tf_same_reference(size, d):
    """The layer as the generator uses it (TF 'SAME' at stride 1 = d*(k-1)/2 each side), float64 and float32."""
    torch.manual_seed(size + d)
    conv = Conv2dSame(8, 4, 3, stride=1, dilation=d, same_padding="tf_same")
    pads = tf_same_pads(size, 3, 1, d)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        conv = conv.to(dtype)
        x = torch.randn(1, 8, size, size, dtype=dtype)
        expected = F.conv2d(F.pad(x, pads + pads), conv.weight, conv.bias, dilation=d)
        torch.testing.assert_close(conv(x), expected, atol=tol, rtol=0)


def test_traced_dilated_layer_keeps_the_plain_conv_for_other_sizes():
    """Dropping dead taps depends on the input size: a traced/exported graph must not bake it in."""
    conv = Conv2dSame(3, 3, 3, stride=1, dilation=4, same_padding="tf_same").eval()
    with torch.no_grad():
        traced = torch.jit.trace(conv, torch.randn(1, 3, 4, 4), check_trace=False)
        x = torch.randn(1, 3, 12, 12)  # here every tap reads the image
        expected = F.conv2d(F.pad(x, (4, 4, 4, 4)), conv.weight, conv.bias, dilation=4)
        torch.testing.assert_close(traced(x), expected, atol=1e-5, rtol=0)


def test_conv_transpose_same_is_adjoint_of_tf_same_conv():
    # TF conv2d_transpose(SAME) is the gradient of conv2d(SAME, stride 2) w.r.t. its input.
    torch.manual_seed(0)
    convt = ConvTranspose2dSame(6, 4, 5, 2, bias=False, same_padding="tf_same")
    z = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    big = torch.zeros(2, 4, 10, 14, dtype=torch.float64, requires_grad=True)
    w = convt.weight.detach().double()  # [in_ct=6, out_ct=4, 5, 5] = conv weight [out=6, in=4, 5, 5]
    y = F.conv2d(F.pad(big, (1, 2, 1, 2)), w, stride=2)
    assert y.shape == z.shape
    (expected,) = torch.autograd.grad(y, big, grad_outputs=z)
    out = convt.double()(z)
    assert out.shape == (2, 4, 10, 14)
    torch.testing.assert_close(out, expected)
    sym = ConvTranspose2dSame(6, 4, 5, 2, bias=False, same_padding="symmetric").double()
    sym.load_state_dict(convt.state_dict())
    assert sym(z).shape == out.shape
    assert not torch.allclose(sym(z), out)


# --------------------------------------------------------------------------- gated blocks


def test_gated_conv_formula():
    torch.manual_seed(0)
    layer = GatedConv2d(4, 12, 3, stride=2, use_lrn=True)
    x = torch.randn(2, 4, 8, 8)
    xp = F.pad(x, (0, 1, 0, 1))
    feat = F.conv2d(xp, layer.conv.weight, layer.conv.bias, stride=2)
    gate = torch.sigmoid(F.conv2d(xp, layer.gate.weight, layer.gate.bias, stride=2))
    expected = F.leaky_relu(tf_lrn()(feat), 0.2) * gate
    torch.testing.assert_close(layer(x), expected)

    out_layer = GatedConv2d(4, 3, 3, use_lrn=False, activation=None)
    feat = F.conv2d(x, out_layer.conv.weight, out_layer.conv.bias, padding=1)
    gate = torch.sigmoid(F.conv2d(x, out_layer.gate.weight, out_layer.gate.bias, padding=1))
    torch.testing.assert_close(out_layer(x), feat * gate)


def test_gated_deconv_self_gated_formula():
    torch.manual_seed(0)
    layer = GatedDeconv2d(6, 4, self_gated=True)
    nn.init.normal_(layer.deconv.bias)
    assert [n for n, _ in layer.named_parameters()] == ["deconv.weight", "deconv.bias"]
    x = torch.randn(2, 6, 4, 4)
    d = F.conv_transpose2d(x, layer.deconv.weight, layer.deconv.bias, stride=2, padding=1)[..., :-1, :-1]
    d = F.leaky_relu(d, 0.2)
    out = layer(x)
    assert out.shape == (2, 4, 8, 8)
    torch.testing.assert_close(out, d * torch.sigmoid(d))


def test_gated_deconv_separate_gate_formula():
    torch.manual_seed(0)
    layer = GatedDeconv2d(6, 4, self_gated=False)
    x = torch.randn(2, 6, 4, 4)
    d = F.conv_transpose2d(x, layer.deconv.weight, layer.deconv.bias, stride=2, padding=1)[..., :-1, :-1]
    g = F.conv_transpose2d(x, layer.gate.weight, layer.gate.bias, stride=2, padding=1)[..., :-1, :-1]
    torch.testing.assert_close(layer(x), F.leaky_relu(d, 0.2) * torch.sigmoid(g))


# --------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("k,count", [(3, 2_143_936), (5, 5_953_216)])
def test_discriminator_param_count(k, count):
    d = SNPatchDiscriminator(kernel_size=k)
    # Raw weights + biases; the spectral-norm u/v vectors are buffers, not parameters.
    assert n_params(d) == count
    assert any(name.endswith("_u") for name, _ in d.named_buffers())


def test_discriminator_structure_and_output():
    torch.manual_seed(0)
    d = SNPatchDiscriminator()
    assert [c.out_channels for c in d.convs] == [64, 128, 256, 256, 256, 256]
    for conv in d.convs:
        assert conv.kernel_size == (3, 3) and conv.stride == (2, 2)
        assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")
    out = d(torch.randn(2, 8, 128, 192))
    assert out.shape == (2, 256, 2, 3)
    assert (out < 0).any()  # raw LeakyReLU map: no ReLU clamp, no tanh


def test_discriminator_symmetric_padding_shape():
    d = SNPatchDiscriminator(cnum=8, kernel_size=5, padding_mode="symmetric")
    assert d(torch.randn(1, 8, 128, 128)).shape == (1, 32, 2, 2)
