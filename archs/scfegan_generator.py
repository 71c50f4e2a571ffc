"""SC-FEGAN generator: the 25-layer gated U-Net of the official ``model.py:29-86``
(run-youngjoo/SC-FEGAN).  Attribute names are the TF scopes, so a TF checkpoint maps by name.

Mask convention: ``mask == 1`` marks the region to erase/regenerate.  Images are in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from archs.gated_conv import GatedConv2d, GatedDeconv2d
from ops.fast_conv import fast_inference

# The seven stride-2 convs divide H and W by 2**7.
SIZE_MULTIPLE = 128


class SCFEGANGenerator(nn.Module):
    """Official SC-FEGAN generator.

    Args:
        in_channels: 9 = [image*(1-M) (3), sketch (1), colour (3), M (1), noise (1)];
            see :func:`make_generator_input`.
        out_channels: 3.
        cnum: base width (64 official; widths 1-2-4-8-8-8-8 x cnum).
        self_gated_deconv: True = official self-gated deconv quirk (needed for the released
            weights); False = separate gate ConvT.
        padding_mode: ``"tf_same"`` (exact TF) or ``"symmetric"``; see ``archs.gated_conv``.

    ``forward(x)`` returns ``tanh`` of gconv14, i.e. the raw prediction G(x) in [-1, 1]
    (not composited; use :func:`composite`).  H and W must be multiples of 128.
    """

    def __init__(
        self,
        in_channels: int = 9,
        out_channels: int = 3,
        cnum: int = 64,
        self_gated_deconv: bool = True,
        padding_mode: str = "tf_same",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        c1, c2, c4, c8 = cnum, 2 * cnum, 4 * cnum, 8 * cnum

        def g(cin, cout, k, s=1, d=1, lrn=True, act="lrelu"):
            return GatedConv2d(cin, cout, k, s, d, use_lrn=lrn, activation=act, padding_mode=padding_mode)

        def up(cin, cout):
            return GatedDeconv2d(cin, cout, 5, 2, self_gated=self_gated_deconv, padding_mode=padding_mode)

        # Encoder.  No LRN on the input layer (paper and code).
        self.gconv1_ds = g(in_channels, c1, 7, 2, lrn=False)
        self.gconv2_ds = g(c1, c2, 5, 2)
        self.gconv3_ds = g(c2, c4, 5, 2)
        self.gconv4_ds = g(c4, c8, 3, 2)
        self.gconv5_ds = g(c8, c8, 3, 2)
        self.gconv6_ds = g(c8, c8, 3, 2)
        self.gconv7_ds = g(c8, c8, 3, 2)
        # Dilated bottleneck.
        self.co_conv1_dlt = g(c8, c8, 3, 1, 2)
        self.co_conv2_dlt = g(c8, c8, 3, 1, 4)
        self.co_conv3_dlt = g(c8, c8, 3, 1, 8)
        self.co_conv4_dlt = g(c8, c8, 3, 1, 16)
        # Decoder: deconv (no LRN), concat [encoder skip, upsampled], gated conv (LRN).
        self.deconv1 = up(c8, c8)
        self.gconv8 = g(2 * c8, c8, 3)
        self.deconv2 = up(c8, c8)
        self.gconv9 = g(2 * c8, c8, 3)
        self.deconv3 = up(c8, c8)
        self.gconv10 = g(2 * c8, c8, 3)
        self.deconv4 = up(c8, c4)
        self.gconv11 = g(2 * c4, c4, 3)
        self.deconv5 = up(c4, c2)
        self.gconv12 = g(2 * c2, c2, 3)
        self.deconv6 = up(c2, c1)
        self.gconv13 = g(2 * c1, c1, 3)
        self.deconv7 = up(c1, out_channels)
        # Output layer: concat with the full generator input; no LRN, no activation.
        self.gconv14 = g(in_channels + out_channels, out_channels, 3, lrn=False, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(
                f"SCFEGANGenerator needs H and W to be multiples of {SIZE_MULTIPLE} (seven stride-2 "
                f"layers, and the skip concatenations need exact halving); got {h}x{w}. "
                "Resize or pad the input first."
            )
        fast = fast_inference(x, self)
        if fast:  # CPU inference: NHWC activations, oneDNN's own layout (no reorders between layers)
            x = x.contiguous(memory_format=torch.channels_last)
        x1 = self.gconv1_ds(x)
        x2 = self.gconv2_ds(x1)
        x3 = self.gconv3_ds(x2)
        x4 = self.gconv4_ds(x3)
        x5 = self.gconv5_ds(x4)
        x6 = self.gconv6_ds(x5)
        y = self.gconv7_ds(x6)
        y = self.co_conv1_dlt(y)
        y = self.co_conv2_dlt(y)
        y = self.co_conv3_dlt(y)
        y = self.co_conv4_dlt(y)
        # Skip order [encoder feature, upsampled] as model.py (matters for weight import).
        y = self.gconv8(torch.cat([x6, self.deconv1(y)], 1))
        y = self.gconv9(torch.cat([x5, self.deconv2(y)], 1))
        y = self.gconv10(torch.cat([x4, self.deconv3(y)], 1))
        y = self.gconv11(torch.cat([x3, self.deconv4(y)], 1))
        y = self.gconv12(torch.cat([x2, self.deconv5(y)], 1))
        y = self.gconv13(torch.cat([x1, self.deconv6(y)], 1))
        y = self.gconv14(torch.cat([x, self.deconv7(y)], 1))
        return torch.tanh_(y).contiguous() if fast else torch.tanh(y)


def make_generator_input(
    image: torch.Tensor,
    sketch: torch.Tensor,
    color: torch.Tensor,
    mask: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Official channel order ``[image*(1-M), sketch, colour, M, noise]`` (9 channels).

    ``sketch``, ``color`` and ``noise`` are taken as given: the official demo has already
    multiplied them by M (that belongs to the data pipeline).
    """
    return torch.cat([image * (1 - mask), sketch, color, mask, noise], dim=1)


def composite(output: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``output*M + image*(1-M)`` for a binary M.

    Written as a select, not arithmetic, so that pixels with ``mask == 0`` are bit-identical
    to ``image`` (no ``x*1 + y*0`` rounding, no NaN/inf leaking from the other term).
    Gradients flow to ``output`` inside the mask only.
    """
    return torch.where(mask > 0.5, output, image)
