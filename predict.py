"""Inference with the trained (or published) generators, and export.

    python predict.py model=esrgan weights=PATH input=FILE_OR_DIR output=DIR [tile=256 tile_pad=auto] [precision=bf16]
    python predict.py model=scfegan weights=G.pth input=face.png mask=mask.png sketch=sketch.png color=color.png output=out.png
    python predict.py model=esrgan weights=PATH export=onnx|torchscript|safetensors export_path=G.onnx

``predict(cfg)`` is a plain function the tests call; ``@hydra.main`` wraps it.  See README "Predict and export".

ESRGAN (x4, or whatever scale the weights have): PNG out with the input's name; RGB stays RGB, grayscale stays
grayscale (the gray image is replicated to RGB for the network and the result converted back with BT.601
weights, as Real-ESRGAN does), RGBA keeps an alpha channel upscaled separately (``alpha_upsampler``), 16-bit
inputs give 16-bit outputs (float inputs too).  Large images go through tiles; with ``tile_pad`` at least the
network's receptive margin (``tile_pad=auto``) the tiled result equals the untiled one up to float rounding.

SC-FEGAN: the official demo's encodings (demo.py:58-186); the result equals the input outside the mask, bit for
bit: the generated image is resized back to the input's size, quantised to the input's type, and taken only
where the (original-size) mask is set.
"""

import tv_compat  # noqa: F401  (must precede anything that imports torchvision)

import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import track

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SIZE_MULTIPLE, SCFEGANGenerator, make_generator_input
from archs.weights_io import build_generator
from datamodules.image_io import IMG_EXTENSIONS, BadImageError, decode_image, list_images
from ops.imresize import imresize

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
NOISE_TYPES = ("binary16", "gaussian", "zero")
DEFAULT_FACE_SIZE = 512  # official demo.yaml INPUT_SIZE
#: Tiles smaller than this, or more tiles than MAX_TILES per image, cost far more than the whole image (each tile
#: runs with tile_pad pixels of context on every side): tile=2 on a 96x96 image took minutes (issue 16 item 9).
MIN_TILE = 8
MAX_TILES = 1024
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
        raise ValueError(f"{what} {str(path)!r}: not a readable image ({type(err).__name__}: {err})") from err


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
        raise ValueError(f"{what} {str(path)!r} is {w}x{h} = {w * h:,} pixels, more than max_pixels={int(max_pixels):,} "
                         "(checked from the header, nothing decoded); raise max_pixels=... if the image is meant "
                         "to be this large, or split it")


def read_image(path: str | os.PathLike, what: str = "input image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
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


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> str:
    """Write gray / RGB / RGBA uint8 or uint16 pixels as PNG (channel order converted for OpenCV)."""
    path = str(path)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError(f"cannot encode {path!r} as PNG")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        buf.tofile(tmp)
        os.replace(tmp, path)  # a crash or a full disk never leaves a half-written file in place of an old one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Running a network
# ---------------------------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu":
        log.info("precision=bf16 on the CPU: allowed (autocast), but usually slower than fp32 there")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision=bf16: the GPU {torch.cuda.get_device_name(device)} does not support bfloat16; "
                         "use precision=fp32")


