"""HED (``sketch.hed_weights=hed-bsds500``) vs the classic detector on labelled faces, side by side (interleaved).

    python benchmarks/sketch_detectors.py --faces ../shared/data/faces/celebamask_mini/train --num 20
    python benchmarks/sketch_detectors.py ... --detectors hed classic canny --save-dir /tmp/sketches
    python benchmarks/sketch_detectors.py ... --detectors hed hed-plain     # HED with / without CLAHE first

Per detector, over the same images: CPU milliseconds per image (process time, torch threads ``--threads``);
edge density (% sketch pixels); curves (8-connected components of the sketch: count per face, median and mean
length in px, share of sketch pixels on curves of at least 50 px); and the share of face contours from the
CelebAMask-HQ labels that lie within ``--tolerance`` px (at 512) of a sketch pixel: the face outline (boundary of
the face parts against background / hair / neck / cloth / hat), and of it the hairline (against hair) and the
jaw / chin (against neck, background, cloth), and the eye and mouth contours.  ``chance`` is the share of all
pixels within the tolerance of a sketch pixel: what a contour placed at random would get.  ``on parts``: the share
of sketch pixels within the tolerance of any label boundary (the rest is texture: pores, hair strands, wrinkles).
``hed-plain`` is ``hed`` with ``hed_clahe=false`` (no CLAHE: pix2pix batch_hed.py).
Figures only, printed beside the load average; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tv_compat  # must precede anything that imports torchvision

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from kornia.contrib import connected_components_union_find

from datamodules.image_io import list_images, read_image, read_label_map
from synthesis.sketch import SketchExtractor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CelebAMask-HQ classes (celebamask_mini README): 1 skin, 2 nose, 3 eye_g, 4/5 eyes, 6/7 brows, 8/9 ears,
# 10 mouth, 11/12 lips; 0 background, 13 hair, 14 hat, 17 neck, 18 cloth.
FACE = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
EYES = (4, 5)
MOUTH = (10, 11, 12)


def _members(labels: torch.Tensor, classes) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(classes))


def _touches(region: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Pixels of ``region`` with a 4-neighbour in ``other`` ([H, W] bool)."""
    o = F.pad(other[None, None].float(), (1, 1, 1, 1))
    near = (o[..., :-2, 1:-1] + o[..., 2:, 1:-1] + o[..., 1:-1, :-2] + o[..., 1:-1, 2:])[0, 0] > 0
    return region & near


