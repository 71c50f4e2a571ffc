"""Before/after picture of a named Real-ESRGAN model for the README (docs/realesrgan_x4plus_comic.png).

    python scripts/upscale_picture.py [--image ../shared/data/sr/val/Set14/comic.png] [--box 96 112 176 192]
        [--weights realesrgan-x4plus] [--out docs/realesrgan_x4plus_comic.png]

The ``box`` (left, top, right, bottom) of the image is the input; left: it enlarged x4 by nearest neighbour (the
pixels the network sees), right: the network's x4 result through ``inference.tiling.upscale`` (what predict.py runs).
Set14 (Zeyde et al. 2010) is a public benchmark set; the crop is kept small.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse

import numpy as np
import torch
from PIL import Image as PILImage

from inference.images import read_image, write_png
from inference.tiling import upscale
from weights.io import build_generator
from weights.named import resolve_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=os.path.join(ROOT, "..", "shared", "data", "sr", "val", "Set14", "comic.png"))
    ap.add_argument("--box", type=int, nargs=4, default=[96, 112, 176, 192])
    ap.add_argument("--weights", default="realesrgan-x4plus")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "realesrgan_x4plus_comic.png"))
    args = ap.parse_args()
    img = read_image(args.image)
    left, top, right, bottom = args.box
    img.pixels = np.ascontiguousarray(img.pixels[top:bottom, left:right, :3])
    net, _ = build_generator(resolve_weights(args.weights))
    after = upscale(net, img, net.scale, torch.device("cpu"), tile="auto", tile_pad="auto")
    before = np.asarray(PILImage.fromarray(img.pixels).resize(after.shape[1::-1], PILImage.NEAREST))
    gap = np.full((after.shape[0], 4, 3), 255, np.uint8)
    write_png(args.out, np.concatenate([before, gap, after], axis=1))
    print(f"{args.out}: {os.path.getsize(args.out) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
