"""Before and around the Trainer: config checks, the processes asked for, the strategy chosen, multirun + DDP,
a GPU per joblib job (file locks), SLURM requeue, and whose run folder this is."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Trainer

from runtime import run_lock
from runtime.config_checks import check_train_config
from runtime.sweeps import ddp_launch_problem, devices_per_node, launcher_name

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Clear errors for combinations Hydra cannot catch itself (unknown keys it already rejects)."""
    if cfg.model.get("task") != cfg.data.get("task"):
        raise ValueError(
            f"model={cfg.model.get('task')!r} task does not match data={cfg.data.get('task')!r}: "
            "ESRGAN needs an SR data config (div2k, sr_shared, sr_demo), SC-FEGAN a face config "
            "(celeba_hq, celebamask_mini, faces_demo)"
        )
    if cfg.get("ckpt_path") and not os.path.isfile(cfg.ckpt_path):
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} does not exist")
    check_train_config(cfg)  # data / trainer numbers and the resumed checkpoint, naming the key or the file
    check_objective(cfg)
    check_devices(cfg)
    if cfg.trainer.get("sync_batchnorm") and str(cfg.trainer.get("accelerator", "auto")) == "cpu":
        raise ValueError(
            "trainer.sync_batchnorm=true works on GPUs only (torch's SyncBatchNorm); leave it false for CPU processes"
        )


def objective_of(cfg: DictConfig) -> tuple[str | None, str | None]:
    """(metric key, maximize | minimize | None) that sweeps rank by: ``objective.*``, else ``model.monitor``."""
    obj = cfg.get("objective") or {}
    key, direction = obj.get("key") or cfg.model.get("monitor"), obj.get("direction")
    if direction is None and obj.get("key") and any(m in str(key) for m in LOWER_IS_BETTER):
        direction = "minimize"  # not the checkpoint monitor's mode (PSNR: maximize)
    return key, direction


#: Metrics for which lower is better: an objective.key naming one minimizes unless objective.direction says otherwise.
LOWER_IS_BETTER = ("lpips", "fid", "kid", "niqe")

#: Objectives computed over the whole validation set, only when it is large enough (model.val_fid.min_images).
FID_OBJECTIVES = ("val/fid", "val/kid")


def validation_set_size(datamodule) -> int:
    """Images of the first validation set (the one validation FID/KID uses), read from the data module."""
    datamodule.setup("validate")
    sets = getattr(datamodule, "val_sets", None)
    if sets is not None:
        return len(sets[0]) if sets else 0
    val_set = getattr(datamodule, "val_set", None)
    return len(val_set) if val_set is not None else 0


def check_objective_set_size(cfg: DictConfig, datamodule) -> None:
    """Before training: an objective of FID/KID needs a validation set of at least ``model.val_fid.min_images``
    (below it validation does not compute them, and every job of a sweep would rank as NaN)."""
    key, _ = objective_of(cfg)
    if key not in FID_OBJECTIVES:
        return
    need = max(2, int((cfg.model.get("val_fid") or {}).get("min_images", 50)))
    n = validation_set_size(datamodule)
    if n < need:
        raise ValueError(
            f"objective.key={key}: the validation set has {n} images, fewer than model.val_fid.min_images={need}, so "
            "validation computes no FID/KID (strongly biased on small sets). Validate on a larger set, or rank by "
            "val/lpips (objective.key=val/lpips objective.direction=minimize model.val_lpips.enabled=true)"
        )


def check_objective(cfg: DictConfig) -> None:
    """Before training: the objective's direction is known and its metric will be logged."""
    key, direction = objective_of(cfg)
    if direction not in (None, "maximize", "minimize"):
        raise ValueError(f"objective.direction={direction!r}: use maximize or minimize")
    if key in FID_OBJECTIVES and not (cfg.model.get("val_fid") or {}).get("enabled", False):
        raise ValueError(
            f"objective.key={key} needs model.val_fid.enabled=true (FID/KID in validation, with "
            "model.val_fid.inception_weights) and a validation set of at least model.val_fid.min_images images"
        )
    if key == "val/lpips" and not (cfg.model.get("val_lpips") or {}).get("enabled", False):
        other = cfg.model.get("monitor") or "val/psnr_y"
        raise ValueError(
            "objective.key=val/lpips needs model.val_lpips.enabled=true (LPIPS in validation); or rank by another "
            f"metric: objective.key={other} objective.direction=maximize"
        )


