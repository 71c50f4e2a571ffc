"""Test scenes for face alignment: CelebAMask-HQ faces rotated, scaled and placed into larger photos, with the
transform known, so that landmarks and masks can be followed into the photo (tests/test_face_align.py,
benchmarks/face_align.py)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

L_EYE, R_EYE, MOUTH, U_LIP, L_LIP = 4, 5, 10, 11, 12  # CelebAMask-HQ labels ("l_" is the person's left = image right)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_labels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "P":
            raise ValueError(f"{path}: expected a palette label map, got mode {im.mode}")
        return np.asarray(im)


def labelled_faces(root: Path, n: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB uint8, labels) of the first ``n`` training faces (sorted by name) whose both eyes are labelled."""
    out = []
    for img in sorted((root / "train" / "images").glob("*.jpg")):
        lab = root / "train" / "masks" / (img.stem + ".png")
        if not lab.is_file():
            continue
        labels = read_labels(lab)
        if eye_centres(labels) is None:
            continue
        out.append((img.stem, read_rgb(img), labels))
        if n is not None and len(out) >= n:
            break
    return out


def eye_centres(labels: np.ndarray, min_pixels: int = 20) -> np.ndarray | None:
    """(2, 2) x, y centroids of the two eye labels, image-left eye first (MTCNN's order); None when an eye is hidden
    (closed, glasses).  Sorted by x rather than by label: the faces are upright, and a few label maps swap l_eye and
    r_eye."""
    pts = []
    for lab in (R_EYE, L_EYE):
        ys, xs = np.nonzero(labels == lab)
        if len(xs) < min_pixels:
            return None
        pts.append((xs.mean(), ys.mean()))
    return np.array(sorted(pts))


def background(hw: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random colour field with fine noise (no faces in it), uint8 RGB."""
    rng = np.random.default_rng(seed)
    h, w = hw
    low = rng.uniform(40, 215, (6, 8, 3)).astype(np.float32)
    field = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    field += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(field, 0, 255).astype(np.uint8)


def face_to_photo(face_hw: tuple[int, int], angle_deg: float, scale: float, centre_xy) -> np.ndarray:
    """2 x 3 map from face pixel indices to photo pixel indices: rotate by ``angle_deg`` (counter-clockwise as
    seen), scale, and put the face's centre at ``centre_xy``."""
    h, w = face_hw
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    return np.hstack([rot, (np.asarray(centre_xy, np.float64) - rot @ c)[:, None]])


def place(face: np.ndarray, m: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """``face`` warped by ``m`` (face -> photo) onto a copy of ``photo``."""
    out = photo.copy()
    cv2.warpAffine(
        face, m, (photo.shape[1], photo.shape[0]), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )
    return out


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


#: (angle in degrees, scale, centre as fractions of the photo) of the scenes; angles 15-30 both ways.
SCENES = [
    (20.0, 1.3, (0.35, 0.45)),
    (-25.0, 0.8, (0.7, 0.55)),
    (15.0, 1.7, (0.5, 0.5)),
    (-30.0, 1.0, (0.3, 0.6)),
    (28.0, 0.6, (0.75, 0.3)),
    (-18.0, 2.2, (0.5, 0.5)),
]
PHOTO_HW = (1000, 1400)


def scene(face: np.ndarray, k: int, photo_hw=PHOTO_HW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``k`` (cycling through :data:`SCENES`): (photo uint8 RGB, face -> photo map)."""
    angle, scale, (fx, fy) = SCENES[k % len(SCENES)]
    h, w = photo_hw
    m = face_to_photo(face.shape[:2], angle, scale, (fx * w, fy * h))
    return place(face, m, background(photo_hw, seed + k)), m
