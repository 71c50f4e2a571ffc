"""ESRGAN upscaling: receptive margin, tiled forward passes, the memory plan that chooses tiles, and ``upscale``.

With ``tile_pad`` at least the network's receptive margin (``tile_pad=auto``) the tiled result equals the untiled
one up to float rounding."""

import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from archs.rrdbnet import RRDBNet
from archs.srvgg import SRVGGNetCompact
from inference.device import run_net
from inference.images import Image, quantize, to_gray01
from ops.imresize import imresize

# The tiled forward pass lives in ops/ (the SR recipes' tiled validation uses it too); re-exported here.
from ops.sr_tiles import image_channels, receptive_margin, tile_grid, tiled_forward, unshuffle_factor  # noqa: F401
from ops.tile_threads import map_tiles, tile_workers

log = logging.getLogger(__name__)


#: Tiles smaller than this, or more tiles than MAX_TILES per image, cost far more than the whole image (each tile
#: runs with tile_pad pixels of context on every side): tile=2 on a 96x96 image took minutes (issue 16 item 9).
MIN_TILE = 8
MAX_TILES = 1024


# ---------------------------------------------------------------------------------------------------------------
# Memory: an estimate of a forward pass, and the tile size that fits
# ---------------------------------------------------------------------------------------------------------------
GB = 1024**3
OUT_BYTES_PER_PIXEL = 4 * 3 * 4  # float32 RGB result, and about three more copies of it (clamp, numpy, quantise)


def forward_bytes(net: torch.nn.Module, h: int, w: int) -> int:
    """Estimated peak bytes of the activations of ``net`` on an h x w input (float32, no autograd).

    SRVGGNetCompact (``P = h w`` pixels, all at the input resolution): a conv's input, its output and the
    activation's output (PReLU is not in place), ``3 P F``; at the end the last conv's ``C s^2`` channels, the
    pixel-shuffled copy and the nearest-upsampled input added to it, ``3 P C s^2``.

    With ``P`` body pixels (input pixels / unshuffle^2), ``F`` features and ``G`` growth channels: inside an RDB
    the long skip, the RRDB and RDB inputs, x1..x4, the concatenation for conv5 and its output are alive,
    ``P (5F + 8G)`` values; in the x4 upsampling, the x2 map, its x4 nearest copy and conv_up2's output,
    ``36 P F``.  The larger of the two, plus the input and the output of the network.
    """
    if isinstance(net, SRVGGNetCompact):
        p, s2 = h * w, net.upscale**2
        return 4 * (max(3 * p * net.num_feat, 3 * p * net.num_out_ch * s2) + 3 * h * w)
    u = unshuffle_factor(net)
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


