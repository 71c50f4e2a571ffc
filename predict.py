"""Inference with the trained (or published) generators, and export.

    python predict.py model=esrgan weights=PATH input=FILE_OR_DIR output=DIR [tile=256 tile_pad=auto] [precision=bf16]
    python predict.py model=scfegan weights=G.pth input=face.png mask=mask.png sketch=sketch.png color=color.png output=out.png
    python predict.py model=esrgan weights=PATH export=onnx|torchscript|safetensors export_path=G.onnx

The work is ``inference.run.predict(cfg)`` (a plain function the tests call); this file is its ``@hydra.main``
wrapper.  See README "Predict and export".

ESRGAN (x4, or whatever scale the weights have): PNG out with the input's name; RGB stays RGB, grayscale stays
grayscale (the gray image is replicated to RGB for the network and the result converted back with BT.601
weights, as Real-ESRGAN does), RGBA keeps an alpha channel upscaled separately (``alpha_upsampler``), 16-bit
inputs give 16-bit outputs (float inputs too).  Large images go through tiles; with ``tile_pad`` at least the
network's receptive margin (``tile_pad=auto``) the tiled result equals the untiled one up to float rounding.

SC-FEGAN: the official demo's encodings (demo.py:58-186); the result equals the input outside the mask, bit for
bit: the generated image is resized back to the input's size, quantised to the input's type, and taken only
where the (original-size) mask is set.
"""

import os

# Torch's OpenMP threads spin while they wait for each other; where the cores are shared (other programs, a
# busy laptop) the spinning burns the time its partner thread needs.  PASSIVE (waiting threads sleep), measured
# by benchmarks/omp_wait_policy.py (issue 21) on 2 busy cores, 2 threads: SC-FEGAN 512 3.3 -> 1.9 CPU-s, tiled
# RRDBNet 24 -> 2.6 CPU-s; 1 thread unchanged.  libgomp reads the variable once, when torch loads: so before
# tv_compat (which imports torch); setdefault keeps a value the user set.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tv_compat

import hydra
from omegaconf import DictConfig

from inference.device import reuse_freed_memory
from inference.run import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    reuse_freed_memory()  # each image's activations reuse the last one's memory (inference/device.py)
    predict(cfg)


if __name__ == "__main__":
    main()
