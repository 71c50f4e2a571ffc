"""How far the training LR is from the matching crop of the whole image's LR: prints figures, asserts nothing.

    python benchmarks/lr_crop_parity.py ../shared/data/sr/train --crops 2000 --gt-size 128

A pre-made LR folder (DIV2K ``LR_bicubic/X4``) holds the LR of whole images; the on-device LR is made from the
training crop.  For random crops at offsets that are multiples of the scale (so that a matching LR crop exists),
this compares, on 8-bit levels, the crop of the whole-image LR with the LR made (a) from the bare HR crop
(``data.lr_margin=0``, the previous behaviour) and (b) from the crop with ``data.lr_margin`` context pixels
(``auto``: the kernel's support), and prints the share of differing values, the largest difference in levels and
where the differences sit (LR rings counted from the crop border).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse

import numpy as np
import torch

from datamodules.image_io import list_images, read_image
from datamodules.sr_datamodule import _mirror_window, lr_from_context, make_lr
from ops.imresize import support_margin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--gt-size", type=int, default=128)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--margin", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s, g = a.scale, a.gt_size
    margin = support_margin(s) if a.margin == "auto" else int(a.margin)
    rng = np.random.default_rng(a.seed)
    files = [f for f in list_images(a.folder)]
    images = []
    for f in files:
        img = read_image(f)
        h, w = img.shape[0] - img.shape[0] % s, img.shape[1] - img.shape[1] % s
        if min(h, w) >= g:
            images.append(img[:h, :w])
    per_image = max(1, a.crops // len(images))
    stats = {
        "bare crop (lr_margin=0)": [0, 0, 0, np.zeros(g // s // 2 + 1)],
        f"margin {margin} (lr_margin=auto)": [0, 0, 0, np.zeros(g // s // 2 + 1)],
    }
    n = g // s
    i = torch.arange(n)
    ring = torch.minimum(torch.minimum(i[:, None], i[None, :]), torch.minimum(n - 1 - i[:, None], n - 1 - i[None, :]))
    for img in images:
        hr = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].double()
        whole = make_lr(hr, s)[0]
        for _ in range(per_image):
            t = s * int(rng.integers(0, (img.shape[0] - g) // s + 1))
            l = s * int(rng.integers(0, (img.shape[1] - g) // s + 1))
            ref = whole[:, t // s : (t + g) // s, l // s : (l + g) // s]
            bare = make_lr(hr[..., t : t + g, l : l + g], s)[0]
            ctx = torch.from_numpy(_mirror_window(img, t - margin, l - margin, g + 2 * margin, g + 2 * margin).copy())
            _, with_margin = lr_from_context(ctx.permute(2, 0, 1)[None].double(), s, margin)
            for (_name, st), lq in zip(stats.items(), (bare, with_margin[0])):
                levels = ((lq - ref).abs() * 255).round()
                st[0] += int((levels > 0).sum())
                st[1] += levels.numel()
                st[2] = max(st[2], int(levels.max()))
                st[3] += np.bincount(ring[(levels > 0).any(0)].numpy(), minlength=len(st[3]))[: len(st[3])]
    print(f"{len(images)} images x {per_image} crops of {g}x{g} (x{s}, offsets multiples of {s}), seed {a.seed}")
    for name, (diff, total, worst, rings) in stats.items():
        where = ", ".join(f"ring {r}: {int(c)}" for r, c in enumerate(rings) if c)  # LR pixels with any channel off
        print(
            f"  {name:32s} {100 * diff / total:7.3f} % of LR values differ, max {worst} levels"
            + (f"  ({where})" if where else "")
        )


if __name__ == "__main__":
    main()
