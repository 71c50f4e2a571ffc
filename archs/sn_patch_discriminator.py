"""SN-PatchGAN discriminator for SC-FEGAN (arXiv 1902.06838 sec. 3.2).

The paper gives no layer table; this follows DeepFill v2's SN-PatchGAN
(``inpaint_model.py:112-122``, ``inpaint_ops.py:83-102``) with the paper's 3x3 kernels:
six spectral-normalised stride-2 'SAME' convs, widths 64-128-256-256-256-256,
LeakyReLU(0.2) after every layer including the last, raw patch map out (no tanh, no ReLU:
the SC-FEGAN loss is a hinge loss without the clamp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from archs.gated_conv import Conv2dSame


class SNPatchDiscriminator(nn.Module):
    """SN-PatchGAN.

    Args:
        in_channels: 8 = [image (3), sketch (1), colour (3), mask (1)].
        cnum: base width; layer widths are cnum x (1, 2, 4, 4, 4, 4, ...).
        kernel_size: 3 (SC-FEGAN paper) or 5 (DeepFill v2).
        num_layers: number of stride-2 convs (6).
        padding_mode: ``"tf_same"`` (DeepFill's TF 'SAME', the default) or ``"symmetric"``.

    ``forward`` returns the patch map ``[B, 4*cnum, H/2**L, W/2**L]`` (``[B, 256, H/64, W/64]``).
    Spectral norm: ``torch.nn.utils.parametrizations.spectral_norm`` with one power iteration
    per training forward (TF/DeepFill use 1).  Parameter count = the raw weights and biases
    (the u/v power-iteration vectors are buffers): 2,143,936 at k3, 5,953,216 at k5.
    """

    def __init__(
        self,
        in_channels: int = 8,
        cnum: int = 64,
        kernel_size: int = 3,
        num_layers: int = 6,
        negative_slope: float = 0.2,
        padding_mode: str = "tf_same",
    ) -> None:
        super().__init__()
        widths = [cnum * m for m in (1, 2, 4)] + [4 * cnum] * max(num_layers - 3, 0)
        widths = widths[:num_layers]
        self.negative_slope = negative_slope
        layers = []
        cin = in_channels
        for cout in widths:
            conv = Conv2dSame(cin, cout, kernel_size, stride=2, same_padding=padding_mode)
            # TF tf.layers.conv2d init (Glorot uniform, zero bias), as DeepFill.
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            layers.append(spectral_norm(conv, n_power_iterations=1))
            cin = cout
        self.convs = nn.ModuleList(layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
        return x
