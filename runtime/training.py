"""The runner: ``train(cfg)`` fits the model a composed config describes and returns its result (train.py is the
command line; tests and sweeps call it with a composed config).

Multi-device: ``trainer.devices=N`` (and ``trainer.num_nodes``) runs data-parallel with the ``ddp_gan`` strategy
(runtime/strategies.py) when ``trainer.strategy`` is ``auto``.  Sweeps: each job writes ``result.json`` (its
overrides, final validation metrics and objective) that the Hydra callback in runtime/sweeps.py summarises at the end.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.interrupt import SaveOnSignal
from lightning_modules.base import IterationGANModule, NonFiniteTrainingError
from runtime import resolvers, run_lock, strategies
from runtime.checkpoint_io import AtomicCheckpointIO, remove_stale_temp_files
from runtime.launch import (
    check_config,
    check_inputs,
    check_multirun_launch,
    check_objective_set_size,
    check_run_folder,
    gpu_for_joblib_job,
    log_launch_plan,
    objective_of,
    requeued_checkpoint,
    resolve_trainer_overrides,
)
from runtime.loggers import instantiate_loggers, loggable_config
from runtime.results import (
    _best_score_from_checkpoint,
    _stage_results_from_checkpoint,
    check_test_after_train,
    log_best_checkpoint,
    log_perceptual_backbones,
    perceptual_backbones,
    test_stage_results,
    write_result,
)
from runtime.resume import (
    check_resumed_job_values,
    read_sweep_job,
    read_wandb_run,
    resumes_this_folder,
    write_sweep_job,
    write_wandb_run,
)
from runtime.sweeps import job_identity, write_summary

log = logging.getLogger(__name__)

# Lightning >= 2.6 warns on every checkpoint saved between the optimizer steps of a manual-optimization
# batch; our checkpoints are written after validation, between batches, where that state is consistent.
warnings.filterwarnings("ignore", message=".*pre-optimization.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # EMA G and the frozen VGG, by design
# Validation metrics are torchmetrics MeanMetrics, reduced over ranks by themselves; sync_dist would reduce again.
warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def register() -> None:
    """The config resolvers and the ``ddp_gan`` strategies (idempotent).  train.py calls it before Hydra composes
    the config; :func:`train` again, for processes that did not run train.py (joblib workers, spawned ranks)."""
    resolvers.register()
    strategies.register()


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; returns the final metrics, the objective and the checkpoint paths."""
    register()
    check_config(cfg)
    check_inputs(cfg)  # data folders and weights files, before any process is spawned
    trainer_overrides = resolve_trainer_overrides(cfg)
    check_multirun_launch(cfg, trainer_overrides.get("strategy"))
    # One run per output folder (runtime/run_lock.py); DDP ranks other than the launcher do not lock.
    locked = run_lock.acquire(str(cfg.paths.output_dir))
    try:
        check_run_folder(cfg)
        with gpu_for_joblib_job(cfg) as gpu:
            trainer_overrides.update(gpu)
            return _train(cfg, trainer_overrides)
    finally:
        if locked:
            run_lock.release(str(cfg.paths.output_dir))


def end_data_workers() -> None:
    """End the DataLoader workers before exiting on a signal.  They ignore SIGTERM (datamodules/workers.py, so a group
    signal cannot kill them mid-batch), so multiprocessing's exit hook, which terminates daemonic children with SIGTERM
    and then joins them, would wait forever when the loader was not shut down first; SIGKILL cannot be ignored."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=10)


def last_checkpoint_path(cfg: DictConfig, callbacks: list[Callback]) -> Path:
    """Where ``last.ckpt`` goes: the ModelCheckpoint's folder, else ``<output_dir>/checkpoints``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"


def sweep_job_identity(cfg: DictConfig) -> tuple[dict | None, bool]:
    """(the sweep job's identity, whether it is a resumed job's).  A multirun job records its identity in its folder
    (``sweep_job.json``); resuming that folder, with or without -m, takes it from there (its job number, swept values,
    wandb group and name) after checking that the swept keys still have the job's values (runtime/resume.py)."""
    identity = job_identity(cfg)
    recorded = read_sweep_job(cfg.paths.output_dir) if resumes_this_folder(cfg) else None
    if recorded is not None:
        check_resumed_job_values(cfg, recorded)
        return recorded, True
    if identity is not None and run_lock.is_launching_process():
        write_sweep_job(cfg.paths.output_dir, identity)
    return identity, False


