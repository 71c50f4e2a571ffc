"""Image files for inference: reading (alpha and 16 bits kept, unlike datamodules.image_io.read_image, with the
pixel limit checked from the header before decoding), masks and colour maps, and PNG writing."""

import os
import threading
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from datamodules.image_io import BadImageError, decode_image

DEFAULT_MAX_PIXELS = 100_000_000  # 10000 x 10000; conf/predict.yaml max_pixels
_PIL_LIMIT_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------------
# Image reading and writing (alpha and 16 bits kept, unlike datamodules.image_io.read_image)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Image:
    """A decoded image: ``pixels`` HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA) in the file's dtype.

    ``full`` is the value of full scale (255, 65535, or 1.0 for float files).
    """

    pixels: np.ndarray
    full: float
    path: str

    @property
    def gray(self) -> bool:
        return self.pixels.ndim == 2

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]

    def rgb01(self) -> np.ndarray:
        """float32 HxWx3 in [0, 1] (gray replicated, alpha dropped)."""
        p = self.pixels.astype(np.float32) / self.full
        p = np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p[..., :3]
        return np.ascontiguousarray(p.clip(0.0, 1.0))

    def alpha01(self) -> np.ndarray | None:
        if self.pixels.ndim == 3 and self.pixels.shape[2] == 4:
            return (self.pixels[..., 3].astype(np.float32) / self.full).clip(0.0, 1.0)
        return None


def header_pixels(path: str | os.PathLike, what: str = "input image") -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels (PIL reads headers lazily)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    def size() -> tuple[int, int]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as im:
                return im.size

    try:
        try:
            return size()
        except PILImage.DecompressionBombError:
            # Beyond PIL's own bound (2 x MAX_IMAGE_PIXELS): lift it for this header read only, to report the size.
            with _PIL_LIMIT_LOCK:
                limit, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
                try:
                    return size()
                finally:
                    PILImage.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        tiff = _tiff_header_size(path)  # PIL does not read multi-channel float TIFFs (the README lists them)
        if tiff is not None:
            return tiff
        raise ValueError(f"{what} {str(path)!r}: not a readable image ({err})") from err


def _tiff_header_size(path) -> tuple[int, int] | None:
    """(width, height) from a TIFF's first IFD (ImageWidth 256, ImageLength 257), or None when not a TIFF."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] not in (b"II*\0", b"MM\0*"):
                return None
            end = "<" if head[:2] == b"II" else ">"
            f.seek(struct.unpack(end + "I", head[4:8])[0])
            (count,) = struct.unpack(end + "H", f.read(2))
            tags = {}
            for _ in range(min(count, 4096)):
                tag, typ, _n, raw = struct.unpack(end + "HHI4s", f.read(12))
                if tag in (256, 257):
                    tags[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), raw[:2] if typ == 3 else raw)[0]
            return (int(tags[256]), int(tags[257])) if 256 in tags and 257 in tags else None
    except (OSError, struct.error):
        return None


def check_pixels(path: str | os.PathLike, max_pixels: int | None, what: str = "input image") -> None:
    """Refuse, before decoding, an image whose header says more than ``max_pixels`` pixels (decompression bombs,
    and images that would not fit in memory once decoded)."""
    if not max_pixels:
        return
    w, h = header_pixels(path, what)
    if w * h > int(max_pixels):
        raise ValueError(
            f"{what} {str(path)!r} is {w}x{h} = {w * h:,} pixels, more than max_pixels={int(max_pixels):,} "
            "(checked from the header, nothing decoded); raise max_pixels=... if the image is meant "
            "to be this large, or split it"
        )


def read_image(
    path: str | os.PathLike, what: str = "input image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image:
    """Decode with ``cv2.IMREAD_UNCHANGED`` (as datamodules.image_io) keeping alpha, gray and 16 bits.  The header
    is checked against ``max_pixels`` first (None: no limit)."""
    path = str(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory, not an image file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    check_pixels(path, max_pixels, what)
    try:
        img, full = decode_image(path)
    except BadImageError as err:
        raise ValueError(f"{what} {err}") from err
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    elif img.ndim != 2:
        raise ValueError(f"{what} {path!r}: unsupported channel count {img.shape[2]}")
    return Image(np.ascontiguousarray(img), full, path)


def to_gray01(rgb01: np.ndarray) -> np.ndarray:
    """BT.601 luma (cv2 RGB2GRAY weights) of HxWx3 float."""
    return rgb01[..., 0] * 0.299 + rgb01[..., 1] * 0.587 + rgb01[..., 2] * 0.114


def quantize(x01: np.ndarray, full: float) -> np.ndarray:
    """[0, 1] float -> uint8 (full 255) or uint16 (full 65535, and float inputs), rounded."""
    if full == 255.0:
        return np.round(np.clip(x01, 0, 1) * 255.0).astype(np.uint8)
    return np.round(np.clip(x01, 0, 1) * 65535.0).astype(np.uint16)


def write_png(path: str | os.PathLike, pixels: np.ndarray, in_place: bool = False) -> str:
    """Write gray / RGB / RGBA uint8 or uint16 pixels as PNG (channel order converted for OpenCV).

    ``in_place``: convert the channel order inside ``pixels`` (a contiguous array the caller gives up) instead of
    a copy, and stream the PNG to the file instead of encoding it in memory: for large results, whose copies would
    double the memory."""
    path = str(path)
    in_place = in_place and pixels.flags.c_contiguous and pixels.flags.writeable
    if in_place and pixels.ndim == 3:
        # red <-> blue in blocks of rows (cv2.cvtColor with dst=src still allocates a whole temporary image)
        for y in range(0, pixels.shape[0], 256):
            block = pixels[y : y + 256]
            block[..., [0, 2]] = block[..., [2, 0]]
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        if in_place:  # streamed to the file by libpng: no in-memory copy of the encoded image either
            if not cv2.imwrite(tmp + ".png", pixels):
                raise OSError(f"cannot encode {path!r} as PNG")
            os.replace(tmp + ".png", tmp)
        else:
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels))
            if not ok:
                raise OSError(f"cannot encode {path!r} as PNG")
            buf.tofile(tmp)
        os.replace(tmp, path)  # a crash or a full disk never leaves a half-written file in place of an old one
    finally:
        for t in (tmp, tmp + ".png"):
            if os.path.exists(t):
                os.remove(t)
    return path


# ---------------------------------------------------------------------------------------------------------------
# SC-FEGAN
# ---------------------------------------------------------------------------------------------------------------
def read_mask(
    path: str, size: tuple[int, int], what: str = "mask", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """bool HxW: True where any colour channel is at least half of full scale.  Must match ``size``."""
    img = read_image(path, what, max_pixels)
    if img.size != size:
        raise ValueError(
            f"{what} {path!r} is {img.size[1]}x{img.size[0]} but the input image is {size[1]}x{size[0]} "
            f"(width x height); the {what} must be drawn on the image, at its size"
        )
    p = img.pixels if img.gray else img.pixels[..., :3].max(axis=2)
    return p.astype(np.float32) >= 0.5 * img.full


def read_color(path: str, size: tuple[int, int], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    img = read_image(path, "color", max_pixels)
    if img.size != size:
        raise ValueError(
            f"color {path!r} is {img.size[1]}x{img.size[0]} but the input image is "
            f"{size[1]}x{size[0]} (width x height); it must be drawn on the image, at its size"
        )
    return img.rgb01()
