"""The generator an evaluation scores: read from a checkpoint, weights file or export through the allow-list."""

import os

import torch
from omegaconf import DictConfig, OmegaConf

from weights.io import build_generator

# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------


def prefer_key(cfg: DictConfig) -> str:
    return "params_ema" if cfg.get("use_ema", True) else "params"


def task_kind(cfg: DictConfig) -> str:
    return {"sr": "esrgan", "faces": "scfegan"}.get(cfg.model.get("task"), "auto")


def read_generator(cfg: DictConfig, path: str):
    """``(generator on the CPU, GeneratorFile)`` of ``path`` through :func:`weights.io.build_generator`: the
    architecture the file records (a ``.ckpt``'s ``hyper_parameters.generator``, an export's metadata) only if it
    is one of the project's (archs.registry.ARCHITECTURES, primitive arguments), else read off the tensors, with
    ``cfg.model.generator`` for what tensors cannot tell.  A file naming anything else is refused, unbuilt."""
    defaults = OmegaConf.to_container(cfg.model.generator, resolve=True) if cfg.model.get("generator") else None
    net, info = build_generator(
        os.path.expanduser(str(path)), kind=task_kind(cfg), prefer=prefer_key(cfg), defaults=defaults
    )
    if task_kind(cfg) == "esrgan" and cfg.get("data") is not None and cfg.data.get("scale") is not None:
        if int(net.scale) != int(cfg.data.scale):
            raise ValueError(
                f"{path!r} is an x{net.scale} generator but data.scale={cfg.data.scale}: give "
                f"data.scale={net.scale} (or the x{cfg.data.scale} weights)"
            )
    return net, info


def load_generator(cfg: DictConfig, path: str, device: torch.device) -> torch.nn.Module:
    return read_generator(cfg, path)[0].eval().to(device)
