"""BiSeNet face parser in the layout of zllrunning/face-parsing.PyTorch (``model.py``/``resnet.py``), the
CelebAMask-HQ model most face-editing code uses (its ``79999_iter.pth`` state dict loads as is).

ResNet-18 context path (``cp.resnet``), attention refinement at 1/16 and 1/32 (``cp.arm16``/``cp.arm32``), the
1/8 ResNet feature in place of the spatial path, feature fusion (``ffm``) and three heads (``conv_out``,
``conv_out16``, ``conv_out32``; only ``conv_out`` is used at inference).  Input: RGB in [0, 1] normalised with the
ImageNet mean / std, 512 x 512 (what the model was trained on).  Output classes in the port's order
(:data:`BISENET_CLASSES`, background 0, which differs from the CelebAMask-HQ order used by the label maps here;
:data:`BISENET_TO_CELEBAMASK` maps them).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from weights.pretrained import read_layout_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # zllrunning test.py transforms.Normalize
IMAGENET_STD = (0.229, 0.224, 0.225)
# zllrunning prepropess_data.py: atts = [...] numbered from 1, background 0
BISENET_CLASSES = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)
# CelebAMask-HQ order of the label maps in this project (celebamask_mini README, CelebAMask-HQ g_mask.py label_list)
CELEBAMASK_CLASSES = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)
BISENET_TO_CELEBAMASK = tuple(CELEBAMASK_CLASSES.index(name) for name in BISENET_CLASSES)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class Resnet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x):
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[-2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[-2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[-2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp, fcp):
        feat = self.convblk(torch.cat([fsp, fcp], 1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """``forward(x)`` -> (logits, logits16, logits32) at the input size (bilinear, align_corners=True, as the port)."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.n_classes = int(n_classes)
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x):
        size = x.shape[-2:]
        feat_res8, feat_cp8, feat_cp16 = self.cp(x)
        fuse = self.ffm(feat_res8, feat_cp8)
        outs = (self.conv_out(fuse), self.conv_out16(feat_cp8), self.conv_out32(feat_cp16))
        return tuple(F.interpolate(o, size, mode="bilinear", align_corners=True) for o in outs)

    @torch.no_grad()
    def parse(self, rgb01: torch.Tensor, size: int | None = 512) -> torch.Tensor:
        """Labels long [B, 1, H, W] (port order) of RGB images in [0, 1]; run at ``size`` x ``size`` (bilinear
        resize as the port's test.py), labels resized back by nearest neighbour."""
        height, width = rgb01.shape[-2:]
        x = rgb01
        if size is not None and (height, width) != (size, size):
            x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        labels = self((x - mean) / std)[0].argmax(1, keepdim=True)
        if labels.shape[-2:] != (height, width):
            labels = F.interpolate(labels.float(), (height, width), mode="nearest").long()
        return labels


def load_bisenet(path: str | os.PathLike, n_classes: int = 19) -> BiSeNet:
    """A :class:`BiSeNet` in eval mode with the weights at ``path`` (zllrunning ``79999_iter.pth`` layout).

    Raises FileNotFoundError naming the path when it is missing, ValueError naming missing / unexpected keys or
    shape mismatches when the file is not a state dict of that layout.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"face-parsing weights file {str(file)!r} not found (color.parsing_weights): expected the CelebAMask-HQ "
            "BiSeNet state dict of zllrunning/face-parsing.PyTorch (79999_iter.pth; keys cp.resnet.conv1.weight ... "
            "conv_out.conv_out.weight), or set parsing_weights: null for the region-merging fallback"
        )
    return read_layout_weights(file, "face-parsing weights file", lambda: BiSeNet(n_classes), "zllrunning BiSeNet")
