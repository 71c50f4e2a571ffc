"""How far ops/diffjpeg.py is from a real JPEG codec: mean |DiffJPEG - PIL| in 8-bit levels (prints, asserts nothing).

    python benchmarks/jpeg_vs_pil.py                       # Set5 shipped in data/demo
    python benchmarks/jpeg_vs_pil.py --folder DIR --qualities 10 30 50 75 95

PIL encodes with libjpeg(-turbo), 4:2:0 chroma, the standard tables scaled by quality, and decodes with its
defaults; the same images go through DiffJPEG with the defaults and with Real-ESRGAN's DiffJPEG conventions.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ops.diffjpeg import DiffJPEG


def pil_jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)


def main():
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=str(root / "data" / "demo" / "val" / "Set5"))
    p.add_argument("--qualities", type=int, nargs="+", default=[30, 50, 75, 95])
    args = p.parse_args()
    files = sorted(f for f in Path(args.folder).iterdir() if f.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"))
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    print(f"{len(imgs)} images from {args.folder}; PIL {Image.__version__}")
    modes = {
        "DiffJPEG default": DiffJPEG(),
        "Real-ESRGAN conventions": DiffJPEG(table_rounding="none", chroma_upsampling="nearest", sample_rounding=False),
    }
    refs = {q: [pil_jpeg(a, q) for a in imgs] for q in args.qualities}
    print(
        "PIL vs original".ljust(26)
        + " ".join(
            f"q{q}: {np.mean([np.abs(a - r).mean() for a, r in zip(imgs, refs[q])]):6.3f}" for q in args.qualities
        )
    )
    for name, jpeg in modes.items():
        cells = []
        for q in args.qualities:
            diffs, worst = [], 0.0
            for a, ref in zip(imgs, refs[q]):
                x = torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]
                out = (jpeg(x, q)[0].permute(1, 2, 0).numpy() * 255).round()
                d = np.abs(out - ref)
                diffs.append(d.mean())
                worst = max(worst, float(d.max()))
            cells.append(f"q{q}: {np.mean(diffs):6.3f} (max {worst:3.0f})")
        print(name.ljust(26) + " ".join(cells))


if __name__ == "__main__":
    main()
