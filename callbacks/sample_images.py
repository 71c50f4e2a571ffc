"""Writes the validation sample grids a LightningModule collects to PNG files and to the loggers.

A module exposes ``val_samples`` (name -> uint8 HxWx3 tensor) and ``sample_caption`` (what the columns
are).  PNGs go to ``dirpath`` whatever the logger, so every run leaves images a person can open.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only


class SampleImageWriter(Callback):
    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        samples: dict = getattr(pl_module, "val_samples", {}) or {}
        if not samples or trainer.sanity_checking:
            return
        os.makedirs(self.dirpath, exist_ok=True)
        iteration = int(getattr(pl_module, "iteration", trainer.global_step))
        caption = getattr(pl_module, "sample_caption", "")
        for name, grid in samples.items():
            img = grid.cpu().numpy() if hasattr(grid, "cpu") else np.asarray(grid)
            if img.dtype != np.uint8:
                raise TypeError(f"sample grid {name!r} must be uint8 (wandb renders float images black)")
            Image.fromarray(img).save(os.path.join(self.dirpath, f"iter{iteration:07d}_{name}.png"))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"samples/{name}", images=[img], caption=[caption])
        samples.clear()
