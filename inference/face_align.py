"""Editing faces in real photos: find the face, align it as the training data is aligned, edit that crop at the
network's size, and paste the generated pixels back through the inverse transform, only inside the user's mask.

1. **Detection**: MTCNN (Zhang et al., IEEE SPL 2016) with the weights the ``facenet-pytorch`` wheel ships
   (:mod:`weights.facenet_mtcnn`): an image pyramid through P-Net, non-maximum suppression, R-Net on 24 x 24 windows,
   O-Net on 48 x 48 windows giving the box and five landmarks.  The stages follow facenet-pytorch's
   ``models/utils/detect_face.py`` (MIT) and its defaults (thresholds 0.6 / 0.7 / 0.7, pyramid factor 0.709, smallest
   face 20 px), except that windows reaching outside the photo are zero-padded as in the original MTCNN code (the port
   clips them) and NMS is a small torch function: torchvision's compiled ``nms`` does not load with this project's
   CPU torch (see ``tv_compat.py``).  Large photos are searched at :data:`DETECT_SIDE` pixels on the long side.
2. **Alignment**: the CelebA-HQ crop of Karras et al. 2018 (progressive GAN, ICLR 2018, appendix C;
   ``tkarras/progressive_growing_of_gans`` ``dataset_tool.py`` ``create_celebahq``): from the eyes and mouth corners,
   an oriented square with the eyes level, side ``max(4 x eye-to-eye, 3.6 x eye-to-mouth)``, centred a tenth of the
   way from the eyes' midpoint to the mouth's.  SC-FEGAN trains on CelebA-HQ, so its inputs look like this crop.
3. **Editing** (:func:`edit_photo`): the photo, mask, sketch and colour strokes are warped into the crop with one
   similarity transform, the network edits the crop, the result is composited with the crop outside the network's
   mask, warped back with the inverse transform and written into the photo only where the user's mask is set:
   every other pixel is the input's, bit for bit.  Without a face whose crop holds the whole mask, the crop is an
   upright square around the mask with a margin instead (:func:`mask_crop_transform`).  A photo of the network's
   size that is already framed like CelebA-HQ (a dataset image) is edited in place, without resampling.

Coordinates are pixel indices (the centre of pixel ``(row i, column j)`` is ``x = j, y = i``), as cv2's warps use.
Everything here is a plain function of numpy arrays (and the networks); nothing reads files except the default
detector's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from archs.mtcnn import MTCNNNets

__all__ = [
    "ALIGNED_TOLERANCE",
    "DETECT_SIDE",
    "MASK_MARGIN",
    "MIN_FACE",
    "Face",
    "PhotoEdit",
    "celebahq_transform",
    "choose_face",
    "detect_faces",
    "edit_photo",
    "framing",
    "mask_crop_transform",
    "nms",
    "warp_to_crop",
]

# facenet-pytorch MTCNN() defaults (models/mtcnn.py): stage thresholds, pyramid factor, smallest face in pixels.
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
MIN_FACE = 20
# The pyramid runs on the photo downscaled to this long side: P-Net's cost grows with the pixel count, and a face
# below MIN_FACE x (long side / DETECT_SIDE) pixels is too small to edit at 512 x 512 anyway.
DETECT_SIDE = 1024
_FULL = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}  # full scale by dtype (float: 1)
# O-Net passes on eyes-level windows after detection (see _upright_landmarks).
UPRIGHT_PASSES = 2
# NMS overlaps of the original MTCNN / facenet-pytorch: within a pyramid scale, across scales, after R-Net, after O-Net.
_NMS_SCALE, _NMS_ALL, _NMS_R, _NMS_O = 0.5, 0.7, 0.7, 0.7
_BATCH = 512  # R-Net / O-Net windows per forward pass (bounds memory)
# A photo of the network's size whose face crop is this close to the photo itself is taken as already aligned (a
# dataset image) and edited in place, without resampling: scale ratio, roll in degrees, centre shift as a fraction of
# the crop side.  Measured on 60 CelebA-HQ images: scale 0.92-1.09, roll within 2.8 degrees, shift up to 7.5 of 512.
ALIGNED_TOLERANCE = (1.15, 4.0, 0.03)
# Fallback crop: margin around the mask's bounding box on each side, as a fraction of the box's side.
MASK_MARGIN = 0.25


@dataclass(frozen=True)
class Face:
    """One detected face in photo pixel-index coordinates.

    ``box``: (x1, y1, x2, y2); ``score``: O-Net's face probability; ``landmarks``: (5, 2) x, y of the image-left eye,
    image-right eye, nose tip, image-left and image-right mouth corners (MTCNN's order; "image-left" is the
    person's right)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@dataclass
class PhotoEdit:
    """What :func:`edit_photo` did.

    ``pixels``: the edited photo (layout and dtype of the input; 16-bit for float inputs); ``mode``: ``"face"``
    (aligned face crop) or ``"mask_crop"`` (fallback); ``face``: the face used (None in the fallback);
    ``crop_to_photo``: 2 x 3 affine map from crop pixel indices to photo pixel indices; ``scale``: photo pixels per
    crop pixel; ``note``: one line saying which crop was used and why."""

    pixels: np.ndarray
    mode: str
    face: Face | None
    crop_to_photo: np.ndarray
    scale: float
    note: str


# =====================================================================================================================
# Detection
# =====================================================================================================================
def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression on inclusive pixel boxes (x1, y1, x2, y2), as MTCNN's: indices kept, by
    descending score.  ``mode="min"`` divides the intersection by the smaller area (MTCNN's last stage)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        if mode == "min":
            ratio = inter / torch.minimum(areas[i], areas[rest])
        else:
            ratio = inter / (areas[i] + areas[rest] - inter)
        order = rest[ratio <= overlap]
    return torch.tensor(keep, dtype=torch.long)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square around their centres (side = the longer side), then truncated to whole pixels (MTCNN's
    ``rerec`` + ``fix``)."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    out[:, :4] = out[:, :4].trunc()
    return out


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Box regression of R-Net / O-Net (offsets as fractions of the inclusive width and height)."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def _to_net(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    """H x W x 3 (or N x H x W x 3) RGB 0-255 -> normalised NCHW tensor, as MTCNN was trained."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None] if t.ndim == 3 else t
    return ((t - 127.5) * 0.0078125).permute(0, 3, 1, 2).to(dev)


def _windows(img: np.ndarray, boxes: torch.Tensor, side: int, dev: torch.device) -> torch.Tensor:
    """The boxes' contents (MTCNN's 1-based inclusive boxes, whole pixels) resized to side x side by area averaging,
    zero outside the photo (as the original MTCNN's ``pad``), normalised for the networks."""
    H, W = img.shape[:2]
    out = np.empty((len(boxes), side, side, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].to(torch.int64).tolist()):
        x1, y1 = x1 - 1, y1 - 1  # to 0-based; x2, y2 become exclusive ends
        patch = np.zeros((max(y2 - y1, 1), max(x2 - x1, 1), 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return _to_net(out, dev)


def _batched(net, x: torch.Tensor):
    outs = [net(x[i : i + _BATCH]) for i in range(0, len(x), _BATCH)]
    return tuple(torch.cat(parts).cpu() for parts in zip(*outs))


def _proposals(nets: MTCNNNets, img: np.ndarray, min_face: float, threshold: float, dev) -> torch.Tensor:
    """Stage 1: P-Net over the pyramid -> square candidate boxes [N, 5] (x1, y1, x2, y2, score), 1-based."""
    h, w = img.shape[:2]
    m = 12.0 / min_face
    scales, side = [], min(h, w) * m
    s = m
    while side >= 12:
        scales.append(s)
        s *= PYRAMID_FACTOR
        side *= PYRAMID_FACTOR
    found = []
    for s in scales:
        x = cv2.resize(img, (int(w * s + 1), int(h * s + 1)), interpolation=cv2.INTER_AREA)
        reg, prob = nets.pnet(_to_net(x, dev))
        reg, p = reg.cpu(), prob[0, 1].cpu()
        hit = p >= threshold
        if not hit.any():
            continue
        yx = hit.nonzero().to(torch.float32)
        xy = yx.flip(1)
        q1 = ((2 * xy + 1) / s).floor()  # 12 x 12 window at stride 2, back in photo pixels (1-based)
        q2 = ((2 * xy + 12) / s).floor()
        b = torch.cat([q1, q2, p[hit][:, None], reg[0][:, hit].T], 1)
        found.append(b[nms(b[:, :4], b[:, 4], _NMS_SCALE)])
    if not found:
        return torch.zeros(0, 5)
    b = torch.cat(found)
    b = b[nms(b[:, :4], b[:, 4], _NMS_ALL)]
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    boxes = torch.stack(
        [b[:, 0] + b[:, 5] * bw, b[:, 1] + b[:, 6] * bh, b[:, 2] + b[:, 7] * bw, b[:, 3] + b[:, 8] * bh, b[:, 4]], 1
    )
    return _square(boxes)


@torch.no_grad()
def _detect(nets: MTCNNNets, img: np.ndarray, min_face: float, thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """MTCNN's three stages on ``img`` (H x W x 3 RGB float32 0-255) -> boxes [N, 5] and landmarks [N, 5, 2], 0-based."""
    dev = next(nets.parameters()).device
    boxes = _proposals(nets, img, min_face, thresholds[0], dev)
    if len(boxes):  # stage 2: R-Net
        reg, prob = _batched(nets.rnet, _windows(img, boxes, 24, dev))
        ok = prob[:, 1] > thresholds[1]
        boxes = torch.cat([boxes[ok, :4], prob[ok, 1:2]], 1)
        reg = reg[ok]
        keep = nms(boxes[:, :4], boxes[:, 4], _NMS_R)
        boxes = _square(_regress(boxes[keep], reg[keep]))
    if not len(boxes):
        return torch.zeros(0, 5), torch.zeros(0, 5, 2)
    reg, pts, prob = _batched(nets.onet, _windows(img, boxes, 48, dev))  # stage 3: O-Net
    ok = prob[:, 1] > thresholds[2]
    boxes = torch.cat([boxes[ok, :4], prob[ok, 1:2]], 1)
    reg, pts = reg[ok], pts[ok]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    lm = torch.stack([bw * pts[:, :5] + boxes[:, 0:1] - 1, bh * pts[:, 5:] + boxes[:, 1:2] - 1], 2)  # 0-based
    boxes = _regress(boxes, reg)
    keep = nms(boxes[:, :4], boxes[:, 4], _NMS_O, mode="min")
    boxes, lm = boxes[keep], lm[keep]
    boxes[:, :4] -= 1  # 1-based -> 0-based pixel indices
    return boxes, lm


@torch.no_grad()
def _upright_landmarks(nets: MTCNNNets, img: np.ndarray, box: np.ndarray, lm: np.ndarray, passes: int) -> np.ndarray:
    """O-Net again on a window turned so the eyes are level: MTCNN's landmarks drift on tilted faces (O-Net was trained
    on roughly upright windows).  The window is the detected box's square, rotated by the roll the current
    landmarks give; each pass re-estimates the roll.  On the test scenes (faces turned 15-30 degrees) two passes cut
    the eye error by about a quarter (benchmarks/face_align.py)."""
    side = float(max(box[2] - box[0], box[3] - box[1]))
    if side < 4:
        return lm
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    dev = next(nets.parameters()).device
    for _ in range(passes):
        d = lm[1] - lm[0]
        th = math.atan2(d[1], d[0])
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        corner = centre - rot @ np.array([side / 2.0, side / 2.0])
        step = side / 48.0
        win_to_img = np.hstack([rot * step, (corner + rot @ np.array([0.5 * step, 0.5 * step]))[:, None]])
        win = _warp(img, win_to_img, (48, 48), cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
        _, pts, _ = nets.onet(_to_net(win, dev))
        p = pts[0].cpu().double().numpy()
        lm = corner + (np.stack([p[:5], p[5:]], 1) * side) @ rot.T
    return lm


def _full_of(pixels: np.ndarray, full: float | None) -> float:
    if full is not None:
        return float(full)
    if pixels.dtype.kind == "f":
        return 1.0
    if pixels.dtype not in _FULL:
        raise ValueError(f"image must be uint8, uint16 or float, got {pixels.dtype}")
    return _FULL[pixels.dtype]


def _rgb01(pixels: np.ndarray, full: float) -> np.ndarray:
    """float32 H x W x 3 RGB in [0, 1] (gray replicated, alpha dropped)."""
    p = pixels.astype(np.float32) / np.float32(full)
    p = np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p[..., :3]
    return np.ascontiguousarray(p.clip(0.0, 1.0))


def detect_faces(
    pixels: np.ndarray,
    nets: MTCNNNets | None = None,
    min_face: float = MIN_FACE,
    thresholds: Sequence[float] = THRESHOLDS,
    detect_side: int | None = DETECT_SIDE,
    upright_passes: int = UPRIGHT_PASSES,
    full: float | None = None,
) -> list[Face]:
    """Faces in a photo, largest first.  ``pixels``: H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA), uint8 /
    uint16 / float, ``full`` its full scale (default from the dtype: 255, 65535, or 1 for float).

    ``nets``: MTCNN's networks (default: the shipped weights, :func:`weights.facenet_mtcnn.default_mtcnn`);
    ``min_face``: the smallest face side searched, in pixels of the searched image; ``detect_side``: the photo is
    searched downscaled (area) to this long side when larger (None: at full size); ``upright_passes``: O-Net passes
    on eyes-level windows refining the landmarks (0: MTCNN's landmarks as they come)."""
    if not (
        isinstance(pixels, np.ndarray)
        and pixels.size
        and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4)))
    ):
        raise ValueError(
            "detect_faces wants an H x W, H x W x 3 or H x W x 4 image array, got "
            f"{getattr(pixels, 'shape', type(pixels).__name__)}"
        )
    full = _full_of(pixels, full)
    if nets is None:
        from weights.facenet_mtcnn import default_mtcnn

        nets = default_mtcnn()
    h, w = pixels.shape[:2]
    small = pixels.astype(np.float32) if pixels.dtype == np.float64 else pixels  # cv2 resizes float32, not 64
    if detect_side and max(h, w) > detect_side:
        ratio = max(h, w) / float(detect_side)
        small = cv2.resize(small, (max(round(w / ratio), 1), max(round(h / ratio), 1)), interpolation=cv2.INTER_AREA)
    img = _rgb01(small, full) * 255.0
    boxes, lm = _detect(nets, img, float(min_face), tuple(thresholds))
    boxes, lm = boxes.cpu().double().numpy(), lm.cpu().double().numpy()
    if upright_passes:
        lm = (
            np.stack([_upright_landmarks(nets, img, b, p, int(upright_passes)) for b, p in zip(boxes, lm)])
            if len(lm)
            else lm
        )
    # Back to the photo's pixel indices (pixel centres scale about the image's corner at -0.5).
    rx, ry = w / small.shape[1], h / small.shape[0]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] + 0.5) * rx - 0.5
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] + 0.5) * ry - 0.5
    lm[..., 0] = (lm[..., 0] + 0.5) * rx - 0.5
    lm[..., 1] = (lm[..., 1] + 0.5) * ry - 0.5
    faces = [Face(b[:4].copy(), float(b[4]), p.copy()) for b, p in zip(boxes, lm)]
    return sorted(faces, key=lambda f: (-f.area, -f.score))


