"""Render Real-ESRGAN training pairs to a PNG: the degraded LR the generator is trained on (second-order blur,
resize, noise, JPEG; datamodules/realesrgan_datamodule.py) beside its GT crop, as scripts/render_synthesis.py
does for SC-FEGAN's inputs.  See conf/render_degradations.yaml."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import logging

import hydra
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from ops.image_grid import labelled_grid
from ops.imresize import imresize

log = logging.getLogger(__name__)

COLUMNS = ["degraded LR (nearest x{s})", "bicubic of the LR", "GT"]


def render(cfg: DictConfig) -> str:
    from weights.io import check_output_file

    check_output_file(cfg.out, (), bool(cfg.get("overwrite", False)), "out")  # predict.py's rules, before any work
    if "degradation" not in cfg.data:
        raise ValueError(
            "render_degradations needs a Real-ESRGAN data config (data=realesrgan_demo|realesrgan_div2k), "
            f"got data._target_={cfg.data.get('_target_')!r}"
        )
    n = int(cfg.num_images)
    if not 1 <= n <= 64:
        raise ValueError(f"num_images={n}: give 1 to 64")
    # No training-pair pool: the pairs shown are this batch's own (the pool hands out earlier batches' pairs).
    dm = instantiate(cfg.data, batch_size=n, num_workers=0, degradation={"pool_size": 0})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    pair = dm.synthesize(batch)
    lq, gt, s = pair["lq"].clamp(0, 1), pair["gt"], int(dm.scale)
    nearest = F.interpolate(lq, scale_factor=s, mode="nearest")
    bicubic = imresize(lq, s).clamp(0, 1)
    rows = [[nearest[i], bicubic[i], gt[i]] for i in range(lq.shape[0])]
    labels = [c.format(s=s) for c in COLUMNS]
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    Image.fromarray(labelled_grid(rows, labels).numpy()).save(cfg.out, optimize=True)
    log.info(f"wrote {cfg.out} ({lq.shape[0]} pairs; columns: {' | '.join(labels)})")
    return str(cfg.out)


@hydra.main(version_base="1.3", config_path="../conf", config_name="render_degradations")
def main(cfg: DictConfig) -> None:
    render(cfg)


if __name__ == "__main__":
    main()
