"""Image grids as uint8 (wandb renders float images black; PIL writes uint8)."""

from __future__ import annotations

import torch


def to_uint8_image(x: torch.Tensor) -> torch.Tensor:
    """[C,H,W] float in [0,1] (C = 1 or 3) -> HxWx3 uint8."""
    x = x.detach().float().clamp(0, 1).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def uint8_grid(columns: list[torch.Tensor]) -> torch.Tensor:
    """Side-by-side images ([C,H,W] floats in [0,1]) as one uint8 HxWx3 tensor."""
    return torch.cat([to_uint8_image(c) for c in columns], dim=1)


def synthesis_grid(batch: dict, n: int = 4) -> torch.Tensor:
    """One row per sample of a synthesised SC-FEGAN batch (images in [-1, 1]):
    image | masked input | mask | sketch | colour | noise."""
    rows = []
    for i in range(min(n, batch["image"].shape[0])):
        m = batch["mask"][i]
        img = (batch["image"][i] + 1) / 2
        color = torch.where(m > 0.5, (batch["color"][i] + 1) / 2, torch.zeros_like(img))
        noise = (batch["noise"][i] - batch["noise"][i].min()) / (
            batch["noise"][i].max() - batch["noise"][i].min() + 1e-8
        )
        rows.append(uint8_grid([img, img * (1 - m) + m, m, batch["sketch"][i], color, noise]))
    return torch.cat(rows, dim=0)


#: Height of the label strip above a :func:`labelled_grid` (PIL's default bitmap font is ~11 px high).
LABEL_HEIGHT = 14


def labelled_grid(rows: list[list[torch.Tensor]], labels: list[str], max_side: int = 512) -> torch.Tensor:
    """Rows of images ([C,H,W] floats in [0,1], or HxWx3 uint8; sizes may differ between rows) as one uint8 HxWx3
    grid, each image in a cell of the largest size (top-left, black padding) so that columns line up under a strip
    naming them.  Images longer than ``max_side`` are shrunk to it (area averaging): 8 rows of 2K DIV2K validation
    images would otherwise make a 265 MB grid."""
    import numpy as np
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("labelled_grid: no rows")
    if any(len(r) != len(labels) for r in rows):
        raise ValueError(f"labelled_grid: every row needs {len(labels)} images ({' | '.join(labels)})")
    tiles = [[_fit(x.cpu() if x.dtype == torch.uint8 else to_uint8_image(x), max_side) for x in r] for r in rows]
    cell_h = max(t.shape[0] for r in tiles for t in r)
    cell_w = max(t.shape[1] for r in tiles for t in r)
    out = torch.zeros(LABEL_HEIGHT + cell_h * len(rows), cell_w * len(labels), 3, dtype=torch.uint8)
    for i, r in enumerate(tiles):
        for j, t in enumerate(r):
            y, x = LABEL_HEIGHT + i * cell_h, j * cell_w
            out[y : y + t.shape[0], x : x + t.shape[1]] = t
    canvas = Image.fromarray(out.numpy())
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(labels):
        draw.text((j * cell_w + 2, 1), label, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(canvas).copy())


def _fit(tile: torch.Tensor, max_side: int) -> torch.Tensor:
    h, w = tile.shape[:2]
    if max(h, w) <= max_side:
        return tile
    import cv2

    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return torch.from_numpy(cv2.resize(tile.numpy(), size, interpolation=cv2.INTER_AREA))