# =====================================================================================================================
# Alignment
# =====================================================================================================================
def _rot90(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


def celebahq_transform(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2 x 3 affine map from crop pixel indices to photo pixel indices: the CelebA-HQ crop of a face with these five
    landmarks (:class:`Face` order), at ``size`` (H, W).

    Karras et al. 2018, ``dataset_tool.py`` ``create_celebahq``::

        eye_to_eye = right_eye - left_eye;  eye_to_mouth = mouth_avg - eye_avg
        x = eye_to_eye - rot90(eye_to_mouth);  x /= |x|;  x *= max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8)
        y = rot90(x);  c = eye_avg + eye_to_mouth * 0.1;  quad = c -x -y ... c +x +y   (the square's corners)

    ``x`` and ``y`` are half the square's sides (horizontal and down in the crop).  A non-square ``size`` keeps the
    square on the shorter side and extends the view on the longer one."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be 5 finite (x, y) points, got shape {lm.shape}")
    eye_avg = (lm[0] + lm[1]) * 0.5
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = np.hypot(*x)
    if norm < 1e-6:
        raise ValueError("degenerate landmarks: the eyes and mouth give no orientation")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    H, W = size
    s = float(min(H, W))
    ax, ay = 2.0 * x / s, 2.0 * y / s  # photo pixels per crop pixel along the crop's x and y
    # Crop pixel centre (u, v) sits at (u + 0.5 - W / 2, v + 0.5 - H / 2) from the square's centre c.
    t = c + (0.5 - W / 2.0) * ax + (0.5 - H / 2.0) * ay
    return np.array([[ax[0], ay[0], t[0]], [ax[1], ay[1], t[1]]])


def _centre_on_photo(c: float, extent: float, n: int) -> float:
    """The crop's centre along one axis: ``c`` moved just enough for a crop of ``extent`` pixels to stay on the photo
    (``n`` pixels; real context rather than mirrored borders), or the photo's centre when the crop is larger."""
    lo, hi = extent / 2.0 - 0.5, n - 0.5 - extent / 2.0
    return (n - 1) / 2.0 if lo > hi else min(max(c, lo), hi)


def mask_crop_transform(mask: np.ndarray, size: tuple[int, int], margin: float = MASK_MARGIN) -> np.ndarray:
    """2 x 3 map from crop to photo pixel indices for the fallback: an upright crop of ``size`` around the mask's
    bounding box plus ``margin`` of its side on each side, kept on the photo where it fits.

    Scale: never larger than needed to see the whole photo, and the photo is never enlarged unless all of it fits in
    the crop (then it is scaled to just fit, as a plain resize would).  At 1:1 the crop is placed on whole pixels, so
    pixels are copied, not resampled: a photo of the network's size is edited as it is."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("the mask is empty: nothing to edit")
    H, W = size
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    need = max((x1 - x0 + 1) * (1 + 2 * margin) / W, (y1 - y0 + 1) * (1 + 2 * margin) / H)
    whole = max(h / H, w / W)  # the scale at which the whole photo fits in the crop
    p = max(min(need, whole), min(1.0, whole))
    cx = _centre_on_photo((x0 + x1) / 2.0, p * W, w)
    cy = _centre_on_photo((y0 + y1) / 2.0, p * H, h)
    tx, ty = cx - p * (W - 1) / 2.0, cy - p * (H - 1) / 2.0
    if p == 1.0:
        tx, ty = float(round(tx)), float(round(ty))
    return np.array([[p, 0.0, tx], [0.0, p, ty]])


def framing(crop_to_photo: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float]:
    """(scale, roll in degrees, centre shift in crop pixels) of a crop: how far it is from the photo itself."""
    m = np.asarray(crop_to_photo, dtype=np.float64)
    H, W = size
    centre = np.array([(W - 1) / 2.0, (H - 1) / 2.0])
    shift = float(np.linalg.norm(m[:, :2] @ centre + m[:, 2] - centre))
    return _scale_of(m), math.degrees(math.atan2(m[1, 0], m[0, 0])), shift


def _to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])


def _scale_of(m: np.ndarray) -> float:
    """Source pixels per destination pixel of a similarity map (sqrt of |det|)."""
    return float(math.sqrt(abs(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


def _inside(points_xy: np.ndarray, crop_to_photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Which photo points fall inside the crop (at least half a pixel from its edges)."""
    inv = cv2.invertAffineTransform(crop_to_photo)
    uv = points_xy @ inv[:, :2].T + inv[:, 2]
    H, W = size
    return (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)


def choose_face(faces: Sequence[Face], mask: np.ndarray | None, size: tuple[int, int]) -> Face | None:
    """The face to edit: of the faces whose aligned crop holds every masked pixel, the largest (then the most
    confident); without a mask simply the largest.  None when no face holds the mask."""
    ranked = sorted(faces, key=lambda f: (-f.area, -f.score))
    if mask is None:
        return ranked[0] if ranked else None
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    for face in ranked:
        if _inside(pts, celebahq_transform(face.landmarks, size), size).all():
            return face
    return None


# =====================================================================================================================
# Warping
# =====================================================================================================================
def _warp(
    src: np.ndarray,
    dst_to_src: np.ndarray,
    out_hw: tuple[int, int],
    interp: int,
    border: int,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """``src`` sampled at ``dst_to_src`` (2 x 3, destination pixel -> source pixel) over an ``out_hw`` grid.

    Only the source region the grid covers is touched, and ``prepare`` (e.g. a conversion to float) is applied to
    that region alone, so a large photo is never converted whole.  When the map shrinks by 2x or more, that region is first
    reduced by area averaging (as ``create_celebahq`` shrinks before its transform), so thin strokes and fine texture
    are averaged rather than aliased."""
    H, W = out_hw
    m = np.asarray(dst_to_src, dtype=np.float64)
    corners = np.array([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]], np.float64) @ m[:, :2].T + m[:, 2]
    scale = _scale_of(m)
    pad = 4 + 2 * math.ceil(scale)  # the cubic kernel's reach, in source pixels
    sh, sw = src.shape[:2]
    xa = max(math.floor(corners[:, 0].min()) - pad, 0)
    ya = max(math.floor(corners[:, 1].min()) - pad, 0)
    xb = min(math.ceil(corners[:, 0].max()) + pad + 1, sw)
    yb = min(math.ceil(corners[:, 1].max()) + pad + 1, sh)
    if xb <= xa or yb <= ya:  # the grid lies wholly outside: borders come from the whole source
        xa, ya, xb, yb = 0, 0, sw, sh
    sub = src[ya:yb, xa:xb]
    if prepare is not None:
        sub = prepare(sub)
    m = np.array([[1, 0, -xa], [0, 1, -ya], [0, 0, 1]], np.float64) @ _to3(m)
    f = int(scale) if scale >= 2.0 else 1
    if f > 1:
        nw, nh = max(math.ceil(sub.shape[1] / f), 1), max(math.ceil(sub.shape[0] / f), 1)
        rx, ry = sub.shape[1] / nw, sub.shape[0] / nh
        sub = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
        m = np.array([[1 / rx, 0, 0.5 / rx - 0.5], [0, 1 / ry, 0.5 / ry - 0.5], [0, 0, 1]]) @ m
    out = cv2.warpAffine(
        np.ascontiguousarray(sub), m[:2], (W, H), flags=interp | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0
    )
    return out


def _warp_binary(
    b: np.ndarray, dst_to_src: np.ndarray, out_hw, any_coverage: bool, border: int = cv2.BORDER_CONSTANT
) -> np.ndarray:
    """A boolean layer warped: area + bilinear coverage, then ``> 0`` (``any_coverage``: the region is never shrunk,
    thin strokes survive downscaling) or ``>= 0.5`` (crisp lines when enlarging)."""
    cov = _warp(b, dst_to_src, out_hw, cv2.INTER_LINEAR, border, prepare=lambda a: a.astype(np.float32))
    return cov > 0 if any_coverage else cov >= 0.5


def warp_to_crop(
    pixels: np.ndarray, crop_to_photo: np.ndarray, size: tuple[int, int], full: float | None = None
) -> np.ndarray:
    """The crop (H x W x 3 float32 RGB in [0, 1]) of the photo that ``crop_to_photo`` describes; outside the photo the
    image is mirrored (``create_celebahq`` pads by reflection too).  ``pixels``: gray, RGB or RGBA (alpha dropped),
    uint8 / uint16 / float with ``full`` its full scale (default from the dtype; 1 for float)."""
    full = _full_of(pixels, full)
    return _warp(
        pixels, crop_to_photo, size, cv2.INTER_CUBIC, cv2.BORDER_REFLECT_101, prepare=lambda a: _rgb01(a, full)
    ).clip(0.0, 1.0)


# =====================================================================================================================
# Editing
# =====================================================================================================================
#: ``run_network(image, mask, sketch, color) -> image``, all at the crop size (H, W): image H x W x 3 float32 RGB in
#: [0, 1]; mask bool H x W (True = regenerate); sketch bool H x W or None; color H x W x 3 float32 RGB in [0, 1],
#: black = no stroke, or None.  Returns the network's H x W x 3 RGB in [0, 1] (e.g. SC-FEGAN's G(x) mapped from
#: [-1, 1]); it is composited with the crop outside ``mask`` here.
RunNetwork = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        hw = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width) of the network's input, got {size!r}") from None
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f"size must be (height, width) with positive sides, got {size!r}")
    return hw


