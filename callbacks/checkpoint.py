"""``ModelCheckpoint`` whose ``last.ckpt`` follows every validation.

Lightning 2.6 saves ``last.ckpt`` at the end of a validation only when a top-k checkpoint was saved in the same
step ("Only save last checkpoint if a checkpoint was actually saved in this step"), i.e. only when the monitored
metric improved; otherwise ``last.ckpt`` keeps an older state, and resuming (or a requeued SLURM job) would go
back to it.  Here ``last.ckpt`` is written after every validation.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class LastEveryValidationCheckpoint(ModelCheckpoint):
    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and not self._should_save_on_train_epoch_end(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class StageCheckpoint(LastEveryValidationCheckpoint):
    """Best checkpoint **per recipe stage**, for modules with ``checkpoint_rule()`` (ESRGAN); others as above.

    ``pl_module.checkpoint_rule()`` returns ``(stage, monitor, mode)`` for the stage being trained: ``monitor`` None
    keeps the stage's latest state (no metric selects it), ``mode`` None takes this callback's ``mode``.  Each stage
    has its own top-k (files ``<stage>_<filename>``, or ``<stage>_latest_iter<N>`` for latest-state stages), so a
    better PSNR-Y in stage 1 never outranks the stage-2 GAN model, and the stage-1 best stays on disk after the
    switch.  ``best_model_path`` / ``best_model_score`` are the current (finally: the last) stage's;
    ``stage_results`` holds every stage's ``{path, monitor, mode, score}`` (``monitor: null`` = latest state), for
    result.json.  All of it is saved in checkpoints and restored on resume.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._base_filename = self.filename
        self._base_mode = self.mode
        # Fixed at construction: switching the monitor per stage must not change where resume finds our state.
        self._state_key = super().state_key
        self.stage: str | None = None
        self.stage_results: dict[str, dict] = {}

    @property
    def state_key(self) -> str:
        return self._state_key

    def _stage_filename(self, stage: str, monitor: str | None) -> str:
        base = self._base_filename or "iter{iter:07.0f}"
        if monitor is None:  # no "best" in the name of a file no metric chose
            return f"{stage}_latest_{base.replace('best_', '', 1)}"
        return f"{stage}_{base}"

    def _enter_stage(self, stage: str, monitor: str | None, mode: str | None) -> None:
        """Start a fresh top-k for ``stage`` (files of earlier stages are no longer candidates for deletion)."""
        self.stage = stage
        self.monitor = monitor
        self.mode = mode or self._base_mode
        self.filename = self._stage_filename(stage, monitor)
        self.best_k_models = {}
        self.kth_best_model_path = ""
        self.best_model_score = None
        self.best_model_path = ""
        self.current_score = None
        self.kth_value = torch.tensor(float("inf") if self.mode == "min" else -float("inf"))

    def on_validation_end(self, trainer, pl_module) -> None:
        # The recipe's rule (lightning_modules/base.py RecipeContract.checkpoint_rule; None: one selection for the
        # whole run).  Any other LightningModule: Lightning's ModelCheckpoint as configured.
        rule_of = getattr(pl_module, "checkpoint_rule", None)
        rule = rule_of() if rule_of is not None else None
        if rule is None or self._should_skip_saving_checkpoint(trainer):
            super().on_validation_end(trainer, pl_module)
            return
        stage, monitor, mode = rule
        if stage != self.stage:
            self._enter_stage(stage, monitor, mode)
        super().on_validation_end(trainer, pl_module)
        self._record_stage()

    def _record_stage(self) -> None:
        if self.stage is None or not self.best_model_path:
            return
        score = self.best_model_score
        self.stage_results[self.stage] = {
            "path": self.best_model_path,
            "monitor": self.monitor,
            "mode": self.mode if self.monitor else None,
            "score": float(score) if score is not None and self.monitor else None,
        }

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # best_model_path/score are updated before each save: record them first, so that the file's own callback
        # state already names it (ddp_gan_spawn's main process reads stage_results from the files).
        self._record_stage()
        super()._save_checkpoint(trainer, filepath)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(stage=self.stage, stage_results=self.stage_results, mode=self.mode, filename=self.filename)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("stage") is not None:
            self.stage = state_dict["stage"]
            self.monitor = state_dict.get("monitor", self.monitor)
            self.mode = state_dict.get("mode", self.mode)
            self.filename = state_dict.get("filename", self.filename)
        self.stage_results = dict(state_dict.get("stage_results") or {})
        super().load_state_dict(state_dict)
