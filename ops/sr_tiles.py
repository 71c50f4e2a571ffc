"""Tiled forward passes of the SR networks (RRDBNet, SRVGGNetCompact): the receptive margin and ``tiled_forward``.

Used by predict.py / the app (inference/tiling.py, which plans the tile against a memory budget) and by the SR
recipes' tiled validation (``model.val_tile``).  With ``tile_pad`` at least :func:`receptive_margin` the tiled
result equals the untiled one up to float rounding."""

import torch

from archs.rrdbnet import RRDBNet
from archs.srvgg import SRVGGNetCompact
from ops.tile_threads import map_tiles


@torch.no_grad()
def _run(net: torch.nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """``net(x)`` under bf16 autocast when asked (weights stay fp32); the result is float32 (inference.device.run_net)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = net(x)
    return y.float()


def unshuffle_factor(net: torch.nn.Module) -> int:
    return {4: 1, 2: 2, 1: 4}[net.scale] if isinstance(net, RRDBNet) else 1


def image_channels(net: torch.nn.Module) -> tuple[int, int]:
    """(image channels in, image channels out) of an SR network (RRDBNet's first conv sees the unshuffled input)."""
    if isinstance(net, SRVGGNetCompact):
        return net.num_in_ch, net.num_out_ch
    return net.conv_first.in_channels // unshuffle_factor(net) ** 2, net.conv_last.out_channels


def receptive_margin(net: torch.nn.Module) -> int:
    """Input pixels around an output pixel's source pixel that can change it (exact bound).

    SRVGGNetCompact: every one of its ``num_conv + 2`` 3x3 convs works at the input resolution and adds one pixel;
    the pixel shuffle and the nearest-upsampled residual add none: ``num_conv + 2`` (18 for animevideov3).

    In body coordinates: conv_first 1 + 3 RDBs x 5 chained convs per RRDB + conv_body 1, then the upsampling
    part (conv_up1 at x2, conv_up2 / conv_hr / conv_last at x4, nearest upsampling between) adds 2:
    ``15 * num_block + 4``, times the pixel-unshuffle factor for x2 / x1 networks: 349 input pixels for the
    23-block ESRGAN x4.
    """
    if isinstance(net, SRVGGNetCompact):
        return net.num_conv + 2
    if not isinstance(net, RRDBNet):
        raise TypeError(f"receptive_margin: no rule for {type(net).__name__}")
    return unshuffle_factor(net) * (15 * len(net.body) + 4)


def tile_grid(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the ``tile`` x ``tile`` input tiles covering an h x w image, row by row."""
    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in range(0, h, tile) for x in range(0, w, tile)]


def tiled_forward(
    net: torch.nn.Module,
    x: torch.Tensor,
    scale: int,
    tile: int = 0,
    tile_pad: int = 0,
    precision: str = "fp32",
    unit: int = 1,
    workers: int = 1,
) -> torch.Tensor:
    """``net(x)`` for an x``scale`` super-resolution network, through ``tile`` x ``tile`` input tiles.

    Each tile is run with ``tile_pad`` input pixels of context on every side (clipped at the image border, where
    the network's own zero padding then applies as on the whole image) and only its core is kept.  With
    ``tile_pad >= receptive_margin(net)`` every kept pixel sees exactly what it sees on the whole image.
    ``unit``: tiles and pads are rounded up to multiples of it (the pixel-unshuffle factor of x2 / x1 nets).
    ``workers``: tiles run at once on the CPU, one thread each (ops/tile_threads.py; each holds its activations).
    """
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return _run(net, x, precision)
    tile = -(-tile // unit) * unit
    tile_pad = -(-tile_pad // unit) * unit
    boxes = [
        (y0, y1, x0, x1, max(y0 - tile_pad, 0), min(y1 + tile_pad, h), max(x0 - tile_pad, 0), min(x1 + tile_pad, w))
        for y0, y1, x0, x1 in tile_grid(h, w, tile)
    ]

    def run(box):
        _, _, _, _, py0, py1, px0, px1 = box
        return _run(net, x[..., py0:py1, px0:px1], precision)

    out = None
    for (y0, y1, x0, x1, py0, _, px0, _), y in zip(boxes, map_tiles(run, boxes, workers)):
        if out is None:
            out = y.new_zeros(y.shape[0], y.shape[1], h * scale, w * scale)
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = y[
            ..., oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
        ]
    return out