def contours(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    face = _members(labels, FACE)
    eyes, mouth = _members(labels, EYES), _members(labels, MOUTH)
    return {
        "outline": _touches(face, ~face),
        "hairline": _touches(face, _members(labels, (13, 14))),
        "jaw": _touches(_members(labels, (1,)), _members(labels, (0, 17, 18))),
        "eyes": _touches(eyes, ~eyes),
        "mouth": _touches(mouth, ~mouth),
    }


def curve_lengths(sketch: torch.Tensor) -> np.ndarray:
    lab = connected_components_union_find(sketch[None, None].to(torch.uint8))
    sizes = torch.bincount(lab.flatten())[1:]
    return sizes[sizes > 0].numpy()


def _cfg(overrides: list[str]) -> dict:
    with open(os.path.join(ROOT, "conf/data/synthesis/default.yaml")) as f:
        cfg = dict(yaml.safe_load(f)["sketch"])
    cfg.pop("_target_", None)
    for item in overrides:
        key, value = item.split("=", 1)
        cfg[key] = yaml.safe_load(value)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", default=os.path.join(ROOT, "../shared/data/faces/celebamask_mini/train"))
    ap.add_argument("--num", type=int, default=20)
    ap.add_argument("--detectors", nargs="+", default=["hed", "classic"])
    ap.add_argument("--hed-weights", default="hed-bsds500")
    ap.add_argument("--tolerance", type=float, default=3.0, help="px at 512")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-dir", default=None, help="write each sketch as PNG here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = list_images(os.path.join(args.faces, "images"))[: args.num]
    extractors = {
        d: SketchExtractor(
            **{
                **_cfg([]),
                "detector": d.split("-")[0],
                "hed_weights": args.hed_weights if d.startswith("hed") else None,
                "hed_clahe": d != "hed-plain",
            }
        )
        for d in args.detectors
    }
    stats = {
        d: {
            "cpu": [],
            "density": [],
            "curves": [],
            "lengths": [],
            "chance": [],
            "on_parts": [],
            **{k: [] for k in ("outline", "hairline", "jaw", "eyes", "mouth")},
        }
        for d in args.detectors
    }
    load0 = os.getloadavg()
    for n, f in enumerate(files):
        img = torch.from_numpy(np.ascontiguousarray(read_image(f))).permute(2, 0, 1)[None] * 2 - 1
        stem = os.path.splitext(os.path.basename(f))[0]
        labels = torch.from_numpy(read_label_map(os.path.join(args.faces, "masks", stem + ".png"))).long()
        cont = contours(labels)
        r = max(1, round(args.tolerance * min(img.shape[-2:]) / 512))
        parts = torch.zeros_like(labels, dtype=torch.bool)  # any label boundary
        parts[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        parts[1:, :] |= labels[1:, :] != labels[:-1, :]
        near_parts = F.max_pool2d(parts[None, None].float(), 2 * r + 1, 1, r)[0, 0] > 0
        order = args.detectors if n % 2 == 0 else args.detectors[::-1]  # interleaved, alternating first
        for d in order:
            c0 = time.process_time()
            sk = extractors[d](img)[0, 0] > 0.5
            s = stats[d]
            s["cpu"].append(time.process_time() - c0)
            near = F.max_pool2d(sk[None, None].float(), 2 * r + 1, 1, r)[0, 0] > 0
            s["density"].append(sk.float().mean().item() * 100)
            s["chance"].append(near.float().mean().item() * 100)
            s["on_parts"].append((sk & near_parts).sum().item() / max(1, sk.sum().item()) * 100)
            lengths = curve_lengths(sk)
            s["curves"].append(len(lengths))
            s["lengths"].extend(lengths.tolist())
            for k, c in cont.items():
                if c.sum() >= 20:
                    s[k].append((near & c).sum().item() / c.sum().item() * 100)
            if args.save_dir:
                from PIL import Image

                os.makedirs(args.save_dir, exist_ok=True)
                Image.fromarray((sk.numpy() * 255).astype(np.uint8)).save(
                    os.path.join(args.save_dir, f"{stem}_{d}.png")
                )
    print(
        f"{len(files)} faces from {args.faces}, torch threads {torch.get_num_threads()}, tolerance {args.tolerance} px "
        f"at 512; load average {load0[0]:.2f} -> {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    for d, s in stats.items():
        lengths = np.array(s["lengths"])
        long_share = lengths[lengths >= 50].sum() / max(1, lengths.sum()) * 100
        print(f"\n{d}: {extractors[d].extra_repr()[:120]}...")
        print(f"  CPU per image: median {1000 * np.median(s['cpu']):.0f} ms, mean {1000 * np.mean(s['cpu']):.0f} ms")
        print(f"  edge pixels: median {np.median(s['density']):.2f} %, mean {np.mean(s['density']):.2f} %")
        print(
            f"  curves per face: median {np.median(s['curves']):.0f}; length median {np.median(lengths):.0f} px, "
            f"mean {lengths.mean():.1f} px; sketch pixels on curves >= 50 px: {long_share:.0f} %"
        )
        print(
            "  contours covered (mean %): "
            + ", ".join(
                f"{k} {np.mean(s[k]):.0f} (n={len(s[k])})" for k in ("outline", "hairline", "jaw", "eyes", "mouth")
            )
            + f"; chance {np.mean(s['chance']):.0f}; sketch pixels on part boundaries {np.mean(s['on_parts']):.0f} %"
        )
    if len(stats) > 1:
        a, b = args.detectors[:2]
        print(
            f"\nCPU ratio {a}/{b} (per image, median of ratios): "
            f"{np.median(np.array(stats[a]['cpu']) / np.array(stats[b]['cpu'])):.2f}"
        )


if __name__ == "__main__":
    main()
