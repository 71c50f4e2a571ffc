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
