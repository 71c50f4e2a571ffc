"""Train a model: ``python train.py experiment=demo`` (see README for the config groups).

``train(cfg)`` is a plain function so tests and sweeps can call it with a composed config.
"""

import tv_compat  # noqa: F401  (must precede anything that imports torchvision)

import logging
import math
import netrc
import os
import warnings
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)

# Lightning >= 2.6 warns on every checkpoint saved between the optimizer steps of a manual-optimization
# batch; our checkpoints are written after validation, between batches, where that state is consistent.
warnings.filterwarnings("ignore", message=".*pre-optimization.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*module\(s\) in eval mode.*")  # EMA G and the frozen VGG, by design


def wandb_logged_in() -> bool:
    """True when wandb has credentials (env var or ~/.netrc); otherwise runs are written offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    loggers = []
    for c in (cfg or {}).values():
        if c is None or "_target_" not in c:
            continue
        if c._target_.endswith("WandbLogger"):
            kwargs = {}
            # Not `offline=True`: that sets WANDB_MODE for the whole process (REFERENCE 4.5).
            if not os.environ.get("WANDB_MODE") and not wandb_logged_in():
                kwargs["mode"] = "offline"
                log.info("wandb: not logged in, writing the run offline (upload later with `wandb sync`)")
            loggers.append(instantiate(c, **kwargs))
        else:
            loggers.append(instantiate(c))
    return loggers


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; returns the final metrics and the checkpoint paths."""
    check_config(cfg)
    seed_everything(cfg.seed, workers=True)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: LightningDataModule = instantiate(cfg.data)
    log.info(f"Instantiating model <{cfg.model._target_}>")
    model: LightningModule = instantiate(cfg.model, _recursive_=False)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))

    trainer_kwargs = {}
    if hasattr(model, "optimizer_steps_total") and not cfg.trainer.get("fast_dev_run"):
        # The recipe counts batches; Lightning's max_steps counts optimizer steps (REFERENCE 4.1).
        trainer_kwargs["max_steps"] = model.optimizer_steps_total()
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_kwargs)

    hparams = OmegaConf.to_container(cfg, resolve=True)
    world = trainer.world_size
    hparams["global_batch_size"] = int(cfg.data.batch_size) * world  # batch_size in config is per device
    hparams["world_size"] = world
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)

    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    ckpt_cb = trainer.checkpoint_callback
    result = {
        "metrics": metrics,
        "best_model_path": getattr(ckpt_cb, "best_model_path", None),
        "last_model_path": getattr(ckpt_cb, "last_model_path", None),
        "output_dir": trainer.default_root_dir,
        "iteration": getattr(model, "iteration", None),
    }
    monitor = cfg.model.get("monitor")
    result["objective"] = metrics.get(monitor, math.nan) if monitor else math.nan

    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            wandb.finish()  # one run per job, also in multirun (lightning-hydra-template #289)
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    result = train(cfg)
    log.info(f"metrics: {result['metrics']}")
    log.info(f"best checkpoint: {result['best_model_path']}")
    return result["objective"]  # for hyperparameter sweepers (Optuna)


if __name__ == "__main__":
    main()
