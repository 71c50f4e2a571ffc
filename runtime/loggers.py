"""Loggers of a run: wandb online or offline (credentials or not), the sweep job's wandb name and group, and the
resolved config as hyper-parameters."""

from __future__ import annotations

import logging
import netrc
import os
import weakref
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)

#: The wandb loggers whose config asked for the best checkpoint to be uploaded (``logger.wandb.log_model=true``).
_UPLOAD_BEST: weakref.WeakSet = weakref.WeakSet()


def uploads_best_checkpoint(logger: Logger) -> bool:
    """Whether :func:`runtime.results.log_best_checkpoint` uploads the run's best checkpoint to ``logger``."""
    return logger in _UPLOAD_BEST


def wandb_logged_in() -> bool:
    """True when wandb has credentials (env var or ~/.netrc); otherwise runs are written offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def instantiate_loggers(cfg: DictConfig | None, identity: dict | None = None) -> list[Logger]:
    """Loggers from ``cfg.logger``.  ``identity`` (a sweep job's, from runtime.sweeps.job_identity) names the
    wandb run after the job's swept values and puts it in the sweep's group."""
    loggers = []
    for c in (cfg or {}).values():
        if c is None or "_target_" not in c:
            continue
        if c._target_.endswith("WandbLogger"):
            # log_model: this project uploads the best checkpoint itself at the end (log_best_checkpoint);
            # Lightning's log_model=True would upload last.ckpt as well.
            kwargs: dict[str, Any] = {"log_model": False}
            # Not `offline=True`: that sets WANDB_MODE for the whole process (WandbLogger.__init__).  The mode is passed
            # to wandb.init explicitly: wandb reads the environment once per process (its setup singleton), so a
            # later job or test that changed WANDB_MODE would otherwise get the first one's mode.
            env_mode = os.environ.get("WANDB_MODE")
            if env_mode:
                kwargs["mode"] = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
            elif not wandb_logged_in():
                kwargs["mode"] = "offline"
                log.info("wandb: not logged in, writing the run offline (upload later with `wandb sync`)")
            if identity:  # unless the config names the run or the group itself
                if not c.get("group"):
                    kwargs["group"] = identity["group"]
                if c.get("name") in (None, "", _root_task_name(c)):
                    kwargs["name"] = identity["name"]
            logger = instantiate(c, **kwargs)
            if c.get("log_model", False):
                _UPLOAD_BEST.add(logger)
            loggers.append(logger)
        else:
            loggers.append(instantiate(c))
    return loggers


def _root_task_name(node) -> str | None:
    root = node._get_root() if OmegaConf.is_config(node) else None
    return root.get("task_name") if root is not None else None


def loggable_config(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config, without Hydra's own node."""
    out = {}
    for k in cfg:
        if k == "hydra":
            continue
        v = cfg[k]
        out[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return out
