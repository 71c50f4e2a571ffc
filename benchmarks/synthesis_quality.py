"""CPU time per 512 image of the SC-FEGAN sketch / colour channels, sketch edge density and colour region count.

    python benchmarks/synthesis_quality.py --faces ../shared/data/faces/celebamask_mini/train --num 20
    python benchmarks/synthesis_quality.py ... --sketch canny      # the old default detector, for comparison
    python benchmarks/synthesis_quality.py ... --color-override work_size=null  # full-resolution colour

Prints: per-image CPU milliseconds (sketch; colour with labels; colour without labels), median / mean edge
density (% sketch pixels over the whole image, before x M), median number of colour regions per face
(8-connected regions of constant colour with at least 64 px; unlabelled path) and distinct colours.
Figures only; nothing is asserted (timed checks do not belong in tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tv_compat

import cv2
import numpy as np
import torch
import yaml
from kornia.contrib import connected_components_union_find

from datamodules.image_io import list_images, read_image, read_label_map
from synthesis.color import ColorMapExtractor
from synthesis.sketch import SketchExtractor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(section: str, overrides: list[str]) -> dict:
    with open(os.path.join(ROOT, "conf/data/synthesis/default.yaml")) as f:
        cfg = dict(yaml.safe_load(f)[section])
    cfg.pop("_target_", None)
    for item in overrides:
        key, value = item.split("=", 1)
        cfg[key] = yaml.safe_load(value)
    return cfg


def count_regions(color: torch.Tensor, min_px: int = 64) -> tuple[int, int]:
    """(8-connected constant-colour regions with >= min_px pixels, distinct colours) of one [3, H, W] map."""
    codes = torch.unique(color.flatten(1), dim=1, return_inverse=True)[1].view(color.shape[1:])
    regions = 0
    for c in codes.unique().tolist():
        lab = connected_components_union_find((codes == c)[None, None].to(torch.uint8))
        sizes = torch.bincount(lab.flatten())[1:]
        regions += int((sizes >= min_px).sum())
    return regions, int(codes.max()) + 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", default=os.path.join(ROOT, "../shared/data/faces/celebamask_mini/train"))
    ap.add_argument("--num", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--sketch", default=None, help="detector override (canny | classic), else the config's")
    ap.add_argument("--sketch-override", nargs="*", default=[])
    ap.add_argument("--color-override", nargs="*", default=[])
    ap.add_argument(
        "--fidelity",
        action="store_true",
        help="also compare the labelled colour map with exact full-resolution filtering + sort medians",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: CPU time not inflated by oversubscription on a shared machine)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    files = list_images(os.path.join(args.faces, "images"))[: args.num]
    imgs, segs = [], []
    for f in files:
        img = read_image(f)  # float32 HWC RGB in [0, 1]
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) * 2 - 1)
        lab_path = os.path.join(args.faces, "masks", os.path.splitext(os.path.basename(f))[0] + ".png")
        segs.append(torch.from_numpy(read_label_map(lab_path)).long()[None] if os.path.exists(lab_path) else None)
    images = torch.stack(imgs)
    sk_cfg = _cfg("sketch", args.sketch_override)
    if args.sketch:
        sk_cfg["detector"] = args.sketch
    sk_cfg = {k: v for k, v in sk_cfg.items() if k in SketchExtractor.__init__.__code__.co_varnames}
    sketch = SketchExtractor(**sk_cfg)
    co_cfg = _cfg("color", args.color_override)
    color = ColorMapExtractor(
        **{k: v for k, v in co_cfg.items() if k in ColorMapExtractor.__init__.__code__.co_varnames}
    )
    print(
        f"{len(files)} images {tuple(images.shape[-2:])}, batch {args.batch}, torch threads "
        f"{torch.get_num_threads()}\nsketch: {sketch.extra_repr()}\ncolor: {color.extra_repr()}"
    )

    def timed(fn):
        outs, t, c = [], 0.0, 0.0
        for i in range(0, len(images), args.batch):
            t0, c0 = time.perf_counter(), time.process_time()
            outs.append(fn(i))
            t += time.perf_counter() - t0
            c += time.process_time() - c0
        return torch.cat(outs), f"{1000.0 * c / len(images):.0f} ms CPU ({1000.0 * t / len(images):.0f} ms wall)"

    sk, t_sk = timed(lambda i: sketch(images[i : i + args.batch]))
    density = sk.flatten(1).mean(1) * 100
    col_free, t_free = timed(lambda i: color(images[i : i + args.batch]))
    labelled = all(s is not None for s in segs)
    if labelled:
        seg = torch.stack(segs)
        _, t_lab = timed(lambda i: color(images[i : i + args.batch], seg[i : i + args.batch]))
    counts = [count_regions(c) for c in col_free]
    if args.fidelity and labelled:
        exact = ColorMapExtractor(
            **{
                **{k: v for k, v in co_cfg.items() if k in ColorMapExtractor.__init__.__code__.co_varnames},
                "work_size": None,
                "median_bins": None,
            }
        )
        fast, _ = timed(lambda i: color(images[i : i + args.batch], seg[i : i + args.batch]))
        ref, t_ref = timed(lambda i: exact(images[i : i + args.batch], seg[i : i + args.batch]))
        diff = (fast - ref).abs() * 127.5  # 8-bit levels
        print(
            f"fidelity vs exact full-resolution colour (labelled, {t_ref}/image): mean |diff| "
            f"{diff.mean():.2f}, 99th pct {diff.flatten().kthvalue(int(0.99 * diff.numel())).values:.2f}, "
            f"max {diff.max():.2f} (8-bit levels)"
        )
    print(
        f"sketch: {t_sk}/image; edge pixels median {density.median():.2f} %, mean {density.mean():.2f} %, "
        f"min {density.min():.2f} %, max {density.max():.2f} %"
    )
    if labelled:
        print(f"colour with labels: {t_lab}/image")
    print(
        f"colour without labels: {t_free}/image; regions (>=64 px) per face median "
        f"{np.median([c[0] for c in counts]):.0f} (range {min(c[0] for c in counts)}-{max(c[0] for c in counts)}), "
        f"distinct colours median {np.median([c[1] for c in counts]):.0f}"
    )


if __name__ == "__main__":
    main()
