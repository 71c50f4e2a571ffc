"""Rich progress bar for iteration-based recipes: Lightning's reads ``Epoch 0/-2`` with ``max_epochs=-1`` (the
recipes stop on their iteration count, trainer.max_steps); this one says the epoch and the run's iteration budget."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class IterationProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        total = getattr(self.trainer.lightning_module, "total_iters", None)
        if total:
            text += f" (run: {total} iterations)"
        if len(self.validation_description) > len(text):  # as Lightning: no flicker against "Validation"
            text = f"{text:{len(self.validation_description)}}"
        return text
