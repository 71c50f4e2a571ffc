"""What the GAN recipes share: iteration counting in batches, named optimizers, freezing a network for
the other network's step, and checkpoints without the frozen loss networks."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def to_primitive(x):
    """OmegaConf containers -> plain dicts/lists, so checkpoints load with weights_only=True."""
    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


class IterationGANModule(LightningModule):
    """Base for recipes that count training in batches (``self.iteration``) and use manual optimization.

    Subclasses fill ``self._opt_index`` (name -> optimizer position) in ``configure_optimizers``, set
    ``frozen_prefixes`` to the state-dict prefixes of frozen loss networks (rebuilt from their own weight
    files, not stored in checkpoints), and define ``total_iters``.
    """

    frozen_prefixes: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False  # G and D alternate; Lightning 2 needs manual mode for that
        # Lightning's global_step counts optimizer steps (2+ per GAN batch), so the recipe keeps its own
        # count of batches; it is saved in checkpoints and drives every schedule.
        self.iteration = 0
        self._opt_index: dict[str, int] = {}
        self.val_samples: dict[str, torch.Tensor] = {}

    @property
    def total_iters(self) -> int:
        raise NotImplementedError

    def _opt(self, name: str):
        """(LightningOptimizer, scheduler) registered under ``name``."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        scheds = self.lr_schedulers() or []
        scheds = scheds if isinstance(scheds, list) else [scheds]
        i = self._opt_index[name]
        return opts[i], (scheds[i] if i < len(scheds) else None)

    @contextmanager
    def frozen(self, net: torch.nn.Module):
        """No gradients for ``net`` inside the block; its requires_grad flags are restored after."""
        flags = [p.requires_grad for p in net.parameters()]
        net.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(net.parameters(), flags):
                p.requires_grad_(f)

    def on_train_start(self) -> None:
        if self.iteration >= self.total_iters:
            self.trainer.should_stop = True

    def end_iteration(self, logs: dict, batch_size: int, extra: dict | None = None) -> None:
        """Count the batch, log ``train/*`` and ``iter``, and stop after the last one."""
        self.iteration += 1
        metrics = {f"train/{k}": v for k, v in logs.items()}
        metrics["iter"] = float(self.iteration)
        metrics.update(extra or {})
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=batch_size)
        if self.iteration >= self.total_iters:
            self.trainer.should_stop = True  # Lightning still runs the final validation first

    @rank_zero_only
    def log_validation_summary(self, values: dict) -> None:
        """One line per validation in train.log (the progress bar is not written to files)."""
        text = ", ".join(f"{k} {float(v):.4f}" for k, v in values.items())
        log.info(f"iter {self.iteration}: {text}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["iteration"] = self.iteration
        if self.frozen_prefixes:
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(self.frozen_prefixes)
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.iteration = int(checkpoint.get("iteration", 0))
        if self.frozen_prefixes:
            own = self.state_dict()
            checkpoint["state_dict"].update({k: v for k, v in own.items() if k.startswith(self.frozen_prefixes)})
