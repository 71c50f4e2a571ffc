"""Writes the validation sample grids a LightningModule collects to PNG files and to the loggers, and logs the
per-image validation table to wandb.

A module exposes ``val_sample_rows`` (grid name -> rows of uint8 HxWx3 images, the first validation images of the
whole set, capped; gathered from every rank)
and ``sample_labels`` (the columns); each grid is drawn with the labels above its columns (ops/image_grid.py).  PNGs go to ``dirpath`` whatever the logger, so every run leaves images a person can open.  A module may
also expose ``val_table``: one dict per validation image (``image`` name, optional ``folder``, metrics),
gathered from every rank; it is logged as a ``wandb.Table`` under ``val/per_image``.

wandb rows carry ``iter`` (batches) and ``trainer/global_step`` (WandbLogger's x-axis, which counts batches
from 0: Lightning's logger step, not its ``global_step``, which counts G and D optimizer steps).
"""

from __future__ import annotations

import os

from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from ops.image_grid import labelled_grid


def _logger_step(trainer: Trainer) -> int:
    """The step Lightning passes to ``log_metrics`` (batches that stepped, from 0)."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


class SampleImageWriter(Callback):
    def __init__(self, dirpath: str, log_table: bool = True) -> None:
        self.dirpath = dirpath
        self.log_table = log_table

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After the module's on_validation_epoch_end, which gathers the rows and the table from every rank
        # (Lightning calls the callbacks' on_validation_epoch_end before the module's).
        self.write_grids(trainer, pl_module)
        self.log_val_table(trainer, pl_module)

    def write_grids(self, trainer: Trainer, pl_module: LightningModule) -> None:
        samples: dict = getattr(pl_module, "val_sample_rows", {}) or {}
        if not samples or trainer.sanity_checking:
            return
        os.makedirs(self.dirpath, exist_ok=True)
        iteration = int(getattr(pl_module, "iteration", trainer.global_step))
        labels = list(getattr(pl_module, "sample_labels", []) or [])
        caption = " | ".join(labels)
        for name, rows in samples.items():
            if not rows:
                continue
            img = labelled_grid(rows, labels or [""] * len(rows[0])).numpy()
            Image.fromarray(img).save(os.path.join(self.dirpath, f"iter{iteration:07d}_{name}.png"))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    import wandb

                    logger.experiment.log(
                        {
                            f"samples/{name}": wandb.Image(img, caption=caption),
                            "iter": iteration,
                            "trainer/global_step": _logger_step(trainer),
                        }
                    )
        samples.clear()

    def log_val_table(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows: list = getattr(pl_module, "val_table", None) or []
        if not rows or trainer.sanity_checking or not self.log_table:
            return
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        import wandb

        columns = list(dict.fromkeys(k for r in rows for k in r))
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        iteration = int(getattr(pl_module, "iteration", trainer.global_step))
        for logger in wandb_loggers:
            logger.experiment.log(
                {"val/per_image": table, "iter": iteration, "trainer/global_step": _logger_step(trainer)}
            )
