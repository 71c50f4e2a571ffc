"""What a run reports: ``result.json`` (metrics, objective, each stage's checkpoint), the test sets after training
(``test_after_train``), the perceptual backbones used, and the best checkpoint uploaded to wandb."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger

from lightning_modules.base import IterationGANModule
from runtime.loggers import uploads_best_checkpoint

log = logging.getLogger(__name__)

#: Each training job's result, in its output folder (read by the sweep summary, runtime/sweeps.py).
RESULT_FILE = "result.json"


def log_best_checkpoint(trainer: Trainer, result: dict) -> None:
    """Upload the best checkpoint as a wandb artifact (``logger.wandb.log_model=true``)."""
    path = result.get("best_model_path")
    for lg in trainer.loggers:
        if not (isinstance(lg, WandbLogger) and uploads_best_checkpoint(lg)):
            continue
        if not path or not os.path.isfile(path):
            log.warning("wandb: log_model=true but there is no best checkpoint to upload")
            continue
        import wandb

        run = lg.experiment
        artifact = wandb.Artifact(
            name=f"model-{run.id}",
            type="model",
            metadata={
                "monitor": result.get("monitor"),
                "score": result.get("best_score"),
                "iteration": result.get("iteration"),
                "overrides": result.get("overrides"),
            },
        )
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
        raise ValueError(
            f"test_after_train=true: {type(model).__name__} with {type(datamodule).__name__} has no "
            "test loop (ESRGAN with an SR data config tests data.test_dirs); use evaluate.py instead"
        )


def test_stage_results(
    trainer: Trainer,
    model: IterationGANModule,
    datamodule: LightningDataModule,
    stage_results: dict,
    fallback_path: str | None,
) -> dict[str, dict[str, float]]:
    """``test_after_train``: evaluate each stage's selected checkpoint (or the best/last one when the model has no
    stages) on the data module's test sets; metrics logged as ``test/<stage>/<folder>/<metric>``."""
    runs = {stage: r.get("path") for stage, r in stage_results.items()} or {"final": fallback_path}
    out = {}
    for stage, path in runs.items():
        if not path or not os.path.isfile(path):
            log.warning(f"test_after_train: no checkpoint for stage {stage!r}; not tested")
            continue
        prefix = f"test/{stage}"
        model.set_eval_prefix(prefix)
        try:
            trainer.test(model=model, datamodule=datamodule, ckpt_path=path, verbose=False)
        finally:
            model.set_eval_prefix("val")
        out[stage] = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(prefix + "/") and torch.is_tensor(v) and v.numel() == 1
        }
        out[stage]["checkpoint"] = path
        log.info(
            f"test ({stage}, {os.path.basename(path)}): "
            + ", ".join(f"{k[len(prefix) + 1 :]} {v:.4f}" for k, v in out[stage].items() if k != "checkpoint")
        )
    return out


def perceptual_backbones(model) -> dict[str, dict]:
    """``{module name: weights_info}`` of the model's frozen VGG feature extractors (perceptual / style losses)."""
    from archs.vgg_features import VGGFeatureExtractor

    return {
        name: dict(m.weights_info)
        for name, m in model.named_modules()
        if isinstance(m, VGGFeatureExtractor) and hasattr(m, "weights_info")
    }


def log_perceptual_backbones(backbones: dict[str, dict]) -> None:
    """One summary line per backbone in the console and train.log; a random one as a warning."""
    for name, info in backbones.items():
        if info["pretrained"]:
            log.info(f"perceptual backbone {name}: {info['arch']} with {info['weights']} weights")
        else:
            log.warning(
                f"perceptual backbone {name}: {info['arch']} with RANDOM weights (requested "
                f"{info['requested']!r}): its perceptual/style losses are not perceptual; results are not "
                f"comparable with pretrained-VGG runs"
            )


def write_result(result: dict, output_dir: str) -> None:
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None if math.isnan(x) else str(x)
        return x

    data = {
        k: (clean(v) if not isinstance(v, dict) else {kk: clean(vv) for kk, vv in v.items()}) for k, v in result.items()
    }
    path.write_text(json.dumps(data, indent=2, default=str))