@torch.no_grad()
def run_net(net: torch.nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``net(x)`` under bf16 autocast when asked (weights stay fp32); the result is float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = net(x)
    return y.float()


# ---------------------------------------------------------------------------------------------------------------
# ESRGAN
# ---------------------------------------------------------------------------------------------------------------
def _unshuffle(net: torch.nn.Module) -> int:
    return {4: 1, 2: 2, 1: 4}[net.scale] if isinstance(net, RRDBNet) else 1


def receptive_margin(net: torch.nn.Module) -> int:
    """Input pixels around an output pixel's source pixel that can change it (RRDBNet, exact bound).

    In body coordinates: conv_first 1 + 3 RDBs x 5 chained convs per RRDB + conv_body 1, then the upsampling
    part (conv_up1 at x2, conv_up2 / conv_hr / conv_last at x4, nearest upsampling between) adds 2:
    ``15 * num_block + 4``, times the pixel-unshuffle factor for x2 / x1 networks: 349 input pixels for the
    23-block ESRGAN x4.
    """
    if not isinstance(net, RRDBNet):
        raise TypeError(f"receptive_margin: no rule for {type(net).__name__}")
    return _unshuffle(net) * (15 * len(net.body) + 4)


def tiled_forward(
    net: torch.nn.Module, x: torch.Tensor, scale: int, tile: int = 0, tile_pad: int = 0, precision: str = "fp32",
    unit: int = 1,
) -> torch.Tensor:
    """``net(x)`` for an x``scale`` super-resolution network, through ``tile`` x ``tile`` input tiles.

    Each tile is run with ``tile_pad`` input pixels of context on every side (clipped at the image border, where
    the network's own zero padding then applies as on the whole image) and only its core is kept.  With
    ``tile_pad >= receptive_margin(net)`` every kept pixel sees exactly what it sees on the whole image.
    ``unit``: tiles and pads are rounded up to multiples of it (the pixel-unshuffle factor of x2 / x1 nets).
    """
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return run_net(net, x, precision)
    tile = -(-tile // unit) * unit
    tile_pad = -(-tile_pad // unit) * unit
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, py1 = max(y0 - tile_pad, 0), min(y1 + tile_pad, h)
            px0, px1 = max(x0 - tile_pad, 0), min(x1 + tile_pad, w)
            y = run_net(net, x[..., py0:py1, px0:px1], precision)
            if out is None:
                out = y.new_zeros(y.shape[0], y.shape[1], h * scale, w * scale)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                y[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Memory: an estimate of a forward pass, and the tile size that fits
# ---------------------------------------------------------------------------------------------------------------
GB = 1024**3
OUT_BYTES_PER_PIXEL = 4 * 3 * 4  # float32 RGB result, and about three more copies of it (clamp, numpy, quantise)


def forward_bytes(net: RRDBNet, h: int, w: int) -> int:
    """Estimated peak bytes of the activations of ``net`` on an h x w input (float32, no autograd).

    With ``P`` body pixels (input pixels / unshuffle^2), ``F`` features and ``G`` growth channels: inside an RDB
    the long skip, the RRDB and RDB inputs, x1..x4, the concatenation for conv5 and its output are alive,
    ``P (5F + 8G)`` values; in the x4 upsampling, the x2 map, its x4 nearest copy and conv_up2's output,
    ``36 P F``.  The larger of the two, plus the input and the output of the network.
    """
    u = _unshuffle(net)
    p = -(-h // u) * -(-w // u)
    nf, gc = net.conv_first.out_channels, net.body[0].rdb1.conv1.out_channels if len(net.body) else 0
    values = max(p * (5 * nf + 8 * gc), 36 * p * nf) + 3 * h * w + 16 * p * net.conv_last.out_channels
    return 4 * values


def memory_budget(device: torch.device, max_memory=None) -> int:
    """Bytes a prediction may use: ``max_memory`` (GB) when given, else 90 % of the free GPU memory or 80 % of
    the available RAM (Linux MemAvailable)."""
    if max_memory not in (None, "auto"):
        try:
            gb = float(max_memory)
        except (TypeError, ValueError):
            gb = -1.0
        if not gb > 0:
            raise ValueError(f"max_memory must be a positive number of GB or 'auto', got {max_memory!r}")
        return int(gb * GB)
    if device.type == "cuda":
        return int(0.9 * torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(0.8 * int(info["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def plan_tile(net: RRDBNet, h: int, w: int, tile, tile_pad: int, device: torch.device, max_memory=None,
              name: str = "image") -> int:
    """The tile size for ``net`` on an h x w image: 0 (whole image) or a side in input pixels.

    ``tile``: ``auto`` (the whole image when its estimated memory fits the budget, else the largest tile that
    does; with ``tile_pad=auto`` the tiled result equals the untiled one), 0 (whole image; an error with the
    hint when it does not fit) or a side (an error when even that does not fit).
    """
    budget = memory_budget(device, max_memory)
    scale = net.scale
    fixed = OUT_BYTES_PER_PIXEL * h * w * scale * scale if device.type == "cpu" else 12 * h * w * scale * scale
    what = f"{name} ({w}x{h}, x{scale})"
    if fixed > budget:
        raise MemoryError(f"{what}: the result alone needs about {fixed / GB:.1f} GB, more than the "
                          f"{budget / GB:.1f} GB budget (max_memory=...); tiling cannot help: split the image")

    def need(side_h: int, side_w: int) -> int:
        return fixed + forward_bytes(net, side_h, side_w)

    auto = tile in (None, "auto")
    side = 0 if auto else int(tile)
    if side < 0:
        raise ValueError(f"tile must be 'auto', 0 (whole image) or a positive side in pixels, got {tile!r}")
    if side == 0 or (h <= side and w <= side):
        whole = need(h, w)
        if whole <= budget:
            return 0
        if not auto:
            raise MemoryError(f"{what}: untiled it needs about {whole / GB:.1f} GB, more than the {budget / GB:.1f} GB "
                              f"budget; set tile=auto (or tile=512) to run it in tiles with the same result")
    else:
        n = need(min(h, side + 2 * tile_pad), min(w, side + 2 * tile_pad))
        if n > budget:
            raise MemoryError(f"{what}: tile={side} with tile_pad={tile_pad} needs about {n / GB:.1f} GB, more than "
                              f"the {budget / GB:.1f} GB budget; use a smaller tile (or tile=auto)")
        return side
    unit = _unshuffle(net)
    side = -(-max(h, w) // unit) * unit
    while side > unit * 8:
        side = max(unit * 8, (side // 2) // unit * unit)
        if need(min(h, side + 2 * tile_pad), min(w, side + 2 * tile_pad)) <= budget:
            log.info(f"{what}: untiled it needs about {need(h, w) / GB:.1f} GB (budget {budget / GB:.1f} GB): "
                     f"running it in tiles of {side} px (tile_pad={tile_pad})")
            return side
    raise MemoryError(f"{what}: even tiles of {side} px with tile_pad={tile_pad} need more than the "
                      f"{budget / GB:.1f} GB budget (max_memory=...); use a smaller tile_pad or another device")


def _resolve_pad(tile_pad, net) -> int:
    if tile_pad in (None, "auto"):
        return receptive_margin(net) if isinstance(net, RRDBNet) else 16
    pad = int(tile_pad)
    if pad < 0:
        raise ValueError(f"tile_pad must be >= 0 or 'auto', got {tile_pad!r}")
    return pad


def check_tile(tile, h: int, w: int, name: str = "image") -> None:
    """A given tile side (not ``auto`` / 0) must be at least :data:`MIN_TILE` and give at most :data:`MAX_TILES`."""
    if tile in (None, "auto"):
        return
    side = int(tile)
    if side < 0:
        raise ValueError(f"tile must be 'auto', 0 (whole image) or a positive side in pixels, got {tile!r}")
    if side == 0 or (h <= side and w <= side):
        return
    count = -(-h // side) * -(-w // side)
    if side < MIN_TILE or count > MAX_TILES:
        least = max(MIN_TILE, math.ceil(math.sqrt(h * w / MAX_TILES)))
        raise ValueError(f"tile={side} on {name} ({w}x{h}) gives {count} tiles: tiles must be at least {MIN_TILE} "
                         f"pixels and at most {MAX_TILES} per image; use tile>={least}, tile=auto or tile=0")


def upscale(
    net, img: Image, scale: int, device: torch.device, tile="auto", tile_pad="auto", precision: str = "fp32",
    alpha_upsampler: str = "bicubic", max_memory=None,
) -> np.ndarray:
    """Super-resolve one image; returns pixels in the input's layout (gray/RGB/RGBA) and bit depth.

    ``tile``: ``auto`` / 0 / a side in pixels, see :func:`plan_tile` (``max_memory``: its budget in GB)."""
    if alpha_upsampler not in ("bicubic", "network"):
        raise ValueError(f"alpha_upsampler must be 'bicubic' or 'network', got {alpha_upsampler!r}")
    is_net = isinstance(net, torch.nn.Module)
    unit = _unshuffle(net) if is_net else 1
    h, w = img.size
    if h % unit or w % unit:
        raise ValueError(f"{img.path}: {w}x{h} is not divisible by {unit}, which this x{scale} network needs "
                         "(pixel-unshuffle); crop or pad the image")
    pad = _resolve_pad(tile_pad, net) if is_net else 0
    check_tile(tile, h, w, str(img.path))
    if isinstance(net, RRDBNet):
        tile = plan_tile(net, h, w, tile, pad, torch.device(device), max_memory, name=str(img.path))
    else:
        tile = 0 if tile in (None, "auto") else int(tile)

    def sr(x01: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(x01).permute(2, 0, 1)[None].to(device)
        if not is_net:
            y = net(x)
        else:
            y = tiled_forward(net, x, scale, int(tile or 0), pad, precision, unit)
        return y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    out = sr(img.rgb01())
    if img.gray:
        return quantize(to_gray01(out), img.full)
    alpha = img.alpha01()
    if alpha is None:
        return quantize(out, img.full)
    if alpha_upsampler == "network" and is_net:
        a = to_gray01(sr(np.repeat(alpha[..., None], 3, axis=2)))
    else:
        a = imresize(torch.from_numpy(alpha)[None], scale)[0].clamp(0, 1).numpy()
    return quantize(np.concatenate([out, a[..., None]], axis=2), img.full)


def _collect_inputs(inp: str) -> tuple[list[Path], Path | None]:
    p = Path(os.path.expanduser(str(inp)))
    if p.is_dir():
        return list_images(p, recursive=True), p
    if p.is_file():
        return [p], None
    raise FileNotFoundError(f"input {str(p)!r} does not exist (give an image file or a folder of images; "
                            f"extensions {', '.join(IMG_EXTENSIONS)})")


def _max_pixels(cfg: DictConfig) -> int | None:
    v = cfg.get("max_pixels", DEFAULT_MAX_PIXELS)
    if v in (None, 0):
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = -1
    if n < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels or null (no limit), got {v!r}")
    return n


def output_clashes(targets) -> set[str]:
    """The output paths that more than one input would be written to: one pass over ``targets`` (any iterable),
    a set lookup each, so O(n)."""
    seen: set[str] = set()
    clashes: set[str] = set()
    for t in targets:
        key = os.path.normcase(os.path.normpath(os.fspath(t)))
        if key in seen:
            clashes.add(key)
        else:
            seen.add(key)
    return clashes


def _real(p) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(p)))


def _inside(child: str, parent: str) -> bool:
    return child != parent and os.path.commonpath([child, parent]) == parent


def check_outputs(inputs: list, targets: list, in_root, out_dir, overwrite: bool = False) -> None:
    """Refuse, before anything is read or written, outputs that would destroy or re-read inputs.

    Always refused: ``output`` equal to the input folder, an output folder inside the input folder (a later run
    would take the earlier results as inputs), any output file that is an input file (through links too), and an
    output folder that is an existing file.  Existing output files are replaced only with ``overwrite=true``.
    O(n): one set of the inputs' real paths, one lookup and one ``lstat`` per output.
    """
    out_real = _real(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output={str(out_dir)!r} is an existing file; ESRGAN writes into a folder: give one")
    if in_root is not None:
        in_real = _real(in_root)
        if out_real == in_real:
            raise ValueError(f"output={str(out_dir)!r} is the input folder: the results would replace the originals. "
                             "Choose another folder (refused even with overwrite=true: inputs are never overwritten)")
        if _inside(out_real, in_real):
            raise ValueError(f"output={str(out_dir)!r} is inside the input folder {str(in_root)!r}: its results "
                             "would be taken as inputs by the next run. Choose a folder outside the input folder")
    sources = {_real(f) for f in inputs}
    hit = next((t for t in targets if _real(t) in sources), None)
    if hit is not None:
        raise ValueError(f"output file {str(hit)!r} is one of the input images: it would be overwritten. "
                         "Choose another output (refused even with overwrite=true)")
    if not overwrite:
        existing = [str(t) for t in targets if os.path.lexists(t)]
        if existing:
            raise FileExistsError(f"{len(existing)} output file(s) already exist, e.g. {existing[:3]}: nothing was "
                                  "written. Pass overwrite=true to replace them, or choose another output folder")


def _default_output(cfg: DictConfig) -> str:
    if cfg.get("output"):
        return os.path.expanduser(str(cfg.output))
    return os.path.join(str(cfg.paths.output_dir), "predictions")


def load_model(cfg: DictConfig, kind: str):
    """(generator in eval mode, GeneratorFile) from ``cfg.weights``."""
    if not cfg.get("weights"):
        raise ValueError(f"weights=PATH is required for model={kind}")
    defaults = None
    if kind == "scfegan" and cfg.model.get("generator") is not None:
        defaults = OmegaConf.to_container(cfg.model.generator, resolve=True)
    return build_generator(cfg.weights, kind=kind, prefer="params_ema" if cfg.get("use_ema", True) else "params",
                           defaults=defaults)


def predict_sr(cfg: DictConfig) -> list[str]:
    device = pick_device(cfg.device)
    precision = str(cfg.get("precision", "fp32"))
    check_precision(precision, device)
    files, root = _collect_inputs(cfg.input) if cfg.get("input") else (None, None)
    if files is None:
        raise ValueError("input=FILE_OR_DIR is required")
    if cfg.model.get("name") == "bicubic":
        scale = int(cfg.data.scale)
        net = lambda x: imresize(x, scale)  # noqa: E731
        name = f"bicubic x{scale}"
    else:
        net, info = load_model(cfg, "esrgan")
        net.to(device)
        scale = net.scale
        name = f"{info.path} ({info.meta.get('layout', info.container)}, {info.generator})"
        if net.conv_last.out_channels != 3 or net.conv_first.in_channels != 3 * _unshuffle(net) ** 2:
            raise ValueError(f"{cfg.weights}: predict.py runs 3-channel (RGB) networks; this one has "
                             f"{net.conv_first.in_channels // _unshuffle(net) ** 2} in / {net.conv_last.out_channels} out")
    out_dir = Path(_default_output(cfg))
    targets = [out_dir / ((f.relative_to(root) if root else Path(f.name)).with_suffix(".png")) for f in files]
    clashes = output_clashes(targets)
    if clashes:
        raise ValueError(f"several inputs would be written to the same output file(s) {sorted(clashes)[:3]} "
                         "(same name, different extensions); rename them")
    check_outputs(files, targets, root, out_dir, bool(cfg.get("overwrite", False)))
    log.info(f"x{scale} super-resolution with {name}, {len(files)} image(s) -> {out_dir}")
    max_pixels = _max_pixels(cfg)
    written = []
    for src, dst in track(list(zip(files, targets)), description="predict", transient=True,
                          disable=len(files) < 2):
        img = read_image(src, max_pixels=max_pixels)
        pixels = upscale(net, img, scale, device, cfg.get("tile", "auto"), cfg.get("tile_pad", "auto"), precision,
                         str(cfg.get("alpha_upsampler", "bicubic")), max_memory=cfg.get("max_memory", "auto"))
        written.append(write_png(dst, pixels))
    log.info(f"wrote {len(written)} image(s) to {out_dir}")
    return written


# ---------------------------------------------------------------------------------------------------------------
# SC-FEGAN
# ---------------------------------------------------------------------------------------------------------------
def read_mask(path: str, size: tuple[int, int], what: str = "mask",
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
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
        raise ValueError(f"color {path!r} is {img.size[1]}x{img.size[0]} but the input image is "
                         f"{size[1]}x{size[0]} (width x height); it must be drawn on the image, at its size")
    return img.rgb01()


#: The largest SC-FEGAN working size taken from a file (weights meta, a run's .hydra/config.yaml): the official model
#: works at 512; 2048 x 2048 already needs several GB.  A size given by the user is not bounded.
MAX_FILE_FACE_SIZE = 2048


def _working_size(size, meta: dict, source: str | None = None) -> tuple[int, int]:
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
        raise ValueError(f"size{f' from {source}' if source else ''} must be a positive multiple of {SIZE_MULTIPLE} "
                         f"(or [H, W] of such), got {size!r}")
    if source and max(hw) > MAX_FILE_FACE_SIZE:
        raise ValueError(f"working size {hw[1]}x{hw[0]} from {source} is larger than {MAX_FILE_FACE_SIZE} (a file "
                         f"cannot choose that much memory); give size=... explicitly if it is meant")
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
        msg = (f"noise={requested!r} but {source} were trained with noise_type={recorded!r}: the results will be "
               f"worse than with the training noise (noise=auto uses it)")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return requested


def _bgr_of(cfg: DictConfig, meta: dict) -> bool:
    v = cfg.get("bgr", "auto")
    if v in (None, "auto"):
        return bool(meta.get("bgr", False))
    if isinstance(v, bool):
        return v
    raise ValueError(f"bgr must be auto, true or false, got {v!r}")


def predict_faces(cfg: DictConfig) -> list[str]:
    if not cfg.get("input"):
        raise ValueError("input=FACE_IMAGE is required for model=scfegan")
    if not cfg.get("mask"):
        raise ValueError("mask=MASK_IMAGE is required for model=scfegan (white where the face is to be edited)")
    dst = _default_output(cfg)
    if os.path.isdir(dst) or not os.path.splitext(dst)[1]:
        dst = os.path.join(dst, Path(str(cfg.input)).stem + ".png")
    if not dst.lower().endswith(".png"):
        raise ValueError(f"output {dst!r}: predict.py writes PNG files (lossless, so unmasked pixels stay exact)")
    given = [os.path.expanduser(str(cfg[k])) for k in ("input", "mask", "sketch", "color") if cfg.get(k)]
    check_outputs(given, [dst], None, os.path.dirname(os.path.abspath(dst)), bool(cfg.get("overwrite", False)))
    max_pixels = _max_pixels(cfg)
    image = read_image(os.path.expanduser(str(cfg.input)), "input image", max_pixels)
    mask = read_mask(os.path.expanduser(str(cfg.mask)), image.size, "mask", max_pixels)
    sketch = (read_mask(os.path.expanduser(str(cfg.sketch)), image.size, "sketch", max_pixels)
              if cfg.get("sketch") else None)
    color = read_color(os.path.expanduser(str(cfg.color)), image.size, max_pixels) if cfg.get("color") else None
    device = pick_device(cfg.device)
    precision = str(cfg.get("precision", "fp32"))
    check_precision(precision, device)
    net, info = load_model(cfg, "scfegan")
    net.to(device)
    hw = _working_size(cfg.get("size", "auto"), info.meta)
    bgr = _bgr_of(cfg, info.meta)
    if not mask.any():
        log.warning(f"mask {cfg.mask!r} is empty (no pixel >= half scale): the output equals the input")
    noise = resolve_noise(cfg.get("noise", "auto"), info.meta, f"weights {info.path}")
    out = edit_face(net, image, mask, sketch, color, size=hw, bgr=bgr, noise=noise,
                    seed=int(cfg.get("seed", 0)), device=device, precision=precision)
    write_png(dst, out)
    log.info(f"edited {cfg.input} at {hw[1]}x{hw[0]} ({'BGR' if bgr else 'RGB'} weights {info.path}, noise {noise}) "
             f"-> {dst}")
    return [dst]


# ---------------------------------------------------------------------------------------------------------------
def predict(cfg: DictConfig) -> list[str]:
    """Run the prediction (or the export) ``cfg`` describes; returns the files written."""
    task = cfg.model.get("task")
    if cfg.get("export"):
        from archs.export import export_file

        if cfg.model.get("name") == "bicubic":
            raise ValueError("model=bicubic has no network to export")
        kind = {"sr": "esrgan", "faces": "scfegan"}.get(task, "auto")
        defaults = OmegaConf.to_container(cfg.model.generator, resolve=True) if kind == "scfegan" else None
        path = export_file(cfg.weights if cfg.get("weights") else _missing_weights(), str(cfg.export),
                           cfg.get("export_path"), kind=kind,
                           prefer="params_ema" if cfg.get("use_ema", True) else "params", defaults=defaults,
                           opset=int(cfg.get("opset", 17)), overwrite=bool(cfg.get("overwrite", False)))
        log.info(f"exported {cfg.weights} as {cfg.export} -> {path}")
        return [path]
    if task == "sr":
        return predict_sr(cfg)
    if task == "faces":
        return predict_faces(cfg)
    raise ValueError(f"predict.py runs model=esrgan, model=bicubic or model=scfegan; got task={task!r}")


def _missing_weights():
    raise ValueError("export needs weights=PATH")


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
