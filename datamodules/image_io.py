"""Image discovery and decoding shared by the data modules.

Policy for awkward files (documented in the README, "Data"):

* grayscale, palette, RGBA, 16-bit: decoded to float32 RGB in [0, 1]; gray is replicated to
  three channels, alpha is dropped, 16-bit is divided by 65535 (no 8-bit round trip);
* unreadable or corrupt files and files smaller than the training crop: skipped with a warning
  naming the file when the folder is scanned (``on_bad_image: warn``), or a ``BadImageError``
  naming the file (``on_bad_image: error``);
* an empty or missing folder: ``FileNotFoundError`` naming the folder and the extensions looked for.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

cv2.setNumThreads(0)  # the DataLoader workers are the parallelism; OpenCV threads only oversubscribe


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """All image files under ``root`` (any depth when ``recursive``), sorted for reproducibility."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"image folder {str(root)!r} holds no images (looked for {', '.join(IMG_EXTENSIONS)}"
            f"{' at any depth' if recursive else ''})"
        )
    return files


# PIL's own limit: Image.open raises DecompressionBombError above 2 x PIL.Image.MAX_IMAGE_PIXELS (~179 Mpx); it
# becomes a BadImageError naming the file, so `on_bad_image: warn` skips such a file and `error` names it.
_HEADER_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as err:
        raise BadImageError(f"{path}: refused, decompression bomb ({err})") from err
    except _HEADER_ERRORS as err:
        raise BadImageError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    return h, w


def decode_image(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode ``path`` as stored (``cv2.IMREAD_UNCHANGED``: BGR/BGRA/gray, 8 or 16 bits) and return the
    array with its full-scale value (255, 65535, or 1 for float files).  Shared by training and predict."""
    path = str(path)
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None or data.size == 0:
        raise BadImageError(f"{path}: file is missing or empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadImageError(f"{path}: cannot be decoded (corrupt or not an image)")
    if img.dtype == np.uint8:
        return img, 255.0
    if img.dtype == np.uint16:
        return img, 65535.0
    if img.dtype in (np.float32, np.float64):
        return img.astype(np.float32), 1.0
    raise BadImageError(f"{path}: unsupported pixel type {img.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to float32 RGB, HxWx3, values in [0, 1]."""
    img, scale = decode_image(path)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)  # alpha dropped
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    else:
        raise BadImageError(f"{path}: unsupported channel count {img.shape[2]}")
    return (img.astype(np.float32) / scale).clip(0.0, 1.0)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Decode a label map (palette or 8-bit gray PNG) to uint8 HxW without colour conversion."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                im = im.convert("L")
            return np.array(im, dtype=np.uint8)
    except _HEADER_ERRORS as err:
        raise BadImageError(f"{path}: not a readable label map ({type(err).__name__}: {err})") from err


def filter_images(files: list[Path], min_size: int = 0, on_bad_image: str = "warn") -> list[Path]:
    """Drop unreadable files and files smaller than ``min_size`` on either side.

    Reads only headers, so it is cheap even for CelebA-HQ's 30k files.
    """
    if on_bad_image not in ("warn", "error"):
        raise ValueError(f"on_bad_image must be 'warn' or 'error', got {on_bad_image!r}")
    kept = []
    for path in files:
        try:
            h, w = image_size(path)
            if min(h, w) < min_size:
                raise BadImageError(f"{path}: {w}x{h} is smaller than the {min_size}x{min_size} crop")
        except BadImageError as err:
            if on_bad_image == "error":
                raise
            warnings.warn(f"skipping {err}", stacklevel=2)
            continue
        kept.append(path)
    if not kept:
        raise FileNotFoundError(
            f"none of the {len(files)} images (first: {files[0] if files else '-'}) is usable "
            f"(all unreadable or smaller than {min_size} px)"
        )
    return kept
