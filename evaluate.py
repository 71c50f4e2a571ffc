"""Evaluate a super-resolution model under the BasicSR protocol.

    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[DIR,...] metrics_file=out.json
    python evaluate.py model=bicubic data.test_dirs=[DIR,...]

Per folder: HR cropped to a multiple of the scale, LR by MATLAB bicubic (8-bit), SR by the model, both
quantised to 8 bits, ``crop_border = scale``; PSNR/SSIM on the BT.601 Y channel and on RGB, averaged
over the images (REFERENCE 2.10).  ``evaluate(cfg)`` is a plain function the tests call.
"""

import tv_compat  # noqa: F401  (must precede anything that imports torchvision)

import json
import logging
import os

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from rich.table import Table

from archs.weights_io import load_generator_state, load_into
from datamodules.sr_datamodule import SRValDataset, folder_name, make_lr
from metrics.sr_metrics import sr_metrics
from ops.imresize import imresize

log = logging.getLogger(__name__)
COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_sr_model(cfg: DictConfig, device: torch.device):
    """A callable LR -> SR: bicubic, or the generator of ``cfg.ckpt_path``."""
    scale = int(cfg.data.scale)
    if cfg.model.get("name") == "bicubic":
        return lambda lq: imresize(lq, scale)
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=... is required for model=esrgan (model=bicubic needs none)")
    gen_cfg = OmegaConf.to_container(cfg.model.generator, resolve=True)
    path = os.path.expanduser(cfg.ckpt_path)
    if path.endswith(".ckpt") and os.path.isfile(path):
        # The checkpoint knows its own architecture (e.g. the narrow demo net).
        hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
        gen_cfg = hparams.get("generator", gen_cfg)
    net = instantiate(gen_cfg)
    load_into(net, load_generator_state(path, prefer="params_ema" if cfg.use_ema else "params"), source=path)
    net.eval().to(device)
    return net


@torch.no_grad()
def evaluate_sr(cfg: DictConfig) -> dict[str, dict]:
    device = pick_device(cfg.device)
    model = build_sr_model(cfg, device)
    scale = int(cfg.data.scale)
    results = {}
    for folder in cfg.data.test_dirs:
        ds = SRValDataset(folder, scale, on_bad_image=cfg.data.on_bad_image)
        sums = {k: 0.0 for k in COLUMNS}
        for i in track(range(len(ds)), description=f"{folder_name(folder)}", transient=True):
            gt = ds[i]["gt"].unsqueeze(0).to(device)
            sr = model(make_lr(gt, scale, quantize=True))
            values = sr_metrics(sr, gt, crop_border=scale)
            for k in COLUMNS:
                sums[k] += float(values[k][0])
        results[folder_name(folder)] = {"images": len(ds), **{k: sums[k] / len(ds) for k in COLUMNS}}
    return results


def print_table(results: dict[str, dict], title: str) -> None:
    table = Table(title=title)
    table.add_column("folder")
    table.add_column("images", justify="right")
    for k in COLUMNS:
        table.add_column(k.replace("_", "-").upper().replace("RGB", "RGB"), justify="right")
    for name, row in results.items():
        table.add_row(name, str(row["images"]), *(f"{row[k]:.4f}" for k in COLUMNS))
    Console().print(table)


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    if cfg.model.get("task") != "sr":
        raise ValueError(
            f"evaluate.py evaluates super-resolution models (model=esrgan or model=bicubic); "
            f"got a model with task={cfg.model.get('task')!r}"
        )
    results = evaluate_sr(cfg)
    name = cfg.model.get("name", "esrgan") if cfg.model.get("name") == "bicubic" else cfg.ckpt_path
    print_table(results, f"x{cfg.data.scale} {name}")
    if cfg.get("metrics_file"):
        os.makedirs(os.path.dirname(os.path.abspath(cfg.metrics_file)), exist_ok=True)
        with open(cfg.metrics_file, "w") as f:
            json.dump(results, f, indent=2)
        log.info(f"metrics written to {cfg.metrics_file}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
