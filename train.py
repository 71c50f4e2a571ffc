"""Train a model: ``python train.py experiment=demo`` (see README for the config groups).

``train(cfg)`` is a plain function so tests and sweeps can call it with a composed config.

Multi-device: ``trainer.devices=N`` (and ``trainer.num_nodes``) runs data-parallel with the ``ddp_gan`` strategy
(lightning_modules/gan_ddp.py) when ``trainer.strategy`` is ``auto``.  Sweeps: ``python train.py -m ...`` or
``+sweep=NAME``; each job writes ``result.json`` (its overrides, final validation metrics and objective) that the
Hydra callback in callbacks/sweeps.py summarises at the end.
"""

import tv_compat  # noqa: F401  (must precede anything that imports torchvision)

import contextlib
import fcntl
import json
import logging
import math
import netrc
import os
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

# Registers the ddp_gan / ddp_gan_spawn strategies and the ${bf16_if_supported:} / ${cuda_device_count:} resolvers
# (imported again inside train(): joblib workers unpickle train() without running this module's imports).
import lightning_modules.gan_ddp  # noqa: F401
from callbacks import run_lock
from callbacks.checkpoint_io import AtomicCheckpointIO, remove_stale_temp_files
from callbacks.interrupt import SaveOnSignal
from lightning_modules.base import NonFiniteTrainingError
from callbacks.sweeps import RESULT_FILE, ddp_launch_problem, devices_per_node, job_identity, launcher_name

log = logging.getLogger(__name__)

# Lightning >= 2.6 warns on every checkpoint saved between the optimizer steps of a manual-optimization
# batch; our checkpoints are written after validation, between batches, where that state is consistent.
warnings.filterwarnings("ignore", message=".*pre-optimization.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*module\(s\) in eval mode.*")  # EMA G and the frozen VGG, by design
# Validation metrics are torchmetrics MeanMetrics, reduced over ranks by themselves; sync_dist would reduce again.
warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


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


