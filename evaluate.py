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
goes to wandb.  The work is ``evaluation.run.evaluate(cfg)`` (a plain function the tests call); this file is its
``@hydra.main`` wrapper.
"""

import tv_compat

import hydra
from omegaconf import DictConfig

from evaluation.run import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
