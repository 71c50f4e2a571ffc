"""A local web app for the two generators (Gradio): SC-FEGAN face editing and ESRGAN super-resolution.

    python app.py                                   # newest demo runs under logs/, http://127.0.0.1:7860
    python app.py weights=G.pth sr_weights=net_g_gan.pth sr_psnr_weights=net_g_psnr.pth port=8080

Config: ``conf/app.yaml``; README "Browser app".  The page is ``webui.page.build_app(cfg)`` (the tests launch it
on a free port); this file launches it under ``@hydra.main``.  API endpoints:

- ``/edit_face`` (image, mask, sketch, color, seed) -> (PNG file, summary): mask / sketch / colour files as
  ``predict.py`` takes them (same size as the image; sketch and colour optional).
- ``/upscale`` (image, alpha, tile) -> (PNG file, summary).

Face editing: the editor has three layers, one per mode of the official SC-FEGAN GUI (mask = its "erase" mode,
sketch lines, colour strokes); the mode buttons select the layer and its brush.  Undo / redo / clear, the eraser
(removes strokes), zoom and pan are the editor's own; "Use result as input", the mask as a PNG and grow / shrink
make editing iterative.  The result is composited on the uploaded file itself (not on the editor's re-rendered canvas), so outside
the mask it equals the upload bit for bit.
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
from webui.page import build_app, launch_kwargs


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    reuse_freed_memory()  # each edit's activations reuse the last one's memory (inference/device.py)
    demo = build_app(cfg)
    demo.queue(default_concurrency_limit=1).launch(**launch_kwargs(cfg, demo))


if __name__ == "__main__":
    main()
