"""Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021, arXiv 2107.10833, Sec. 3.3,
Fig. 6; ``realesrgan/archs/discriminator_arch.py::UNetDiscriminatorSN``), with its module names.

    conv0 3x3 (no SN)                       -> x0  [F,   H,   W]
    conv1..3 4x4 stride 2, SN, no bias      -> x1 [2F, H/2], x2 [4F, H/4], x3 [8F, H/8]
    upsample x2 (bilinear) + conv4 3x3 SN   -> x4 [4F, H/4]  (+ x2 when skip_connection)
    upsample x2 + conv5 3x3 SN              -> x5 [2F, H/2]  (+ x1)
    upsample x2 + conv6 3x3 SN              -> x6 [F,  H]    (+ x0)
    conv7, conv8 3x3 SN; conv9 3x3 (no SN)  -> [1, H, W] per-pixel realness logits

LeakyReLU(0.2) after every conv but the last.  4,376,897 parameters at ``num_feat=64`` (counted from this layer
table: tests/test_realesrgan_nets.py).  Input height and width must be multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    """Args:
    num_in_ch: image channels (3).
    num_feat: base width F (Real-ESRGAN: 64).
    skip_connection: add the encoder features to the decoder's (Real-ESRGAN: True).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        # torch.nn.utils.spectral_norm (weight_orig / weight_u / weight_v), as Real-ESRGAN: its published
        # discriminator weights load as they are.  The SN layers have no bias there either.
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, negative_slope=0.2)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(
                f"UNetDiscriminatorSN expects [N, C, H, W] with H and W multiples of 8 (three stride-2 "
                f"stages and back), got {tuple(x.shape)}"
            )
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.conv1(x0))
        x2 = self._act(self.conv2(x1))
        x3 = self._act(self.conv3(x2))
        x4 = self._act(self.conv4(self._up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = self._act(self.conv5(self._up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = self._act(self.conv6(self._up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = self._act(self.conv7(x6))
        out = self._act(self.conv8(out))
        return self.conv9(out)
