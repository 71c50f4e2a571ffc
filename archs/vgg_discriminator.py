"""VGG-style discriminator of ESRGAN, as BasicSR ``VGGStyleDiscriminator``
(``basicsr/archs/discriminator_arch.py``), with BasicSR's module names.

Five (six at 256) stages of [3x3 s1 conv, 4x4 s2 conv], BN + LeakyReLU(0.2) everywhere except
after the first conv; then ``linear1`` (512*4*4 -> 100) -> LReLU -> ``linear2`` (-> 1).  The
output is a raw logit of shape (N, 1).  14,499,401 parameters at ``input_size=128``.

The flatten + linear head fixes the spatial size: the input must be exactly ``input_size``
square, hence the HR training patch of 128 in the ESRGAN recipe.
"""

from __future__ import annotations

import torch
from torch import nn


class VGGStyleDiscriminator(nn.Module):
    """Args:
    num_in_ch: image channels (3).
    num_feat: width of the first stage (64); stages use 1, 2, 4, 8, 8 (, 8) times this.
    input_size: 128 (BasicSR) or 256 (BasicSR adds stage 5 so the head still sees 4x4).  Any other
        power of two >= 32 follows the same rule (one stage per halving down to 4x4); the demo uses 64.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size < 32 or input_size & (input_size - 1):
            raise ValueError(
                f"VGGStyleDiscriminator: input_size must be a power of two >= 32 (BasicSR: 128 or 256), got {input_size!r}"
            )
        self.input_size = input_size
        self.num_stages = input_size.bit_length() - 3  # 128 -> 5 stages (conv0..conv4), 256 -> 6
        # BN follows every conv but the first, so those convs need no bias (BasicSR: bias=False).
        self.conv0_0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_feat, affine=True)
        ch = num_feat
        for i in range(1, self.num_stages):
            out = num_feat * min(2**i, 8)
            setattr(self, f"conv{i}_0", nn.Conv2d(ch, out, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(out, affine=True))
            setattr(self, f"conv{i}_1", nn.Conv2d(out, out, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(out, affine=True))
            ch = out
        self.linear1 = nn.Linear(ch * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A ValueError rather than BasicSR's assert: asserts vanish under ``python -O``, and a
        # wrong patch size otherwise surfaces as an opaque shape error in linear1.
        if x.dim() != 4 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"VGGStyleDiscriminator(input_size={self.input_size}) expects input of shape "
                f"(N, C, {self.input_size}, {self.input_size}), got {tuple(x.shape)}; the HR patch "
                f"size (gt_size) must equal the discriminator's input_size"
            )
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))  # /2
        for i in range(1, self.num_stages):  # each stage halves: /4 ... 4x4
            feat = self.lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        feat = feat.flatten(1)
        feat = self.lrelu(self.linear1(feat))
        return self.linear2(feat)
