"""CPU time of the named Real-ESRGAN models (weights/named.py) per megapixel of input, with tiling: prints figures
beside the load average, asserts nothing.

    python benchmarks/named_sr_cpu.py [--size 256] [--tile 128] [--tile-pad 10] [--rounds 2]

Runs ``inference.tiling.upscale`` (what predict.py and the app run) on a ``size`` x ``size`` crop of Set14 ``comic``
(../shared/data; Set5 ``butterfly`` from data/demo without it), x4plus and animevideov3-x4 interleaved, ``rounds``
times each, and reports process CPU seconds (all threads) and wall seconds per input megapixel (median over rounds).
Tiles of ``tile`` px with ``tile_pad`` px of context (10: Real-ESRGAN inference_realesrgan.py's default; ``auto``:
the exact receptive margin, tiled == untiled, 349 px for x4plus, 18 for animevideov3).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse
import statistics
import time

import numpy as np
import torch

from inference.images import read_image
from inference.tiling import upscale
from weights.io import build_generator
from weights.named import named_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = [
    os.path.join(ROOT, "..", "shared", "data", "sr", "val", "Set14", "comic.png"),
    os.path.join(ROOT, "data", "demo", "val", "Set5", "butterfly.png"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--tile-pad", default="10")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["realesrgan-x4plus", "realesr-animevideov3-x4"])
    args = ap.parse_args()
    path = next(p for p in IMAGES if os.path.isfile(p))
    img = read_image(path)
    h, w = img.size
    s = min(args.size, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    img.pixels = np.ascontiguousarray(img.pixels[y0 : y0 + s, x0 : x0 + s])
    nets = {m: build_generator(named_weights(m))[0] for m in args.models}
    mp = s * s / 1e6
    print(f"input: {s}x{s} crop of {os.path.basename(path)} ({mp:.4f} MP), tile={args.tile} tile_pad={args.tile_pad}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cpu = {m: [] for m in nets}
    wall = {m: [] for m in nets}
    for r in range(args.rounds):
        for m, net in nets.items():  # interleaved, so that the machine's load falls on both alike
            c0, t0 = time.process_time(), time.perf_counter()
            out = upscale(net, img, net.scale, torch.device("cpu"), args.tile, args.tile_pad)
            cpu[m].append(time.process_time() - c0)
            wall[m].append(time.perf_counter() - t0)
            assert out.shape[:2] == (4 * s, 4 * s)
            print(f"  round {r}: {m}: {cpu[m][-1]:.1f} CPU s, {wall[m][-1]:.1f} wall s", flush=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for m in nets:
        c, t = statistics.median(cpu[m]), statistics.median(wall[m])
        print(f"{m}: {c / mp:.0f} CPU s / MP, {t / mp:.0f} wall s / MP (median of {args.rounds})")
    if len(nets) == 2:
        a, b = nets
        print(f"ratio {a} / {b} (CPU time): {statistics.median(cpu[a]) / statistics.median(cpu[b]):.1f}")


if __name__ == "__main__":
    main()
