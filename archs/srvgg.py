"""SRVGGNetCompact: Real-ESRGAN's compact VGG-style SR network (the ``realesr-animevideov3`` / ``realesr-general-x4v3``
generators), as Real-ESRGAN ``realesrgan/archs/srvgg_arch.py``.

Every convolution works at the low resolution; the last one emits ``num_out_ch * upscale**2`` channels that a pixel
shuffle turns into the HR image, to which the nearest-upsampled input is added (the network learns the residual).
Module names match the official ``.pth`` files (``body.N.weight`` / ``body.N.bias`` for the convs at even ``N``,
``body.N.weight`` for the PReLU slopes at odd ``N``), so they load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ops.fast_conv import fast_inference, packed_conv2d, prepack_applies

ACT_TYPES = ("prelu", "relu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)  # one slope per channel, initialised to 0.25 (PyTorch default)
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)  # 0.1 here, not ESRGAN's 0.2 (srvgg_arch.py)


class SRVGGNetCompact(nn.Module):
    """conv(num_in_ch -> num_feat) + act, ``num_conv`` x [conv(num_feat -> num_feat) + act],
    conv(num_feat -> num_out_ch * upscale**2), pixel shuffle, + nearest-upsampled input.

    Args:
        num_in_ch: image channels in (3).
        num_out_ch: image channels out (3).
        num_feat: width of every intermediate feature map (64).
        num_conv: convolutions between the first and the last (16 for animevideov3, 32 for general-x4v3).
        upscale: the upsampling factor (4).
        act_type: ``prelu`` (official models), ``relu`` or ``leakyrelu`` (slope 0.1).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        if act_type not in ACT_TYPES:
            raise ValueError(f"act_type must be one of {ACT_TYPES}, got {act_type!r}")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.upscale = upscale
        self.act_type = act_type

        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(_activation(act_type, num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    @property
    def scale(self) -> int:
        """The upsampling factor, under the name RRDBNet uses (predict, the app and tiling read ``net.scale``)."""
        return self.upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # (TorchScript compiles only the other branch)
            if fast_inference(x, self) and prepack_applies(x):
                return self._forward_packed(x)
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        # The network learns the residual over nearest upsampling (not bicubic: srvgg_arch.py).
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")

    @torch.jit.unused  # eager CPU inference only; a scripted module keeps the plain path
    def _forward_packed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for CPU inference: NHWC activations (oneDNN's own layout: no reorder around each conv),
        each weight packed once, ReLU / LReLU inside the convolutions (ops/fast_conv.py); PReLU, which oneDNN's
        convolution cannot apply, after it.  The same numbers up to float rounding."""
        x = x.contiguous(memory_format=torch.channels_last)
        out = x
        for i in range(0, len(self.body) - 1, 2):
            conv, act = self.body[i], self.body[i + 1]
            slope = 0.0 if isinstance(act, nn.ReLU) else (act.negative_slope if isinstance(act, nn.LeakyReLU) else None)
            out = packed_conv2d(conv, "weight", out, conv.weight, conv.bias, 1, 1, leaky_relu=slope)
            if slope is None:
                out = act(out)
        conv = self.body[-1]
        out = self.upsampler(packed_conv2d(conv, "weight", out, conv.weight, conv.bias, 1, 1))
        return (out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")).contiguous()
