"""SC-FEGAN face editing: working size, input noise (the policy of which noise the weights get), and ``edit_face``.

The official demo's encodings (demo.py:58-186); the result equals the input outside the mask, bit for bit: the
generated image is resized back to the input's size, quantised to the input's type, and taken only where the
(original-size) mask is set."""

import logging
import warnings

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from archs.scfegan_generator import SIZE_MULTIPLE, SCFEGANGenerator, make_generator_input
from inference.device import run_net
from inference.images import Image, quantize, to_gray01

log = logging.getLogger(__name__)


NOISE_TYPES = ("binary16", "gaussian", "zero")
DEFAULT_FACE_SIZE = 512  # official demo.yaml INPUT_SIZE


#: The largest SC-FEGAN working size taken from a file (weights meta, a run's .hydra/config.yaml): the official model
#: works at 512; 2048 x 2048 already needs several GB.  A size given by the user is not bounded.
MAX_FILE_FACE_SIZE = 2048


def working_size(size, meta: dict, source: str | None = None) -> tuple[int, int]:
    """``source`` names the file ``size`` came from (then bounded by :data:`MAX_FILE_FACE_SIZE`)."""
    if size in (None, "auto"):
        size = meta.get("input_size", DEFAULT_FACE_SIZE)
        source = source or ("the weights' meta.input_size" if "input_size" in meta else None)
    try:
        if isinstance(size, (int, str)):
            size = (int(size), int(size))
        hw = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        hw = ()
    if len(hw) != 2 or any(s <= 0 or s % SIZE_MULTIPLE for s in hw):
        raise ValueError(
            f"size{f' from {source}' if source else ''} must be a positive multiple of {SIZE_MULTIPLE} "
            f"(or [H, W] of such), got {size!r}"
        )
    if source and max(hw) > MAX_FILE_FACE_SIZE:
        raise ValueError(
            f"working size {hw[1]}x{hw[0]} from {source} is larger than {MAX_FILE_FACE_SIZE} (a file "
            f"cannot choose that much memory); give size=... explicitly if it is meant"
        )
    return hw


def _resize_binary(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if m.shape == hw:
        return m.astype(np.float32)
    # Area averaging, then any coverage counts: thin strokes survive downscaling, the region is never shrunk.
    r = cv2.resize(m.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return (r > 0).astype(np.float32)


def make_noise(hw: tuple[int, int], kind: str, seed: int) -> torch.Tensor:
    """[1, 1, H, W] noise before x M: ``binary16`` = the official demo's (``randn >= 1``, about 16 % ones, as
    synthesis.pipeline), ``gaussian`` N(0, 1), ``zero``."""
    if kind not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {NOISE_TYPES}, got {kind!r}")
    if kind == "zero":
        return torch.zeros(1, 1, *hw)
    n = torch.randn(1, 1, *hw, generator=torch.Generator().manual_seed(int(seed)))
    return (n >= 1.0).float() if kind == "binary16" else n


@torch.no_grad()
def edit_face(
    net: SCFEGANGenerator,
    image: Image,
    mask: np.ndarray,
    sketch: np.ndarray | None = None,
    color: np.ndarray | None = None,
    size=None,
    bgr: bool = False,
    noise: str = "binary16",
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Edit ``image`` in the ``mask`` region; returns pixels in the image's layout and dtype, equal to the
    input wherever ``mask`` is False.

    ``mask``/``sketch``: bool HxW at the image's size; ``color``: float HxWx3 RGB in [0, 1] (black = no stroke).
    ``size``: the network's working size (H, W), multiples of 128; the inputs are resized to it (image bicubic as
    the official demo, mask and sketch by area and re-binarised, colour nearest) and the result back (bicubic).
    ``bgr``: the weights expect BGR (converted official weights): image and colour are flipped to BGR on the way
    in and the output back to RGB.
    """
    if image.full == 1.0:  # float file: edit its 16-bit version (PNG has no float)
        image = Image(quantize(image.pixels, 1.0), 65535.0, image.path)
    h, w = image.size
    hw = tuple(size) if size is not None else (h, w)
    rgb = image.rgb01()
    resized = hw != (h, w)
    dev = torch.device(device)

    def t(a: np.ndarray) -> torch.Tensor:  # HxW(xC) -> [1, C, H, W]
        a = a[..., None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]

    img_w = cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1) if resized else rgb
    m = t(_resize_binary(mask, hw))
    s = t(_resize_binary(sketch, hw)) if sketch is not None else torch.zeros_like(m)
    if color is not None:
        c01 = cv2.resize(color, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) if resized else color
        c = t(c01) * 2 - 1
    else:
        c = -torch.ones(1, 3, *hw)  # official demo: no stroke inside M = black = -1
    x_img = t(img_w) * 2 - 1
    if bgr:
        x_img, c = x_img.flip(1), c.flip(1)
    x = make_generator_input(x_img, s * m, c * m, m, make_noise(hw, noise, seed) * m)
    y = run_net(net, x.to(dev), precision).cpu()
    if bgr:
        y = y.flip(1)
    gen = ((y[0].permute(1, 2, 0).numpy() + 1.0) * 0.5).clip(0, 1)
    if resized:
        gen = cv2.resize(gen, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    if image.gray:
        gen_q = quantize(to_gray01(gen), image.full)
        return np.where(mask, gen_q, image.pixels)
    gen_q = quantize(gen, image.full).astype(image.pixels.dtype)
    out = image.pixels.copy()
    out[..., :3] = np.where(mask[..., None], gen_q, image.pixels[..., :3])  # alpha (if any) unchanged
    return out


DEFAULT_NOISE = "binary16"  # weights that record nothing: the official demo's noise (converted official weights)


def resolve_noise(requested, meta: dict, source: str = "the weights") -> str:
    """The noise kind to feed: ``requested`` unless ``auto``/None, then the one ``meta`` records (what the model was
    trained with), else :data:`DEFAULT_NOISE`.  An explicit kind that differs from the recorded one warns."""
    recorded = meta.get("noise_type")
    if recorded is not None and recorded not in NOISE_TYPES:
        raise ValueError(f"{source} records noise_type={recorded!r}, not one of {NOISE_TYPES}")
    if requested in (None, "auto"):
        if recorded is None:
            log.info(f"{source} record no noise_type: using {DEFAULT_NOISE!r} (the official demo's noise)")
        return recorded or DEFAULT_NOISE
    requested = str(requested)
    if requested not in NOISE_TYPES:
        raise ValueError(f"noise must be auto or one of {NOISE_TYPES}, got {requested!r}")
    if recorded is not None and requested != recorded:
        msg = (
            f"noise={requested!r} but {source} were trained with noise_type={recorded!r}: the results will be "
            f"worse than with the training noise (noise=auto uses it)"
        )
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return requested


def bgr_of(cfg: DictConfig, meta: dict) -> bool:
    v = cfg.get("bgr", "auto")
    if v in (None, "auto"):
        return bool(meta.get("bgr", False))
    if isinstance(v, bool):
        return v
    raise ValueError(f"bgr must be auto, true or false, got {v!r}")
