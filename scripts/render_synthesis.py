"""Render a batch of synthesised SC-FEGAN inputs to a PNG (see conf/render_synthesis.yaml)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # noqa: E402,F401  (must precede anything that imports torchvision)

import logging  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from PIL import Image  # noqa: E402

from ops.image_grid import synthesis_grid  # noqa: E402

log = logging.getLogger(__name__)


def render(cfg: DictConfig) -> str:
    if cfg.data.get("task") != "faces":
        raise ValueError(f"render_synthesis needs a face data config (data=faces_demo|celebamask_mini|celeba_hq), "
                         f"got task={cfg.data.get('task')!r}")
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    dm = instantiate(cfg.data, batch_size=cfg.num_images, val_batch_size=cfg.num_images, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader() if cfg.split == "train" else dm.val_dataloader()
    batch = next(iter(loader))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    batch = dm.synthesize(batch, train=cfg.split == "train", epoch=cfg.epoch)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    Image.fromarray(synthesis_grid(batch, cfg.num_images).numpy()).save(cfg.out)
    log.info(f"wrote {cfg.out} (rows: image | masked input | mask | sketch | colour | noise)")
    return cfg.out


@hydra.main(version_base="1.3", config_path="../conf", config_name="render_synthesis")
def main(cfg: DictConfig) -> None:
    render(cfg)


if __name__ == "__main__":
    main()
