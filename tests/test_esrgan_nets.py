"""RRDBNet and VGGStyleDiscriminator: BasicSR structure, parameter counts, shapes, init."""

import math

import pytest
import torch

from archs.rrdbnet import RRDB, ResidualDenseBlock, RRDBNet
from archs.vgg_discriminator import VGGStyleDiscriminator


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Forward passes use a narrow net: the full 23-block G is ~1.1 TFLOP per 128x128 LR patch.
NARROW = dict(num_feat=8, num_block=1, num_grow_ch=4)


@pytest.fixture(scope="module")
def full_g():
    torch.manual_seed(0)
    return RRDBNet()


# ----------------------------------------------------------------------------- generator


def test_rrdbnet_param_counts(full_g):
    assert n_params(full_g) == 16_697_987
    assert n_params(full_g.body) == 16_546_752
    assert n_params(ResidualDenseBlock(64, 32)) == 239_808
    assert n_params(RRDB(64, 32)) == 719_424
    assert len(full_g.body) == 23


def test_rrdbnet_state_dict_names_match_basicsr():
    net = RRDBNet(num_block=2, num_feat=8, num_grow_ch=4)
    keys = set(net.state_dict())
    expected = {f"{m}.{p}" for m in ("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
                for p in ("weight", "bias")}  # fmt: skip
    expected |= {
        f"body.{n}.rdb{i}.conv{j}.{p}"
        for n in range(2) for i in (1, 2, 3) for j in range(1, 6) for p in ("weight", "bias")
    }  # fmt: skip
    assert keys == expected


@pytest.mark.parametrize("scale, in_ch", [(4, 3), (2, 12), (1, 48)])
def test_rrdbnet_output_shape(scale, in_ch):
    torch.manual_seed(0)
    net = RRDBNet(scale=scale, **NARROW)
    assert net.conv_first.in_channels == in_ch
    x = torch.rand(2, 3, 16, 12)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 16 * scale, 12 * scale)
    assert torch.isfinite(y).all()


def test_rrdbnet_other_channels():
    net = RRDBNet(num_in_ch=1, num_out_ch=2, scale=2, **NARROW)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 8, 8)).shape == (1, 2, 16, 16)


def test_rrdbnet_rejects_unsupported_scale():
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3, **NARROW)


def test_pixel_unshuffle_matches_basicsr_channel_order():
    # BasicSR's own pixel_unshuffle (arch_util.py); torch's must order channels identically so
    # BasicSR / Real-ESRGAN x2 weights load into conv_first unchanged.
    x = torch.arange(2 * 3 * 8 * 4, dtype=torch.float32).view(2, 3, 8, 4)
    s = 2
    b, c, hh, hw = x.shape
    ref = x.view(b, c, hh // s, s, hw // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, c * s * s, hh // s, hw // s)
    assert torch.equal(torch.nn.functional.pixel_unshuffle(x, s), ref)


def test_rrdbnet_init_statistics(full_g):
    # Every RDB conv: Kaiming-normal (fan_in, gain sqrt 2) x 0.1, bias 0.
    n_checked = 0
    for name, m in full_g.body.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            expected = 0.1 * math.sqrt(2.0 / fan_in)
            ratio = m.weight.std().item() / expected
            assert 0.95 < ratio < 1.05, (name, ratio)
            assert abs(m.weight.mean().item()) < 0.05 * expected, name
            assert torch.count_nonzero(m.bias) == 0, name
            n_checked += 1
    assert n_checked == 23 * 3 * 5

    # The other convs keep PyTorch's default (kaiming_uniform a=sqrt 5: std = 1/sqrt(3 fan_in),
    # nonzero uniform bias), not the x0.1 init.
    for name in ("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        m = getattr(full_g, name)
        fan_in = m.in_channels * 9
        default_std = 1 / math.sqrt(3 * fan_in)
        assert 0.9 < m.weight.std().item() / default_std < 1.1, name
        assert m.weight.std().item() > 3 * 0.1 * math.sqrt(2.0 / fan_in), name
        assert torch.count_nonzero(m.bias) > 0, name
        assert m.bias.abs().max().item() <= 1 / math.sqrt(fan_in) + 1e-7, name


def test_rdb_residual_scaling():
    # out = conv5(...) * 0.2 + x: zeroing conv5 makes the block an exact identity.
    rdb = ResidualDenseBlock(8, 4)
    with torch.no_grad():
        rdb.conv5.weight.zero_()
        rdb.conv5.bias.fill_(1.0)
        x = torch.randn(1, 8, 5, 5)
        assert torch.allclose(rdb(x), x + 0.2)


# ------------------------------------------------------------------------- discriminator


def test_discriminator_param_count():
    assert n_params(VGGStyleDiscriminator(3, 64, 128)) == 14_499_401
    # 256 adds stage 5: conv5_0 (512*512*9) + conv5_1 (512*512*16) + two BN (2*1024).
    assert n_params(VGGStyleDiscriminator(3, 64, 256)) == 14_499_401 + 512 * 512 * 25 + 2 * 1024


def test_discriminator_names_match_basicsr():
    d = VGGStyleDiscriminator(3, 8, 128)
    names = {n for n, _ in d.named_modules() if n}
    convs = {f"conv{i}_{j}" for i in range(5) for j in (0, 1)}
    bns = {f"bn{i}_{j}" for i in range(5) for j in (0, 1)} - {"bn0_0"}
    assert names == convs | bns | {"linear1", "linear2", "lrelu"}
    assert d.conv0_0.bias is not None
    assert all(getattr(d, c).bias is None for c in convs - {"conv0_0"})
    assert d.linear1.in_features == 8 * 8 * 4 * 4
    assert {"conv5_0", "bn5_1"} <= {n for n, _ in VGGStyleDiscriminator(3, 8, 256).named_modules()}


@pytest.mark.parametrize("size", [128, 256])
def test_discriminator_output_shape(size):
    torch.manual_seed(0)
    d = VGGStyleDiscriminator(3, 4, size)
    with torch.no_grad():
        out = d(torch.rand(2, 3, size, size))
    assert out.shape == (2, 1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 256, 256), (1, 3, 128, 96)])
def test_discriminator_rejects_wrong_input_size(shape):
    d = VGGStyleDiscriminator(3, 4, 128)
    with pytest.raises(ValueError, match=r"input_size=128.*got \(" + ", ".join(map(str, shape)) + r"\)"):
        d(torch.rand(*shape))


def test_discriminator_rejects_unsupported_input_size():
    with pytest.raises(ValueError, match="128 or 256"):
        VGGStyleDiscriminator(3, 4, 192)
