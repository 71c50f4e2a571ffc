"""MTCNN's three cascaded networks (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016): P-Net proposes face windows on an image pyramid, R-Net refines them at 24 x 24,
O-Net gives the final box and the five landmarks at 48 x 48.

Layers and key names follow the PyTorch port of the released model in ``facenet-pytorch`` (timesler/facenet-pytorch,
MIT, ``models/mtcnn.py``), whose wheel ships the weights as ``facenet_pytorch/data/{pnet,rnet,onet}.pt``; those state
dicts load here strictly (``weights/facenet_mtcnn.py``).  The port's weights come from TensorFlow, so the dense layers
read the feature map transposed to (W, H, C) order before flattening, as the port does.

Inputs: RGB in 0-255, normalised ``(x - 127.5) / 128``.  Outputs, per window: the face probability (softmax over
[not face, face]), the box regression (x1, y1, x2, y2 offsets as fractions of the window) and, from O-Net, the landmarks
(five x then five y, fractions of the window; image-left eye, image-right eye, nose, image-left and image-right mouth
corners).  The detection pipeline around them is ``inference/face_align.py``.
"""

from __future__ import annotations

import torch
from torch import nn


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's flatten order (W, H, C), which the ported dense weights expect.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12 x 12 window per output cell (stride 2).

    ``forward(x)`` -> (box regression [B, 4, h, w], face probability [B, 2, h, w])."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24 x 24 windows.  ``forward(x)`` -> (box regression [B, 4], face probability [B, 2])."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48 x 48 windows.

    ``forward(x)`` -> (box regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5), face probability [B, 2])."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


class MTCNNNets(nn.Module):
    """The three networks together (one object to load, move to a device and pass around)."""

    def __init__(self, pnet: PNet | None = None, rnet: RNet | None = None, onet: ONet | None = None):
        super().__init__()
        self.pnet = pnet if pnet is not None else PNet()
        self.rnet = rnet if rnet is not None else RNet()
        self.onet = onet if onet is not None else ONet()
