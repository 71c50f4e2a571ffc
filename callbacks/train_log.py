"""A training-loss line in the console and in ``train.log`` every ``trainer.log_every_n_steps`` batches.

Between validations the Rich progress bar is the only sign of life, and it is not in train.log (a 30-iteration face
run printed nothing for 19 minutes; issue 15).  The recipes log ``train/*`` on the logging steps only
(lightning_modules/base.py ``end_iteration``); this prints those values, read once per logging step, so the
steps in between still read nothing back from the device.
"""

from __future__ import annotations

import logging
import time

import torch
from pytorch_lightning import Callback

log = logging.getLogger(__name__)


class TrainLossLog(Callback):
    def __init__(self) -> None:
        self._last_iter: int | None = None
        self._t0: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = max(1, int(trainer.log_every_n_steps or 1))
        iteration = int(getattr(pl_module, "iteration", trainer.global_step))
        if not trainer.is_global_zero or iteration % every or iteration == self._last_iter:
            return
        self._last_iter = iteration
        values = {
            k[len("train/") :]: v
            for k, v in trainer.callback_metrics.items()
            if k.startswith("train/") and torch.is_tensor(v) and v.numel() == 1
        }
        if not values:
            return
        total = getattr(pl_module, "total_iters", None)
        elapsed = time.monotonic() - (self._t0 or time.monotonic())
        parts = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(values.items()))
        log.info(f"iter {iteration}{f'/{total}' if total else ''} ({elapsed:.0f} s): {parts}")