def plan_tile(
    net: torch.nn.Module,
    h: int,
    w: int,
    tile,
    tile_pad: int,
    device: torch.device,
    max_memory=None,
    name: str = "image",
) -> int:
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
        raise MemoryError(
            f"{what}: the result alone needs about {fixed / GB:.1f} GB, more than the "
            f"{budget / GB:.1f} GB budget (max_memory=...); tiling cannot help: split the image"
        )

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
            raise MemoryError(
                f"{what}: untiled it needs about {whole / GB:.1f} GB, more than the {budget / GB:.1f} GB "
                f"budget; set tile=auto (or tile=512) to run it in tiles with the same result"
            )
    else:
        n = need(min(h, side + 2 * tile_pad), min(w, side + 2 * tile_pad))
        if n > budget:
            raise MemoryError(
                f"{what}: tile={side} with tile_pad={tile_pad} needs about {n / GB:.1f} GB, more than "
                f"the {budget / GB:.1f} GB budget; use a smaller tile (or tile=auto)"
            )
        return side
    unit = unshuffle_factor(net)
    side = -(-max(h, w) // unit) * unit
    while side > unit * 8:
        side = max(unit * 8, (side // 2) // unit * unit)
        if need(min(h, side + 2 * tile_pad), min(w, side + 2 * tile_pad)) <= budget:
            log.info(
                f"{what}: untiled it needs about {need(h, w) / GB:.1f} GB (budget {budget / GB:.1f} GB): "
                f"running it in tiles of {side} px (tile_pad={tile_pad})"
            )
            return side
    raise MemoryError(
        f"{what}: even tiles of {side} px with tile_pad={tile_pad} need more than the "
        f"{budget / GB:.1f} GB budget (max_memory=...); use a smaller tile_pad or another device"
    )


#: Tiles run at once only while their activations together fit in this: the gain is on small tiles, whose forward
#: passes are chains of short operations (RRDBNet x4 on 2 threads: about 0.7x the wall time on 32-px tiles, 0.9x on
#: 128-px ones; benchmarks/cpu_inference.py); a large tile keeps the cores busy alone, and a second one in flight
#: would double a peak of gigabytes (RRDBNet on 512 px + the receptive margin: about 7 GB a tile).
PARALLEL_TILES_BYTES = 1 << 30


def plan_workers(
    net: torch.nn.Module, h: int, w: int, tile: int, tile_pad: int, device, fixed: int = 0, max_memory=None
) -> int:
    """How many ``tile``-px tiles (``tile_pad`` of context) of an h x w image to run at once on the CPU
    (ops/tile_threads.py: one per thread torch uses) while their activations together stay within
    :data:`PARALLEL_TILES_BYTES` and the memory budget beside ``fixed`` bytes (the result); 1 for a single tile, on a
    GPU, or for networks without a memory estimate."""
    if not tile or (h <= tile and w <= tile) or not isinstance(net, (RRDBNet, SRVGGNetCompact)):
        return 1
    workers = tile_workers(len(tile_grid(h, w, tile)), device)
    if workers > 1:
        per_tile = forward_bytes(net, min(h, tile + 2 * tile_pad), min(w, tile + 2 * tile_pad))
        room = min(PARALLEL_TILES_BYTES, memory_budget(torch.device(device), max_memory) - fixed)
        workers = max(1, min(workers, room // per_tile))
    return workers


def _resolve_pad(tile_pad, net) -> int:
    if tile_pad in (None, "auto"):
        return receptive_margin(net) if isinstance(net, (RRDBNet, SRVGGNetCompact)) else 16
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
        raise ValueError(
            f"tile={side} on {name} ({w}x{h}) gives {count} tiles: tiles must be at least {MIN_TILE} "
            f"pixels and at most {MAX_TILES} per image; use tile>={least}, tile=auto or tile=0"
        )


def upscale(
    net,
    img: Image,
    scale: int,
    device: torch.device,
    tile="auto",
    tile_pad="auto",
    precision: str = "fp32",
    alpha_upsampler: str = "bicubic",
    max_memory=None,
    outscale: float | None = None,
) -> np.ndarray:
    """Super-resolve one image; returns pixels in the input's layout (gray/RGB/RGBA) and bit depth.

    ``tile``: ``auto`` / 0 / a side in pixels, see :func:`plan_tile` (``max_memory``: its budget in GB).
    ``outscale``: the result is resized (bicubic) to ``outscale`` times the input, for weights that end with such a
    resize (Real-ESRGAN's ``realesr-animevideov3-x2`` / ``-x3``: its x4 network, then a bicubic downscale)."""
    if alpha_upsampler not in ("bicubic", "network"):
        raise ValueError(f"alpha_upsampler must be 'bicubic' or 'network', got {alpha_upsampler!r}")
    is_net = isinstance(net, torch.nn.Module)
    unit = unshuffle_factor(net) if is_net else 1
    h, w = img.size
    if h % unit or w % unit:
        raise ValueError(
            f"{img.path}: {w}x{h} is not divisible by {unit}, which this x{scale} network needs "
            "(pixel-unshuffle); crop or pad the image"
        )
    pad = _resolve_pad(tile_pad, net) if is_net else 0
    check_tile(tile, h, w, str(img.path))
    if isinstance(net, (RRDBNet, SRVGGNetCompact)):
        tile = plan_tile(net, h, w, tile, pad, torch.device(device), max_memory, name=str(img.path))
    else:
        tile = 0 if tile in (None, "auto") else int(tile)

    workers = plan_workers(
        net, h, w, int(tile or 0), pad, device, OUT_BYTES_PER_PIXEL * h * w * scale * scale, max_memory
    )

    def sr(x01: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(x01).permute(2, 0, 1)[None].to(device)
        if not is_net:
            y = net(x)
        else:
            y = tiled_forward(net, x, scale, int(tile or 0), pad, precision, unit, workers)
        if resize:
            y = F.interpolate(y.float(), size=resize, mode="bicubic", align_corners=False)
        return y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    resize = None
    if outscale is not None and float(outscale) != scale:
        resize = (max(1, round(h * float(outscale))), max(1, round(w * float(outscale))))
    out = sr(img.rgb01())
    if img.gray:
        return quantize(to_gray01(out), img.full)
    alpha = img.alpha01()
    if alpha is None:
        return quantize(out, img.full)
    if alpha_upsampler == "network" and is_net:
        a = to_gray01(sr(np.repeat(alpha[..., None], 3, axis=2)))
    else:
        a = imresize(torch.from_numpy(alpha)[None], scale)[0].clamp(0, 1)
        if resize:
            a = F.interpolate(a[None, None], size=resize, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
        a = a.numpy()
    return quantize(np.concatenate([out, a[..., None]], axis=2), img.full)


def upscale_tiles(
    net: torch.nn.Module,
    img: Image,
    scale: int,
    device: torch.device,
    tile: int,
    tile_pad="auto",
    precision: str = "fp32",
    outscale: float | None = None,
    progress=None,
) -> np.ndarray:
    """:func:`upscale` (bicubic alpha) with memory bounded by the tile (or the few small tiles that run at once,
    :func:`plan_workers`): each tile's result is quantised straight into
    the output array, which is the only output-sized buffer (3 or 4 bytes per output pixel at 8 bits; the alpha
    plane of an RGBA image is resized whole, 4 more bytes per output pixel); the input stays as decoded and is
    converted to float one tile at a time.  Equal to :func:`upscale` up to float rounding (±1 level) with ``tile_pad`` at least
    the receptive margin (``auto``).

    ``outscale`` (an integer, e.g. 2 or 3 for Real-ESRGAN's ``realesr-animevideov3-x2`` / ``-x3``): each tile is
    run one input pixel larger on every side, resized (bicubic, as :func:`upscale`) and cropped, so the resize sees
    the same neighbours as on the whole result.  ``progress(done, total)`` is called after each tile.
    """
    h, w = img.size
    unit = unshuffle_factor(net)
    if h % unit or w % unit:
        raise ValueError(
            f"{img.path}: {w}x{h} is not divisible by {unit}, which this x{scale} network needs "
            "(pixel-unshuffle); crop or pad the image"
        )
    o = scale if outscale is None else float(outscale)
    if o != int(o) or o < 1:
        raise ValueError(f"outscale must be a whole number >= 1 for tiled upscaling, got {outscale!r}")
    o = int(o)
    resize = o != scale
    tile = max(int(tile), MIN_TILE)
    tile = -(-tile // unit) * unit
    pad = -(-_resolve_pad(tile_pad, net) // unit) * unit
    r = unit if resize else 0  # input pixels of extra result around each tile for the resize's taps (>= 2 at x2)
    channels = 1 if img.gray else (4 if img.alpha01() is not None else 3)
    dtype = np.uint8 if img.full == 255.0 else np.uint16
    out = np.empty((h * o, w * o) + (() if channels == 1 else (channels,)), dtype)
    grid = tile_grid(h, w, tile)
    workers = plan_workers(net, h, w, tile, pad + r, device, out.nbytes)  # the alpha plane comes after the tiles

    def run(box):  # one tile's result as float RGB (on a worker thread when tiles run at once)
        y0, y1, x0, x1 = box
        ey0, ey1, ex0, ex1 = max(y0 - r, 0), min(y1 + r, h), max(x0 - r, 0), min(x1 + r, w)
        py0, py1, px0, px1 = max(ey0 - pad, 0), min(ey1 + pad, h), max(ex0 - pad, 0), min(ex1 + pad, w)
        x = Image(img.pixels[py0:py1, px0:px1], img.full, img.path).rgb01()  # float only for the tile
        y = run_net(net, torch.from_numpy(x).permute(2, 0, 1)[None].to(device), precision)
        y = y[..., (ey0 - py0) * scale : (ey1 - py0) * scale, (ex0 - px0) * scale : (ex1 - px0) * scale]
        if resize:  # the whole-image resize's coordinates: src = (dst + 0.5) * scale / o - 0.5
            y = F.interpolate(
                y.float(), scale_factor=o / scale, mode="bicubic", align_corners=False, recompute_scale_factor=False
            )
        y = y[..., (y0 - ey0) * o : (y1 - ey0) * o, (x0 - ex0) * o : (x1 - ex0) * o]
        return y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    for k, ((y0, y1, x0, x1), rgb) in enumerate(zip(grid, map_tiles(run, grid, workers))):
        if channels == 1:
            out[y0 * o : y1 * o, x0 * o : x1 * o] = quantize(to_gray01(rgb), img.full)
        else:
            out[y0 * o : y1 * o, x0 * o : x1 * o, :3] = quantize(rgb, img.full)
        if progress is not None:
            progress(k + 1, len(grid))
    if channels == 4:
        a = imresize(torch.from_numpy(img.alpha01())[None], scale)[0].clamp(0, 1)
        if resize:
            a = F.interpolate(a[None, None], size=(h * o, w * o), mode="bicubic", align_corners=False)[0, 0]
        out[..., 3] = quantize(a.clamp(0, 1).numpy(), img.full)
    return out