#: Data keys naming folders that must exist: (key, needed when) - training reads these, test_after_train test_dirs.
DATA_FOLDER_KEYS = ("train_dirs", "lr_train_dirs", "val_dirs", "image_dir", "label_dir")
#: Model keys naming a weights file, unless they hold a keyword (imagenet, auto, random: no "/" and no ".").
WEIGHTS_KEYS = (
    "init_weights",
    "perceptual.weights",
    "vgg_weights",
    "val_lpips.backbone_weights",
    "val_fid.inception_weights",
)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    return list(value)


def check_inputs(cfg: DictConfig) -> None:
    """Before any process is spawned (issue 15 item 3): the data folders and weights files the config names exist,
    so that a typo stops here with the key and the path, not in every DDP rank minutes later."""
    keys = DATA_FOLDER_KEYS if cfg.get("train", True) else ()
    if cfg.get("test_after_train"):
        keys = (*keys, "test_dirs")
    for key in keys:
        for folder in _as_list(OmegaConf.select(cfg.data, key, default=None)):
            if not os.path.isdir(str(folder)):
                what = "is not a folder" if os.path.exists(str(folder)) else "does not exist"
                raise FileNotFoundError(f"data.{key}: {str(folder)!r} {what}")
    for key in WEIGHTS_KEYS:
        value = OmegaConf.select(cfg.model, key, default=None)
        block = key.split(".", 1)[0]
        if block in ("val_lpips", "val_fid") and not (cfg.model.get(block) or {}).get("enabled", False):
            continue  # off: not read
        if not isinstance(value, str) or not value or ("/" not in value and "." not in value):
            continue  # null or a keyword (imagenet, auto, random)
        if not os.path.isfile(value):
            what = "is not a file" if os.path.exists(value) else "does not exist"
            raise FileNotFoundError(f"model.{key}: {value!r} {what}")


def check_devices(cfg: DictConfig) -> None:
    """Before any process is spawned: the processes asked for exist here (issue 15).  ``trainer.devices=N`` with
    no GPU would otherwise start N gloo CPU processes; more CPU processes than cores only thrash, unless
    ``allow_cpu_oversubscribe=true`` says it is meant (e.g. a DDP test)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto") or "auto").lower()
    if int(cfg.trainer.get("num_nodes", 1) or 1) > 1 or os.environ.get("LOCAL_RANK") is not None:
        return  # a cluster launcher placed the processes; Lightning checks the local devices itself
    n = devices_per_node(cfg.trainer)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    if accelerator in ("gpu", "cuda") and n > 1 and n > gpus:  # one missing GPU: Lightning's own error
        raise ValueError(f"trainer.devices asks for {n} GPU process(es) but this machine has {gpus} GPU(s)")
    if accelerator == "auto" and gpus == 0 and n > 1:
        raise ValueError(
            f"trainer.devices={cfg.trainer.get('devices')} with trainer.accelerator=auto and no GPU here "
            f"would start {n} CPU processes; set trainer.accelerator=cpu to run CPU processes (gloo), "
            "or run on a machine with the GPUs"
        )
    if (
        (accelerator == "cpu" or (accelerator == "auto" and gpus == 0))
        and n > cores
        and not cfg.get("allow_cpu_oversubscribe", False)
    ):
        raise ValueError(
            f"trainer.devices={cfg.trainer.get('devices')}: {n} CPU processes on {cores} cores; "
            "set allow_cpu_oversubscribe=true if that is meant"
        )


def log_launch_plan(trainer: Trainer) -> None:
    """Plainly what will run, before it starts."""
    log.info(
        f"will run: accelerator {type(trainer.accelerator).__name__.replace('Accelerator', '').lower()}, "
        f"{trainer.num_devices} process(es) per node x {trainer.num_nodes} node(s), precision "
        f"{trainer.precision}, strategy {type(trainer.strategy).__name__}"
    )


def _hydra_cfg():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _is_multirun() -> bool:
    from hydra.types import RunMode

    hc = _hydra_cfg()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def resolve_trainer_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments decided here: the GAN DDP strategy when several processes are asked for with
    ``strategy=auto`` (Lightning's own choice, plain ``ddp``, fails on the GAN's unused parameters)."""
    out: dict[str, Any] = {}
    n = devices_per_node(cfg.trainer)
    if str(cfg.trainer.get("strategy", "auto")) == "auto" and n * int(cfg.trainer.get("num_nodes", 1)) > 1:
        out["strategy"] = "ddp_gan"
    return out