def _train(cfg: DictConfig, trainer_overrides: dict[str, Any]) -> dict[str, Any]:
    seed_everything(cfg.seed, workers=True)
    identity, resumed_job = sweep_job_identity(cfg)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: LightningDataModule = instantiate(cfg.data)
    check_objective_set_size(cfg, datamodule)  # FID/KID objectives: a large enough validation set
    log.info(f"Instantiating model <{cfg.model._target_}>")
    model: LightningModule = instantiate(cfg.model, _recursive_=False)
    check_test_after_train(cfg, model, datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    resumed_wandb = read_wandb_run(cfg.paths.output_dir) if resumes_this_folder(cfg) else None
    loggers = instantiate_loggers(cfg.get("logger"), identity, resumed_wandb)
    # SIGTERM/SIGINT: save last.ckpt at the batch boundary and exit 128 + signal (callbacks/interrupt.py).
    last_path = last_checkpoint_path(cfg, callbacks)
    on_signal = SaveOnSignal(last_path)
    callbacks.append(on_signal)
    if run_lock.is_launching_process():
        # Temporary files of a checkpoint write killed by SIGKILL (the run lock says no one else writes here).
        for stale in remove_stale_temp_files(last_path.parent):
            log.info(f"removed {stale}, left by an interrupted checkpoint write")
    if not cfg.trainer.get("plugins"):
        # Checkpoints are written next to their target and renamed into place (runtime/checkpoint_io.py).
        trainer_overrides.setdefault("plugins", [AtomicCheckpointIO()])

    # The runner's side of the recipes' contract (lightning_modules/base.py RecipeContract).
    recipe = model if isinstance(model, IterationGANModule) else None
    steps_total = recipe.optimizer_steps_total() if recipe is not None else None

    def iteration_now() -> int | None:
        return recipe.iteration if recipe is not None else None

    if steps_total is not None and not cfg.trainer.get("fast_dev_run"):
        # The recipe counts batches; Lightning's max_steps counts optimizer steps (Lightning #17958).
        trainer_overrides["max_steps"] = steps_total
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_overrides)

    log_launch_plan(trainer)
    hparams = loggable_config(cfg)
    # data.batch_size is per device; the global batch is what the learning rates are tuned for.
    world = int(trainer.num_devices) * int(trainer.num_nodes)
    hparams["global_batch_size"] = int(cfg.data.batch_size) * world
    hparams["world_size"] = world
    hparams["strategy"] = type(trainer.strategy).__name__
    hparams["precision"] = str(trainer.precision)
    backbones = perceptual_backbones(model)
    if backbones:  # in the wandb config (and every logger's hyper-parameters)
        hparams["perceptual_backbone"] = backbones
        hparams["perceptual_backbone_random"] = any(not b["pretrained"] for b in backbones.values())
    log_perceptual_backbones(backbones)
    if identity:
        hparams["sweep"] = {k: identity[k] for k in ("group", "name", "swept", "overrides", "job_num")}
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
        if isinstance(lg, WandbLogger) and trainer.is_global_zero:
            # Resuming this folder continues this wandb run (runtime/resume.py).
            run = lg.experiment
            if not getattr(run, "disabled", False):
                write_wandb_run(cfg.paths.output_dir, run.id, run.group, run.name)

    ckpt_path = cfg.get("ckpt_path") or requeued_checkpoint(cfg)
    ok = False
    try:
        if cfg.get("train", True):
            try:
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            except NonFiniteTrainingError as err:
                if trainer.is_global_zero:
                    write_result(
                        {
                            "status": "non_finite",
                            "error": str(err),
                            "iteration": iteration_now(),
                            "output_dir": str(cfg.paths.output_dir),
                        },
                        str(cfg.paths.output_dir),
                    )
                raise
            except SIGTERMException:
                # Not Lightning's exit 0: a scheduler must see that the job did not finish (143 / 130).
                if trainer.is_global_zero:
                    write_result(
                        {
                            "status": "interrupted",
                            "signal": on_signal.exit_code - 128,
                            "last_model_path": on_signal.saved,
                            "iteration": iteration_now(),
                            "output_dir": str(cfg.paths.output_dir),
                            **({k: identity[k] for k in ("job_num", "swept", "overrides")} if identity else {}),
                        },
                        str(cfg.paths.output_dir),
                    )
                end_data_workers()
                on_signal.wait_for_other_ranks()  # DDP ranks Lightning started: no orphan, no SIGKILL of rank 0
                raise SystemExit(on_signal.exit_code) from None

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        ckpt_cb = trainer.checkpoint_callback
        iteration = iteration_now()
        if not iteration and "iter" in metrics:  # ddp_gan_spawn: the module trained in the spawned processes
            iteration = int(metrics["iter"])
        best_score = getattr(ckpt_cb, "best_model_score", None)
        if best_score is None and getattr(ckpt_cb, "best_model_path", None):
            best_score = _best_score_from_checkpoint(ckpt_cb.best_model_path)  # ddp_gan_spawn: not sent back
        monitor = cfg.model.get("monitor")
        # Per-stage selection (callbacks.checkpoint.StageCheckpoint): each stage's checkpoint and how it was chosen;
        # the result of the run is the last stage's (ESRGAN [psnr, gan]: the GAN model, by LPIPS or its last state).
        stage_results = dict(getattr(ckpt_cb, "stage_results", None) or {})
        if not stage_results and ckpt_cb is not None:  # ddp_gan_spawn: the validations ran in the children
            for path in (
                getattr(ckpt_cb, "last_model_path", None),
                os.path.join(str(getattr(ckpt_cb, "dirpath", None) or ""), "last.ckpt"),
                getattr(ckpt_cb, "best_model_path", None),
            ):
                stage_results = _stage_results_from_checkpoint(path)
                if stage_results:
                    break
        result_stage = list(stage_results)[-1] if stage_results else None
        result = {
            "metrics": metrics,
            "best_model_path": (
                stage_results[result_stage]["path"] if result_stage else getattr(ckpt_cb, "best_model_path", None)
            ),
            "stage_results": stage_results,
            "result_stage": result_stage,
            "last_model_path": getattr(ckpt_cb, "last_model_path", None),
            "output_dir": trainer.default_root_dir,
            "iteration": iteration,
            "monitor": monitor,
            # Of the objective (model.monitor): StageCheckpoint's mode may be a later stage's (LPIPS: min).
            "direction": "minimize"
            if getattr(ckpt_cb, "_base_mode", getattr(ckpt_cb, "mode", "max")) == "min"
            else "maximize",
            "best_score": float(best_score) if best_score is not None else None,
            "global_batch_size": hparams["global_batch_size"],
            "world_size": world,
            "status": "ok",
            "perceptual_backbone": backbones,
        }
        # The objective sweepers (Optuna) optimise and the sweep summary sorts by: the final validation value of
        # objective.key (a sweep config's choice, e.g. val/lpips for GAN weights), else of model.monitor.
        objective_key, objective_direction = objective_of(cfg)
        result["objective_key"] = objective_key
        if objective_direction:
            result["direction"] = objective_direction
        result["objective"] = metrics.get(objective_key, math.nan) if objective_key else math.nan
        if identity:
            result.update(job_num=identity["job_num"], swept=identity["swept"], overrides=identity["overrides"])
        if cfg.get("test_after_train"):
            result["test"] = test_stage_results(
                trainer, model, datamodule, stage_results, result["best_model_path"] or result["last_model_path"]
            )
        if trainer.is_global_zero:
            write_result(result, str(cfg.paths.output_dir))
            log_best_checkpoint(trainer, result)
            if resumed_job and job_identity(cfg) is None and Path(identity["sweep_dir"]).is_dir():
                # A sweep job resumed on its own (no -m): the sweep's summary.csv gets its new result.
                write_summary(identity["sweep_dir"], echo=False)
        ok = True
        return result
    finally:
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                # One run per job, also in multirun (lightning-hydra-template #289), and a failed job's run is
                # closed as failed instead of being reused by the next job.
                wandb.finish(exit_code=0 if ok else 1)