def _check_layer(name: str, a, hw: tuple[int, int], color: bool = False) -> np.ndarray | None:
    if a is None:
        return None
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    want = (*hw, 3) if color else hw
    if a.shape != want:
        got = "x".join(str(s) for s in (a.shape[1], a.shape[0], *a.shape[2:])) if a.ndim >= 2 else str(a.shape)
        raise ValueError(
            f"{name} is {got} but the image is {hw[1]}x{hw[0]} (width x height)"
            f"{'; colour strokes must be H x W x 3 RGB' if color else ''}: it must be drawn on the image, "
            "at its size"
        )
    if color:
        a = np.asarray(a, dtype=np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} must hold RGB values in [0, 1] (black = no stroke)")
        return a
    if a.dtype != bool:
        raise ValueError(
            f"{name} must be a boolean array (True = {'regenerate' if name == 'mask' else 'stroke'}), got {a.dtype}"
        )
    return a


def _check_pixels(pixels, full: float | None) -> tuple[np.ndarray, float]:
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(pixels).__name__}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))) or not pixels.size:
        raise ValueError(f"image must be H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA), got shape {pixels.shape}")
    if pixels.dtype.kind == "f":
        if not np.isfinite(pixels).all():
            raise ValueError("image holds non-finite values")
        # PNG has no float: edit the 16-bit version, as predict.py does.
        scale = 1.0 if full is None else float(full)
        return np.round(np.clip(pixels / scale, 0.0, 1.0) * 65535.0).astype(np.uint16), 65535.0
    if pixels.dtype not in _FULL:
        raise ValueError(f"image must be uint8, uint16 or float, got {pixels.dtype}")
    return pixels, float(full) if full is not None else _FULL[pixels.dtype]