def check_multirun_launch(cfg: DictConfig, strategy) -> None:
    """Inside a multirun job: refuse DDP that Lightning would start by re-running the command line (every child
    would run its own copy of the sweep; Lightning #15689).  The Hydra callback checks the same before the first
    job; this catches per-job values (a swept trainer.devices)."""
    if not _is_multirun():
        return
    tcfg = OmegaConf.merge(cfg.trainer, {"strategy": strategy}) if strategy is not None else cfg.trainer
    problem = ddp_launch_problem(tcfg, _hydra_cfg())
    if problem:
        raise RuntimeError(problem)


@contextlib.contextmanager
def gpu_for_joblib_job(cfg: DictConfig):
    """With the joblib launcher, give a single-device job a GPU of its own: the first free one of a pool of
    file locks under the sweep folder (job numbers do not tell which jobs run together).  Yields trainer
    overrides ({"devices": [k]}) or {}."""
    hc = _hydra_cfg()
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if (
        hc is None
        or not _is_multirun()
        or "Joblib" not in launcher_name(hc)
        or accelerator == "cpu"
        or not torch.cuda.is_available()
        or torch.cuda.device_count() < 2
        or str(cfg.trainer.get("devices")) not in ("1", "auto")
    ):
        yield {}
        return
    lock_dir = Path(str(hc.sweep.dir)) / ".gpu_locks"
    while (slot := try_lock_slot(lock_dir, torch.cuda.device_count())) is None:
        time.sleep(2.0)  # more jobs than GPUs: wait for one to finish
    handle, gpu = slot
    log.info(f"joblib job {hc.job.num}: GPU {gpu}")
    try:
        yield {"devices": [gpu], "accelerator": "gpu"}
    finally:
        release_slot(handle)


def try_lock_slot(lock_dir: Path, n: int):
    """(open lock file, k) for the first of ``n`` slots no other process holds, or None.  The lock is an
    exclusive flock on ``lock_dir/gpu<k>.lock``; it goes away with the process if the job dies."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        f = open(lock_dir / f"gpu{k}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return f, k
    return None


def release_slot(handle) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def requeued_checkpoint(cfg: DictConfig) -> str | None:
    """A SLURM job that was requeued (pre-emption, submitit's timeout handling) restarts in the same output
    folder: resume from its last.ckpt.  (Lightning's own SIGUSR1 requeue writes hpc_ckpt_*.ckpt, which
    Lightning restores by itself.)"""
    if cfg.get("ckpt_path") or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
        return None
    out = Path(str(cfg.paths.output_dir))
    if list(out.glob("hpc_ckpt_*.ckpt")):
        return None
    last = out / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


#: What makes a run folder another run's: the files a fresh run would write over or beside (issue 16 item 3).
RUN_FILES = ("checkpoints/*.ckpt", "weights/*.pth", "weights/*.safetensors")


def check_run_folder(cfg: DictConfig) -> None:
    """A run folder belongs to one run.  A FRESH run (no ``ckpt_path`` into this folder, no requeue) in a folder
    holding another run's checkpoints or weights is refused, naming the folder and the files, unless
    ``overwrite=true`` (then those files are deleted first, so that this run's saves - validation, SIGTERM,
    weights/ - all go to the plain names and nothing of the earlier run is mixed in)."""
    if not run_lock.is_launching_process():
        return  # DDP ranks belong to the launcher's run, which checked
    folder = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    found = sorted(p for pattern in RUN_FILES for p in folder.glob(pattern) if p.is_file())
    if not found:
        return
    resume = cfg.get("ckpt_path") or requeued_checkpoint(cfg)
    if resume and Path(str(resume)).expanduser().resolve().is_relative_to(folder):
        return  # resuming this folder's own run
    names = [str(p.relative_to(folder)) for p in found]
    if not cfg.get("overwrite", False):
        raise FileExistsError(
            f"run folder {str(folder)!r} holds another run's files: {names[:8]}{' ...' if len(names) > 8 else ''}. "
            f"A fresh run would mix its checkpoints with them. Resume that run with "
            f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}, choose another folder (hydra.run.dir=...), or pass "
            "overwrite=true to delete them and start over"
        )
    for p in found:
        p.unlink()
    log.warning(f"overwrite=true: deleted the earlier run's files in {folder}: {names}")
