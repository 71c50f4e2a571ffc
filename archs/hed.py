"""HED (Xie & Tu, ICCV 2015, "Holistically-Nested Edge Detection"): VGG16 trunk with five side outputs and a fused
1 x 1 combination, in the layout of the common PyTorch port of the BSDS500 Caffe model (sniklaus/pytorch-hed,
``network-bsds500.pytorch``), so its state dict loads as is.

Key names: ``netVggOne.0.weight`` ... ``netCombine.0.bias`` (the port's current names); files saved by the port's
older revisions use the prefix ``module`` (``moduleVggOne.0.weight`` ...) and are renamed on load.
Input: BGR in [0, 1] (the port's convention; the Caffe model was trained on BGR x 255 minus the BSDS mean below).
Output: the fused edge probability ``sigmoid(combine(side outputs))`` [B, 1, H, W] (Caffe ``sigmoid-fuse``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from weights.pretrained import read_layout_weights

# Caffe HED's BGR mean (pix2pix scripts/edges/batch_hed.py; sniklaus/pytorch-hed run.py), on 0-255.
HED_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
_STAGES = ("One", "Two", "Thr", "Fou", "Fiv")
# (input channels, output channels, convolutions) of the VGG16 blocks 1-5
_VGG = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


def _block(cin: int, cout: int, convs: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, 1, 1), nn.ReLU(inplace=False)]
    return nn.Sequential(*layers)


class HED(nn.Module):
    """HED edge network; ``forward(bgr01)`` -> fused edge probability in [0, 1], same H x W as the input."""

    def __init__(self):
        super().__init__()
        for i, (name, (cin, cout, convs)) in enumerate(zip(_STAGES, _VGG)):
            setattr(self, f"netVgg{name}", _block(cin, cout, convs, pool=i > 0))
            setattr(self, f"netScore{name}", nn.Conv2d(cout, 1, 1, 1, 0))
        self.netCombine = nn.Sequential(nn.Conv2d(5, 1, 1, 1, 0), nn.Sigmoid())
        mean = torch.tensor(HED_BGR_MEAN).view(1, 3, 1, 1)
        self.register_buffer("bgr_mean", mean, persistent=False)

    def side_outputs(self, bgr01: torch.Tensor) -> list[torch.Tensor]:
        """The five side-output logits, bilinearly upsampled to the input size (the port's alignment)."""
        x = bgr01 * 255.0 - self.bgr_mean.to(bgr01.dtype)
        size = x.shape[-2:]
        sides = []
        for name in _STAGES:
            x = getattr(self, f"netVgg{name}")(x)
            score = getattr(self, f"netScore{name}")(x)
            sides.append(F.interpolate(score, size=size, mode="bilinear", align_corners=False))
        return sides

    def forward(self, bgr01: torch.Tensor) -> torch.Tensor:
        return self.netCombine(torch.cat(self.side_outputs(bgr01), 1))


def hed_state_dict_keys() -> list[str]:
    """The key names a HED weights file must hold (sniklaus/pytorch-hed ``net*`` layout)."""
    return list(HED().state_dict().keys())


def load_hed(path: str | os.PathLike) -> HED:
    """A :class:`HED` in eval mode with the weights at ``path`` (sniklaus/pytorch-hed ``network-bsds500.pytorch``).

    Raises FileNotFoundError naming the path when it is missing, and ValueError naming the missing / unexpected
    keys when the file is not a HED state dict of that layout.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"HED weights file {str(file)!r} not found (sketch.hed_weights): expected the BSDS500 HED state dict in "
            "the sniklaus/pytorch-hed layout (network-bsds500.pytorch; keys netVggOne.0.weight ... netCombine.0.bias "
            "or the older moduleVggOne...), or set hed_weights: null for the classic detector"
        )

    def rename(key: str) -> str:  # older port revisions: moduleVggOne... -> netVggOne...
        return "net" + key[len("module") :] if key.startswith("module") else key

    return read_layout_weights(file, "HED weights file", HED, "sniklaus/pytorch-hed", rename)
