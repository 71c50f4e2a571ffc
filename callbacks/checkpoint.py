"""``ModelCheckpoint`` whose ``last.ckpt`` follows every validation.

Lightning 2.6 saves ``last.ckpt`` at the end of a validation only when a top-k checkpoint was saved in the same
step ("Only save last checkpoint if a checkpoint was actually saved in this step"), i.e. only when the monitored
metric improved; otherwise ``last.ckpt`` keeps an older state, and resuming (or a requeued SLURM job) would go
back to it.  Here ``last.ckpt`` is written after every validation.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint


class LastEveryValidationCheckpoint(ModelCheckpoint):
    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if (self.save_last and not self._should_skip_saving_checkpoint(trainer)
                and not self._should_save_on_train_epoch_end(trainer)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
