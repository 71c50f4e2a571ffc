"""Render a batch of synthesised SC-FEGAN inputs to a PNG, with their statistics as JSON (mask coverage histogram,
edge density, colour region count; synthesis/stats.py).  See conf/render_synthesis.yaml."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import json
import logging

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from ops.image_grid import synthesis_grid
from synthesis.stats import synthesis_stats

log = logging.getLogger(__name__)


def render(cfg: DictConfig) -> str:
    from weights.io import check_output_file

    stats_path = cfg.get("stats_out") or os.path.splitext(str(cfg.out))[0] + "_stats.json"
    for path, what in ((cfg.out, "out"), (stats_path, "stats_out")):  # predict.py's rules, before any work
        check_output_file(path, (), bool(cfg.get("overwrite", False)), what)
    if cfg.data.get("task") != "faces":
        raise ValueError(
            f"render_synthesis needs a face data config (data=faces_demo|celebamask_mini|celeba_hq), "
            f"got task={cfg.data.get('task')!r}"
        )
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    dm = instantiate(cfg.data, batch_size=cfg.num_images, val_batch_size=cfg.num_images, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader() if cfg.split == "train" else dm.val_dataloader()
    batch = next(iter(loader))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if cfg.get("masks", "train") == "user_strokes":  # the evaluation masks: a few strokes over one face part
        from synthesis.pipeline import FaceInputSynthesizer

        base = dm.synthesis
        dm.synthesis = FaceInputSynthesizer(
            mask=instantiate(cfg.user_strokes),
            sketch=base.sketch,
            color=base.color,
            noise_type=base.noise_type,
            eye_positions=base.eye_positions,
            eye_reference_size=base.eye_reference_size,
            seed=base.seed,
        )
    elif cfg.get("masks", "train") != "train":
        raise ValueError(f"masks must be 'train' or 'user_strokes', got {cfg.masks!r}")
    batch = dm.synthesize(batch, train=cfg.split == "train", epoch=cfg.epoch)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    Image.fromarray(synthesis_grid(batch, cfg.num_images).numpy()).save(cfg.out, optimize=True)
    log.info(f"wrote {cfg.out} (rows: image | masked input | mask | sketch | colour | noise)")
    stats = synthesis_stats(batch, dm.synthesis)
    stats.update(split=cfg.split, epoch=cfg.epoch, masks=cfg.get("masks", "train"))
    sketch = dm.synthesis.sketch  # which detector drew the sketch row (data.synthesis.sketch.*; auto may fall back)
    stats.update(sketch_detector=sketch.detector, sketch_detector_reason=getattr(sketch, "detector_reason", None))
    with open(stats_path, "w") as f:
        json.dump(stats, f, indent=2)
    cov = stats["mask_coverage"]
    log.info(
        f"wrote {stats_path}: coverage median {100 * cov['median']:.1f} %, edge density "
        f"{100 * stats['edge_density'].get('mean', float('nan')):.2f} %, colour regions "
        f"{stats['color_regions'].get('mean', float('nan')):.1f} per image, sketch detector {sketch.detector}"
    )
    return cfg.out


@hydra.main(version_base="1.3", config_path="../conf", config_name="render_synthesis")
def main(cfg: DictConfig) -> None:
    render(cfg)


if __name__ == "__main__":
    main()