def edit_photo(
    pixels: np.ndarray,
    mask: np.ndarray,
    sketch: np.ndarray | None,
    color: np.ndarray | None,
    run_network: RunNetwork,
    size,
    *,
    full: float | None = None,
    faces: Sequence[Face] | None = None,
    nets: MTCNNNets | None = None,
    align: bool = True,
    margin: float = MASK_MARGIN,
) -> PhotoEdit:
    """Edit a photo of any size in the ``mask`` region with a network that works at ``size`` (H, W).

    ``pixels``: H x W, H x W x 3 or H x W x 4 (RGBA; alpha is kept), uint8 or uint16 (``full`` = 255 / 65535 from the
    dtype) or float in [0, ``full`` = 1] (edited as 16-bit, returned as uint16).  ``mask``/``sketch``: bool H x W;
    ``color``: H x W x 3 RGB in [0, 1], black = no stroke.  ``faces``: detections to choose from (default: MTCNN on
    the photo with ``nets``); ``align=False`` skips detection and edits the crop around the mask.

    The face whose CelebA-HQ crop holds the whole mask is edited in that crop (in place when the photo already is
    that crop, within :data:`ALIGNED_TOLERANCE`); otherwise (no face, or the mask reaches outside every face's crop)
    an upright crop around the mask with ``margin`` is.  Returns a
    :class:`PhotoEdit` whose pixels equal the input, bit for bit, wherever ``mask`` is False."""
    pixels, full = _check_pixels(pixels, full)
    hw = pixels.shape[:2]
    mask = _check_layer("mask", mask, hw)
    sketch = _check_layer("sketch", sketch, hw)
    color = _check_layer("color", color, hw, color=True)
    size = _check_size(size)
    if not callable(run_network):
        raise TypeError(f"run_network must be callable, got {type(run_network).__name__}")
    if not mask.any():
        raise ValueError("the mask is empty: nothing to edit (mark the region to regenerate first)")
    if not 0 <= margin <= 4:
        raise ValueError(f"margin must be between 0 and 4 (a fraction of the mask's box), got {margin!r}")
    face = None
    if align:
        if faces is None:
            faces = detect_faces(pixels, nets, full=full)
        face = choose_face(faces, mask, size)
    if face is not None:
        crop_to_photo = celebahq_transform(face.landmarks, size)
        mode = "face"
        note = f"aligned face crop (CelebA-HQ), face score {face.score:.2f}"
        scale, roll, shift = framing(crop_to_photo, size)
        max_scale, max_roll, max_shift = ALIGNED_TOLERANCE
        if (
            hw == size
            and 1 / max_scale <= scale <= max_scale
            and abs(roll) <= max_roll
            and shift <= max_shift * min(size)
        ):
            crop_to_photo = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            note = (
                f"the photo is already an aligned face at the network's size: edited in place (face score "
                f"{face.score:.2f})"
            )
    else:
        crop_to_photo = mask_crop_transform(mask, size, margin)
        mode = "mask_crop"
        why = (
            "alignment off"
            if not align
            else "no face found"
            if not faces
            else "the mask reaches outside the aligned face crop"
        )
        note = f"crop around the mask ({why})"
    scale = _scale_of(crop_to_photo)
    shrinks = scale > 1.0  # photo pixels per crop pixel

    img_c = warp_to_crop(pixels, crop_to_photo, size, full)
    # The mask continues past the photo's edge (replicated): where it touches the edge, the crop beyond it is
    # regenerated too, so the edge pixels come back wholly generated, not blended with the mirrored photo.
    mask_c = _warp_binary(mask, crop_to_photo, size, any_coverage=True, border=cv2.BORDER_REPLICATE)
    sketch_c = _warp_binary(sketch, crop_to_photo, size, any_coverage=shrinks) if sketch is not None else None
    color_c = None
    if color is not None:
        # Stroke colours averaged over their coverage only (premultiplied), so black "no stroke" never darkens them.
        def premultiplied(c: np.ndarray) -> np.ndarray:  # RGB x coverage, coverage
            cov = (c.max(axis=2) > 0).astype(np.float32)
            return np.dstack([c * cov[..., None], cov])

        acc = _warp(color, crop_to_photo, size, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT, prepare=premultiplied)
        hit = acc[..., 3] > 0 if shrinks else acc[..., 3] >= 0.5
        color_c = np.where(hit[..., None], acc[..., :3] / np.maximum(acc[..., 3:], 1e-6), 0.0).astype(np.float32)
        color_c = color_c.clip(0.0, 1.0)
    if sketch_c is not None:
        sketch_c &= mask_c
    if color_c is not None:
        color_c = color_c * mask_c[..., None]

    out = run_network(img_c.astype(np.float32), mask_c, sketch_c, color_c)
    out = np.asarray(out)
    if out.shape != (*size, 3):
        raise ValueError(f"run_network returned shape {out.shape}, expected {(*size, 3)} (H x W x 3 at the crop size)")
    if not np.isfinite(out).all():
        raise ValueError("run_network returned non-finite values")
    gen = np.where(mask_c[..., None], out.astype(np.float32).clip(0.0, 1.0), img_c)

    # Back into the photo, over the mask's bounding box only.
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    photo_to_crop = cv2.invertAffineTransform(crop_to_photo)
    local = _to3(photo_to_crop) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
    back = _warp(gen, local[:2], (y1 - y0 + 1, x1 - x0 + 1), cv2.INTER_CUBIC, cv2.BORDER_REPLICATE).clip(0.0, 1.0)

    out_px = pixels.copy()
    region = out_px[y0 : y1 + 1, x0 : x1 + 1]
    m = mask[y0 : y1 + 1, x0 : x1 + 1]
    if pixels.ndim == 2:
        luma = back[..., 0] * 0.299 + back[..., 1] * 0.587 + back[..., 2] * 0.114  # BT.601, as predict.py
        region[m] = _quantize(luma, full, pixels.dtype)[m]
    else:
        q = _quantize(back, full, pixels.dtype)
        region[..., :3][m] = q[m]  # alpha (if any) unchanged
    return PhotoEdit(out_px, mode, face, crop_to_photo, scale, note)


def _quantize(x01: np.ndarray, full: float, dtype) -> np.ndarray:
    return np.round(np.clip(x01, 0.0, 1.0) * full).astype(dtype)
