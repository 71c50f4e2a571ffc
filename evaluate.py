"""Evaluate super-resolution and face-editing models.

    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[DIR,...] metrics_file=out.json
    python evaluate.py model=bicubic data.test_dirs=[DIR,...]
    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[...] metrics.lpips.enabled=true \\
        metrics.niqe.enabled=true
    python evaluate.py model=esrgan interp.psnr_weights=A interp.gan_weights=B interp.alphas=[0,0.2,0.4,0.6,0.8,1.0] \\
        data.test_dirs=[...]
    python evaluate.py model=scfegan ckpt_path=PATH data.test_dir=DIR [data.user_mask_dir=MASKS]

The protocol (BasicSR PSNR/SSIM, LPIPS/NIQE, interpolation rows, face-editing rows, the metrics file) is
described where it is implemented, in ``evaluation/run.py``; this file is its ``@hydra.main`` wrapper.
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
