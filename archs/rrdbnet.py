"""RRDBNet: the ESRGAN generator (Wang et al. 2018), as BasicSR ``basicsr/archs/rrdbnet_arch.py``.

Module names match BasicSR exactly (``conv_first``, ``body.N.rdb1..3.conv1..5``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so BasicSR ``params``/``params_ema``
state dicts load without renaming.  At the defaults the network has 16,697,987 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

from ops.fast_conv import fast_inference, packed_conv2d, prepack_applies


@torch.no_grad()
def default_init_weights(modules: list[nn.Module], scale: float = 1.0, bias_fill: float = 0.0) -> None:
    """BasicSR ``default_init_weights`` for convs: Kaiming-normal (a=0, fan_in) times ``scale``.

    The x0.1 "smaller initialisation" of the paper keeps the residual branches close to identity
    at the start, which is what makes a 23-block network without BN trainable.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight)  # a=0, mode="fan_in", gain sqrt(2)
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.fill_(bias_fill)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; ``out = conv5(...) * 0.2 + x`` (residual scaling beta=0.2).

    Args:
        num_feat: channels of the input/output (64).
        num_grow_ch: channels each of conv1-4 adds to the dense concatenation (32).
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # Only the RDB convs get the scaled init in BasicSR; every other conv keeps PyTorch's default.
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # (TorchScript compiles only the other branch)
            if fast_inference(x, self) and prepack_applies(x):
                return self._forward_packed(x)
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # no activation after conv5
        return x5 * 0.2 + x

    @torch.jit.unused  # eager CPU inference only; a scripted module keeps the plain path
    def _forward_packed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for CPU inference: each weight packed once for oneDNN, the LReLUs inside the convolutions,
        the residual in place (ops/fast_conv.py); the same numbers up to float rounding."""
        x1 = _conv(self.conv1, x, 0.2)
        x2 = _conv(self.conv2, torch.cat((x, x1), 1), 0.2)
        x3 = _conv(self.conv3, torch.cat((x, x1, x2), 1), 0.2)
        x4 = _conv(self.conv4, torch.cat((x, x1, x2, x3), 1), 0.2)
        x5 = _conv(self.conv5, torch.cat((x, x1, x2, x3, x4), 1))
        return x5.mul_(0.2).add_(x)


def _conv(conv: nn.Conv2d, x: torch.Tensor, leaky_relu: float | None = None) -> torch.Tensor:
    """``conv`` (3x3, stride 1, padding 1) with its weight packed once, optionally with an LReLU inside."""
    return packed_conv2d(conv, "weight", x, conv.weight, conv.bias, 1, 1, leaky_relu=leaky_relu)


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three RDBs, ``out = rdb3(rdb2(rdb1(x))) * 0.2 + x``."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        if not torch.jit.is_scripting():
            if fast_inference(x, self):
                return out.mul_(0.2).add_(x)  # ``out`` is this call's own tensor
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: conv_first -> ``num_block`` RRDBs -> conv_body (+ long skip) -> 2x (nearest
    x2 -> conv -> LReLU) -> conv_hr -> LReLU -> conv_last.  No output activation or clamp.

    The body always upsamples x4; for ``scale`` 2 / 1 the input is first ``pixel_unshuffle``d by
    2 / 4 (so ``conv_first`` sees 4x / 16x the channels), as in BasicSR / Real-ESRGAN.  For those
    scales H and W must be divisible by 2 / 4.

    Args:
        num_in_ch: image channels in (3).
        num_out_ch: image channels out (3).
        scale: 4, 2 or 1.
        num_feat: trunk width (64).
        num_block: number of RRDBs (23).
        num_grow_ch: dense growth channels (32).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got {scale!r}")
        self.scale = scale
        # pixel_unshuffle folds space into channels so the fixed x4 body yields x2 / x1 overall.
        unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    @torch.jit.unused  # eager CPU inference only; a scripted module keeps the plain path
    def _forward_packed(self, feat: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` after the pixel-unshuffle, for CPU inference: each weight packed once, the LReLUs inside the
        convolutions (ops/fast_conv.py); the same numbers up to float rounding."""
        feat = _conv(self.conv_first, feat)
        feat = _conv(self.conv_body, self.body(feat)).add_(feat)
        feat = _conv(self.conv_up1, F.interpolate(feat, scale_factor=2, mode="nearest"), 0.2)
        feat = _conv(self.conv_up2, F.interpolate(feat, scale_factor=2, mode="nearest"), 0.2)
        return _conv(self.conv_last, _conv(self.conv_hr, feat, 0.2)).contiguous()

    def compile_regions(self) -> list[nn.Module]:
        """The 23 identical RRDBs: ``torch.compile`` compiles one and reuses it for the others (a short cold
        start; lightning_modules/speed.py)."""
        return list(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = fast_inference(x, self)
        if fast:  # CPU inference: NHWC activations, oneDNN's own layout (no reorders between convs)
            x = x.contiguous(memory_format=torch.channels_last)
        if self.scale == 2:
            feat = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            feat = F.pixel_unshuffle(x, 4)
        else:
            feat = x
        if fast and prepack_applies(feat):
            return self._forward_packed(feat)
        feat = self.conv_first(feat)
        # Long skip is unscaled (unlike the 0.2 inside RDB/RRDB).
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out.contiguous() if fast else out
