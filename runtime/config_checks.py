"""Checks of a training config before anything is built or written (called by ``runtime.launch.check_config``).

Each check turns a mistake that would otherwise fail late, with an error naming nothing (``int('abc')``,
``ZeroDivisionError``, ``EOFError``), or not at all (a run of zero batches exiting 0), into a ``ValueError`` that
names the key or the file and the value.  The recipes check their own numbers (EMA decay, iterations, scheduler)
in their constructors; this module checks what belongs to the data, the trainer, and the resumed checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

#: Integer data settings: key -> smallest allowed value.
DATA_INTS = {
    "batch_size": 1,
    "val_batch_size": 1,
    "num_workers": 0,
    "gt_size": 1,
    "scale": 1,
    "resolution": 1,
    "dataset_enlarge_ratio": 1,
}


def as_int(value: Any, key: str, minimum: int | None = None) -> int:
    """``value`` as an int (``"8"`` from a command line included), else an error naming ``key``."""
    number = None
    if not isinstance(value, bool):
        try:
            f = float(value)
            number = int(f) if f == int(f) else None
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is None:
        raise ValueError(f"{key}={value!r} is not a whole number")
    if minimum is not None and number < minimum:
        raise ValueError(f"{key}={value!r} must be >= {minimum}")
    return number


def check_data(data: DictConfig) -> None:
    for key, minimum in DATA_INTS.items():
        if data.get(key) is not None:
            as_int(data[key], f"data.{key}", minimum)


def check_trainer(trainer: DictConfig) -> None:
    acc = trainer.get("accumulate_grad_batches")
    if acc is not None and not isinstance(acc, bool) and as_int(acc, "trainer.accumulate_grad_batches", 1) > 1:
        raise ValueError(
            f"trainer.accumulate_grad_batches={acc!r}: Lightning's accumulation does not apply to these GAN recipes "
            "(manual optimization: G and D step by hand). Use model.micro_batches instead: each batch of "
            "data.batch_size images then runs as that many micro-batches whose gradients add up before one step"
        )
    v = trainer.get("val_check_interval")
    # Strings and other types go to Lightning as they are: it takes "DD:HH:MM:SS" times and names the key itself.
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, int) and v < 1:
            raise ValueError(
                f"trainer.val_check_interval={v!r}: validation every {v} batches is impossible; "
                "give a number of batches >= 1 (BasicSR: 5000)"
            )
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"trainer.val_check_interval={v!r}: a float is a fraction of an epoch, in (0, 1]")


def read_checkpoint(path: str, what: str = "ckpt_path") -> dict:
    """The checkpoint at ``path`` (weights only, memory-mapped so that a large one costs little), or an error
    naming the file: missing, empty, truncated, not a torch file, or not a Lightning checkpoint."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}={path!r} does not exist")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{what}={path!r} is empty (0 bytes): an interrupted copy or save?")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # EOFError, UnpicklingError, zip errors: all mean "not readable"
        raise ValueError(
            f"{what}={path!r} ({size} bytes) is not a readable checkpoint (truncated or not a "
            f"torch file?): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{what}={path!r} is not a Lightning checkpoint of this project (no 'state_dict'; "
            f"found {keys}); to start from generator weights use model.init_weights"
        )
    return ckpt


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_resume_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path`` is a readable checkpoint whose generator is the one this run builds (same class and
    arguments): an SC-FEGAN checkpoint given to ``model=esrgan`` or an x2 one to an x4 run is refused here, with
    the differing values, instead of failing inside Lightning with a state-dict mismatch."""
    path = cfg.get("ckpt_path")
    if not path:
        return
    ckpt = read_checkpoint(str(path))
    hp = ckpt.get("hyper_parameters") or {}
    theirs, ours = hp.get("generator"), _plain(cfg.model.get("generator"))
    if hp.get("task") is not None and hp.get("task") != cfg.model.get("task"):
        raise ValueError(
            f"ckpt_path={path!r} is a {hp.get('task')!r} checkpoint "
            f"({(theirs or {}).get('_target_')}); this run is model task {cfg.model.get('task')!r}"
        )
    if isinstance(theirs, Mapping) and isinstance(ours, Mapping):
        if theirs.get("_target_") != ours.get("_target_"):
            raise ValueError(
                f"ckpt_path={path!r} holds generator {theirs.get('_target_')!r}; this run builds "
                f"{ours.get('_target_')!r} (wrong model=?)"
            )
        diff = {
            k: (theirs.get(k), ours.get(k))
            for k in sorted(set(theirs) | set(ours))
            if k != "_target_" and theirs.get(k) != ours.get(k)
        }
        if diff:
            text = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in diff.items())
            hint = " (data.scale sets the generator's scale)" if "scale" in diff else ""
            raise ValueError(
                f"ckpt_path={path!r} was trained with another generator: {text}{hint}; resume "
                "with the settings it was trained with"
            )


def check_learning_rates(node, prefix: str = "model") -> None:
    """Every learning rate in the model config (keys ``lr``, ``lr_g``, ``lr_d``) is a finite number > 0: a NaN or
    negative one otherwise ends in torch's traceback (or trains uphill) without the key."""
    import math

    from omegaconf import DictConfig as _D

    if not isinstance(node, (dict, _D)):
        return
    for key in node:
        value = node.get(key) if isinstance(node, dict) else OmegaConf.select(node, str(key), throw_on_missing=False)
        name = f"{prefix}.{key}"
        if isinstance(value, (dict, _D)):
            check_learning_rates(value, name)
        elif key in ("lr", "lr_g", "lr_d") and value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            if not ok:
                raise ValueError(f"{name}={value!r}: a learning rate must be a finite number > 0")


#: The config folder: the options of the model's config groups (conf/model/generator/*.yaml ...).
CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def check_model_groups(model) -> None:
    """``model.generator=srvgg_compact`` (a dot) sets the value of ``model.generator`` to that string, which
    would fail later with a message about a mapping; Hydra picks a nested group's option with a slash,
    ``model/generator=srvgg_compact``.  Said here, naming both spellings."""
    if not isinstance(model, (DictConfig, Mapping)):
        return
    for key in model:
        value = model.get(key)
        if isinstance(value, str) and os.path.isfile(os.path.join(CONF_DIR, "model", str(key), f"{value}.yaml")):
            raise ValueError(
                f"model.{key}={value!r} sets model.{key} to a string; to choose the config group option write "
                f"model/{key}={value} (Hydra: a slash picks a nested group's option, a dot sets a value)"
            )


def check_micro_batches(cfg: DictConfig) -> None:
    """``model.micro_batches`` (gradient accumulation) divides ``data.batch_size``."""
    n = cfg.model.get("micro_batches") if cfg.get("model") is not None else None
    if n is None:
        return
    n = as_int(n, "model.micro_batches", 1)
    batch = cfg.data.get("batch_size")
    if batch is not None and as_int(batch, "data.batch_size", 1) % n:
        raise ValueError(
            f"model.micro_batches={n} must divide data.batch_size={batch}: each optimizer step accumulates "
            f"{n} equal micro-batches of the batch (e.g. data.batch_size={n * max(1, int(batch) // n)})"
        )


def check_train_config(cfg: DictConfig) -> None:
    check_model_groups(cfg.get("model"))
    check_learning_rates(cfg.get("model"))
    check_data(cfg.data)
    check_trainer(cfg.trainer)
    check_micro_batches(cfg)
    check_resume_checkpoint(cfg)
