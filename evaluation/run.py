"""Evaluate super-resolution and face-editing models.

    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[DIR,...] metrics_file=out.json
    python evaluate.py model=bicubic data.test_dirs=[DIR,...]
    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[...] metrics.lpips.enabled=true \\
        metrics.niqe.enabled=true
    python evaluate.py model=esrgan interp.psnr_weights=A interp.gan_weights=B interp.alphas=[0,0.2,0.4,0.6,0.8,1.0] \\
        data.test_dirs=[...]
    python evaluate.py model=scfegan ckpt_path=PATH data.test_dir=DIR [data.user_mask_dir=MASKS]

Super-resolution, per folder (BasicSR psnr_ssim.py): HR cropped to a multiple of scale, LR by MATLAB bicubic (8-bit),
SR by the model, both quantised to 8 bits, ``crop_border = scale``; PSNR/SSIM on the BT.601 Y channel and on RGB,
averaged over the images.  Optional: LPIPS (torchmetrics, same quantised and cropped images, lower is better) and
NIQE (MATLAB ``niqe_release`` port, of the SR image alone, Y channel, same crop; lower is better).  The Perceptual
Index needs a Ma score, which this project does not have: it is not reported, and every SR run says so.

Network interpolation: ``(1 - alpha) * theta_PSNR + alpha * theta_GAN`` for each alpha, rows keyed
``"alpha=<a>/<folder>"``; NIQE is on by default there (``metrics.niqe.enabled=auto``).

Face editing (SC-FEGAN): the images of ``data.test_dir`` (or, without it, the held-out split of a face ``data=``
config) with a fixed, seeded synthesised mask/sketch/colour/noise per image (``FaceDataModule.synthesize(...,
train=False)``), and with the user masks of ``data.user_mask_dir`` when given; L1, PSNR, SSIM on the whole image and
in the masked region, LPIPS, FID, and the mean mask coverage.  Rows ``"<folder>"``, ``"<folder>/cov_<lo>-<hi>%"``
(the same images grouped by mask coverage, ``coverage_bins``: 0-10 % ... 50-60 % as inpainting papers report),
``"<folder>/user_strokes"`` (user-stroke masks over one face part, ``user_strokes``) and ``"<folder>/user_masks"``.
The noise fed to G is the one the weights record (``noise=auto``).

Every run prints its table and, with ``metrics_file=PATH``, writes ``{"<row>": {"images": n, "<metric>": value}}``
(one key per metric; ``null`` where a metric is undefined for every image).  With ``logger=wandb`` the same table
goes to wandb.  ``evaluate(cfg)`` is a plain function the tests call; evaluate.py is its ``@hydra.main`` wrapper.
"""

import json
import logging
import os

from omegaconf import DictConfig

from evaluation.faces import evaluate_faces
from evaluation.report import log_to_loggers, print_table
from evaluation.sr import evaluate_interpolation, evaluate_sr, interpolation_requested

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    task = cfg.model.get("task")
    if cfg.get("metrics_file"):  # predict.py's rules, checked before any work
        from weights.io import check_output_file

        interp = cfg.get("interp") or {}
        check_output_file(
            cfg.metrics_file,
            (cfg.get("ckpt_path"), interp.get("psnr_weights"), interp.get("gan_weights")),
            bool(cfg.get("overwrite", False)),
            "metrics_file",
        )
    if task == "sr":
        if interpolation_requested(cfg):
            results, notes = evaluate_interpolation(cfg)
            title = f"x{cfg.data.scale} network interpolation"
        else:
            results, notes = evaluate_sr(cfg)
            title = f"x{cfg.data.scale} {'bicubic' if cfg.model.get('name') == 'bicubic' else cfg.ckpt_path}"
    elif task == "faces":
        results, notes = evaluate_faces(cfg)
        title = f"face editing {cfg.ckpt_path}"
    else:
        raise ValueError(
            f"evaluate.py evaluates model=esrgan, model=bicubic or model=scfegan; got a model with task={task!r}"
        )
    print_table(results, title, notes)
    if cfg.get("metrics_file"):
        os.makedirs(os.path.dirname(os.path.abspath(cfg.metrics_file)), exist_ok=True)
        tmp = f"{cfg.metrics_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, cfg.metrics_file)
        log.info(f"metrics written to {cfg.metrics_file}")
    log_to_loggers(cfg, results, title)
    return results
