"""Learning-rate schedules of the BasicSR recipe (``basicsr/models/lr_scheduler.py``).

Both are stepped once per iteration (BasicSR ``base_model.update_learning_rate``), so ``last_epoch`` counts iterations.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, StepLR


class CosineAnnealingRestartLR(LRScheduler):
    """Cosine annealing with restarts: periods ``[T1, T2, ...]`` each starting at ``w_i * base_lr``.

    lr(t) = eta_min + w_i * (base - eta_min) * (1 + cos(pi * (t - restart_i) / T_i)) / 2
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        periods: list[int],
        restart_weights: list[float] | None = None,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.periods = list(periods)
        self.restart_weights = list(restart_weights) if restart_weights is not None else [1.0] * len(periods)
        if len(self.periods) != len(self.restart_weights):
            raise ValueError(
                f"cosine_restart: periods ({len(self.periods)}) and restart_weights "
                f"({len(self.restart_weights)}) must have the same length"
            )
        self.eta_min = eta_min
        self.cumulative_period = [sum(self.periods[: i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        # BasicSR get_position_from_periods: the first period whose cumulative end is >= t.
        idx = next((i for i, end in enumerate(self.cumulative_period) if t <= end), len(self.periods) - 1)
        restart = 0 if idx == 0 else self.cumulative_period[idx - 1]
        w, period = self.restart_weights[idx], self.periods[idx]
        cos = 1 + math.cos(math.pi * min(t - restart, period) / period)
        return [self.eta_min + w * 0.5 * (base - self.eta_min) * cos for base in self.base_lrs]


#: Scheduler names of the recipes, with the settings each takes (for error messages).
SCHEDULERS = {
    "cosine_restart": "{periods: [...], restart_weights: [...], eta_min: ...}",
    "step": "{step_size: ..., gamma: ...}",
    "multistep": "{milestones: [...], gamma: ...}",
}


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, cfg: dict) -> LRScheduler:
    """``name``: cosine_restart (BasicSR stage 1), step (paper stage 1), multistep (stage 2)."""
    if name == "cosine_restart":
        return CosineAnnealingRestartLR(optimizer, **cfg)
    if name == "step":
        return StepLR(optimizer, step_size=cfg["step_size"], gamma=cfg["gamma"])
    if name == "multistep":
        return MultiStepLR(optimizer, milestones=list(cfg["milestones"]), gamma=cfg["gamma"])
    raise ValueError(f"unknown scheduler {name!r}; expected cosine_restart, step or multistep")
