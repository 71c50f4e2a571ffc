"""The OmegaConf resolvers the configs use, registered by :func:`register` (train.py calls it before Hydra
composes the config; runtime.training.train calls it again for processes that did not run train.py)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def bf16_if_supported(accelerator: str = "auto") -> str:
    """``bf16-mixed`` on CUDA GPUs with native bf16 (Ampere and newer), else ``32-true`` (CPU, V100, T4)."""
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        try:
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return "bf16-mixed"
        except TypeError:  # older torch: no including_emulation
            if torch.cuda.get_device_capability()[0] >= 8:
                return "bf16-mixed"
    return "32-true"


def cuda_device_count() -> int:
    return max(1, torch.cuda.device_count())


def register() -> None:
    # conf/trainer/{gpu,ddp}.yaml: precision: ${bf16_if_supported:${.accelerator}}
    OmegaConf.register_new_resolver("bf16_if_supported", bf16_if_supported, replace=True)
    # conf/hydra/launcher/joblib_gpus.yaml: n_jobs: ${cuda_device_count:}
    OmegaConf.register_new_resolver("cuda_device_count", cuda_device_count, replace=True)
