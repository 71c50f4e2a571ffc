"""Train a model: ``python train.py experiment=demo`` (see README for the config groups).

The command line only: the runner is ``runtime.training.train(cfg)``, which tests and sweeps call with a composed
config.  Multi-device (``trainer.devices=N``), sweeps (``-m``) and resuming are described in the README.
"""

import tv_compat  # must precede anything that imports torchvision

import logging

import hydra
from omegaconf import DictConfig

from runtime.results import log_perceptual_backbones
from runtime.training import register, train

log = logging.getLogger(__name__)

# Before Hydra composes the config: ${bf16_if_supported:...}, ${cuda_device_count:} and strategy=ddp_gan.
register()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    result = train(cfg)
    log.info(f"metrics: {result['metrics']}")
    log_perceptual_backbones(result.get("perceptual_backbone") or {})  # the summary repeats it at the end
    log.info(f"best checkpoint: {result['best_model_path']}")
    return result["objective"]  # for hyperparameter sweepers (Optuna)


if __name__ == "__main__":
    main()