def instantiate_loggers(cfg: DictConfig | None, identity: dict | None = None) -> list[Logger]:
    """Loggers from ``cfg.logger``.  ``identity`` (a sweep job's, from callbacks.sweeps.job_identity) names the
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
            logger._log_best_checkpoint = bool(c.get("log_model", False))
            loggers.append(logger)
        else:
            loggers.append(instantiate(c))
    return loggers


def _root_task_name(node) -> str | None:
    root = node._get_root() if OmegaConf.is_config(node) else None
    return root.get("task_name") if root is not None else None


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
    from config_checks import check_train_config

    check_train_config(cfg)  # data / trainer numbers and the resumed checkpoint, naming the key or the file
    check_devices(cfg)
    if cfg.trainer.get("sync_batchnorm") and str(cfg.trainer.get("accelerator", "auto")) == "cpu":
        raise ValueError("trainer.sync_batchnorm=true works on GPUs only (torch's SyncBatchNorm); "
                         "leave it false for CPU processes")


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
        raise ValueError(f"trainer.devices={cfg.trainer.get('devices')} with trainer.accelerator=auto and no GPU here "
                         f"would start {n} CPU processes; set trainer.accelerator=cpu to run CPU processes (gloo), "
                         "or run on a machine with the GPUs")
    if (accelerator == "cpu" or (accelerator == "auto" and gpus == 0)) and n > cores \
            and not cfg.get("allow_cpu_oversubscribe", False):
        raise ValueError(f"trainer.devices={cfg.trainer.get('devices')}: {n} CPU processes on {cores} cores; "
                         "set allow_cpu_oversubscribe=true if that is meant")


def log_launch_plan(trainer: Trainer) -> None:
    """Plainly what will run, before it starts."""
    log.info(f"will run: accelerator {type(trainer.accelerator).__name__.replace('Accelerator', '').lower()}, "
             f"{trainer.num_devices} process(es) per node x {trainer.num_nodes} node(s), precision "
             f"{trainer.precision}, strategy {type(trainer.strategy).__name__}")


# ------------------------------------------------------------------------------------------ launching
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
    if (hc is None or not _is_multirun() or "Joblib" not in launcher_name(hc) or accelerator == "cpu"
            or not torch.cuda.is_available() or torch.cuda.device_count() < 2
            or str(cfg.trainer.get("devices")) not in ("1", "auto")):
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


# ------------------------------------------------------------------------------------------ logging helpers
def loggable_config(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config, without Hydra's own node."""
    out = {}
    for k in cfg:
        if k == "hydra":
            continue
        v = cfg[k]
        out[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return out


def log_best_checkpoint(trainer: Trainer, result: dict) -> None:
    """Upload the best checkpoint as a wandb artifact (``logger.wandb.log_model=true``)."""
    path = result.get("best_model_path")
    for lg in trainer.loggers:
        if not (isinstance(lg, WandbLogger) and getattr(lg, "_log_best_checkpoint", False)):
            continue
        if not path or not os.path.isfile(path):
            log.warning("wandb: log_model=true but there is no best checkpoint to upload")
            continue
        import wandb

        run = lg.experiment
        artifact = wandb.Artifact(
            name=f"model-{run.id}", type="model",
            metadata={"monitor": result.get("monitor"), "score": result.get("best_score"),
                      "iteration": result.get("iteration"), "overrides": result.get("overrides")})
        artifact.add_file(path, name="best.ckpt")
        run.log_artifact(artifact, aliases=["best", "latest"])


def _best_score_from_checkpoint(path: str) -> float | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (a summary value only)
        return None
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def _stage_results_from_checkpoint(path: str | None) -> dict:
    """callbacks.checkpoint.StageCheckpoint's per-stage results as saved in ``path`` (ddp_gan_spawn: the callback
    of the main process never saw the validations)."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (a summary value only)
        return {}
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("stage_results"):
            return dict(state["stage_results"])
    return {}


def check_test_after_train(cfg: DictConfig, model: LightningModule, datamodule: LightningDataModule) -> None:
    """Fail before training, not after it, when ``test_after_train`` cannot run."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if not cfg.get("test_after_train"):
        return
    if not is_overridden("test_step", model) or not is_overridden("test_dataloader", datamodule):
        raise ValueError(f"test_after_train=true: {type(model).__name__} with {type(datamodule).__name__} has no "
                         "test loop (ESRGAN with an SR data config tests data.test_dirs); use evaluate.py instead")


def test_stage_results(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule,
                       stage_results: dict, fallback_path: str | None) -> dict[str, dict[str, float]]:
    """``test_after_train``: evaluate each stage's selected checkpoint (or the best/last one when the model has no
    stages) on the data module's test sets; metrics logged as ``test/<stage>/<folder>/<metric>``."""
    runs = {stage: r.get("path") for stage, r in stage_results.items()} or {"final": fallback_path}
    out = {}
    for stage, path in runs.items():
        if not path or not os.path.isfile(path):
            log.warning(f"test_after_train: no checkpoint for stage {stage!r}; not tested")
            continue
        prefix = f"test/{stage}"
        model.eval_prefix = prefix
        try:
            trainer.test(model=model, datamodule=datamodule, ckpt_path=path, verbose=False)
        finally:
            model.eval_prefix = "val"
        out[stage] = {k: float(v) for k, v in trainer.callback_metrics.items()
                      if k.startswith(prefix + "/") and torch.is_tensor(v) and v.numel() == 1}
        out[stage]["checkpoint"] = path
        log.info(f"test ({stage}, {os.path.basename(path)}): "
                 + ", ".join(f"{k[len(prefix) + 1:]} {v:.4f}" for k, v in out[stage].items() if k != "checkpoint"))
    return out


def perceptual_backbones(model) -> dict[str, dict]:
    """``{module name: weights_info}`` of the model's frozen VGG feature extractors (perceptual / style losses)."""
    from archs.vgg_features import VGGFeatureExtractor

    return {name: dict(m.weights_info) for name, m in model.named_modules()
            if isinstance(m, VGGFeatureExtractor) and hasattr(m, "weights_info")}


def log_perceptual_backbones(backbones: dict[str, dict]) -> None:
    """One summary line per backbone in the console and train.log; a random one as a warning."""
    for name, info in backbones.items():
        if info["pretrained"]:
            log.info(f"perceptual backbone {name}: {info['arch']} with {info['weights']} weights")
        else:
            log.warning(f"perceptual backbone {name}: {info['arch']} with RANDOM weights (requested "
                        f"{info['requested']!r}): its perceptual/style losses are not perceptual; results are not "
                        f"comparable with pretrained-VGG runs")


def write_result(result: dict, output_dir: str) -> None:
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None if math.isnan(x) else str(x)
        return x

    data = {k: (clean(v) if not isinstance(v, dict) else {kk: clean(vv) for kk, vv in v.items()})
            for k, v in result.items()}
    path.write_text(json.dumps(data, indent=2, default=str))


# ------------------------------------------------------------------------------------------ train
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; returns the final metrics, the objective and the checkpoint paths."""
    import lightning_modules.gan_ddp  # noqa: F401  (strategies and resolvers, see the imports above)

    check_config(cfg)
    trainer_overrides = resolve_trainer_overrides(cfg)
    check_multirun_launch(cfg, trainer_overrides.get("strategy"))
    # One run per output folder (callbacks/run_lock.py); DDP ranks other than the launcher do not lock.
    locked = run_lock.acquire(str(cfg.paths.output_dir))
    try:
        check_run_folder(cfg)
        with gpu_for_joblib_job(cfg) as gpu:
            trainer_overrides.update(gpu)
            return _train(cfg, trainer_overrides)
    finally:
        if locked:
            run_lock.release(str(cfg.paths.output_dir))


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
            "overwrite=true to delete them and start over")
    for p in found:
        p.unlink()
    log.warning(f"overwrite=true: deleted the earlier run's files in {folder}: {names}")


def last_checkpoint_path(cfg: DictConfig, callbacks: list[Callback]) -> Path:
    """Where ``last.ckpt`` goes: the ModelCheckpoint's folder, else ``<output_dir>/checkpoints``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"


def _train(cfg: DictConfig, trainer_overrides: dict[str, Any]) -> dict[str, Any]:
    seed_everything(cfg.seed, workers=True)
    identity = job_identity(cfg)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: LightningDataModule = instantiate(cfg.data)
    log.info(f"Instantiating model <{cfg.model._target_}>")
    model: LightningModule = instantiate(cfg.model, _recursive_=False)
    check_test_after_train(cfg, model, datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), identity)
    # SIGTERM/SIGINT: save last.ckpt at the batch boundary and exit 128 + signal (callbacks/interrupt.py).
    last_path = last_checkpoint_path(cfg, callbacks)
    on_signal = SaveOnSignal(last_path)
    callbacks.append(on_signal)
    if run_lock.is_launching_process():
        # Temporary files of a checkpoint write killed by SIGKILL (the run lock says no one else writes here).
        for stale in remove_stale_temp_files(last_path.parent):
            log.info(f"removed {stale}, left by an interrupted checkpoint write")
    if not cfg.trainer.get("plugins"):
        # Checkpoints are written next to their target and renamed into place (callbacks/checkpoint_io.py).
        trainer_overrides.setdefault("plugins", [AtomicCheckpointIO()])

    if hasattr(model, "optimizer_steps_total") and not cfg.trainer.get("fast_dev_run"):
        # The recipe counts batches; Lightning's max_steps counts optimizer steps (Lightning #17958).
        trainer_overrides["max_steps"] = model.optimizer_steps_total()
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

    ckpt_path = cfg.get("ckpt_path") or requeued_checkpoint(cfg)
    ok = False
    try:
        if cfg.get("train", True):
            try:
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            except NonFiniteTrainingError as err:
                if trainer.is_global_zero:
                    write_result({"status": "non_finite", "error": str(err),
                                  "iteration": getattr(model, "iteration", None),
                                  "output_dir": str(cfg.paths.output_dir)}, str(cfg.paths.output_dir))
                raise
            except SIGTERMException:
                # Not Lightning's exit 0: a scheduler must see that the job did not finish (143 / 130).
                if trainer.is_global_zero:
                    write_result({"status": "interrupted", "signal": on_signal.exit_code - 128,
                                  "last_model_path": on_signal.saved, "iteration": getattr(model, "iteration", None),
                                  "output_dir": str(cfg.paths.output_dir)}, str(cfg.paths.output_dir))
                raise SystemExit(on_signal.exit_code) from None

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        ckpt_cb = trainer.checkpoint_callback
        iteration = getattr(model, "iteration", None)
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
            for path in (getattr(ckpt_cb, "last_model_path", None),
                         os.path.join(str(getattr(ckpt_cb, "dirpath", None) or ""), "last.ckpt"),
                         getattr(ckpt_cb, "best_model_path", None)):
                stage_results = _stage_results_from_checkpoint(path)
                if stage_results:
                    break
        result_stage = list(stage_results)[-1] if stage_results else None
        result = {
            "metrics": metrics,
            "best_model_path": (stage_results[result_stage]["path"] if result_stage
                                else getattr(ckpt_cb, "best_model_path", None)),
            "stage_results": stage_results,
            "result_stage": result_stage,
            "last_model_path": getattr(ckpt_cb, "last_model_path", None),
            "output_dir": trainer.default_root_dir,
            "iteration": iteration,
            "monitor": monitor,
            # Of the objective (model.monitor): StageCheckpoint's mode may be a later stage's (LPIPS: min).
            "direction": "minimize" if getattr(ckpt_cb, "_base_mode", getattr(ckpt_cb, "mode", "max")) == "min"
            else "maximize",
            "best_score": float(best_score) if best_score is not None else None,
            "global_batch_size": hparams["global_batch_size"],
            "world_size": world,
            "status": "ok",
            "perceptual_backbone": backbones,
        }
        # The objective sweepers (Optuna) optimise and the sweep summary sorts by: the final validation value of
        # the checkpoint monitor (model.monitor).
        result["objective"] = metrics.get(monitor, math.nan) if monitor else math.nan
        if identity:
            result.update(job_num=identity["job_num"], swept=identity["swept"], overrides=identity["overrides"])
        if cfg.get("test_after_train"):
            result["test"] = test_stage_results(trainer, model, datamodule, stage_results, result["best_model_path"]
                                                or result["last_model_path"])
        if trainer.is_global_zero:
            write_result(result, str(cfg.paths.output_dir))
            log_best_checkpoint(trainer, result)
        ok = True
        return result
    finally:
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                # One run per job, also in multirun (lightning-hydra-template #289), and a failed job's run is
                # closed as failed instead of being reused by the next job.
                wandb.finish(exit_code=0 if ok else 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    result = train(cfg)
    log.info(f"metrics: {result['metrics']}")
    log_perceptual_backbones(result.get("perceptual_backbone") or {})  # the summary repeats it at the end
    log.info(f"best checkpoint: {result['best_model_path']}")
    return result["objective"]  # for hyperparameter sweepers (Optuna)


if __name__ == "__main__":
    main()
