"""Write a seeded evaluation mask set: PNG masks (255 = erased, as LaMa writes them) and ``manifest.json``.

    python -m scripts.make_eval_masks --preset thin --num 1000 --size 256 --seed 0 --out masks/thin
    python -m scripts.make_eval_masks --preset free_form --num 1000 --size 512 --seed 0 --out masks/free_form

Presets (synthesis/mask_presets.py): thin, medium, thick (LaMa), free_form (SC-FEGAN Algorithm 1 as
conf/data/synthesis/default.yaml configures it), user_strokes (synthesis.masks.UserStrokeMask).  Mask ``i`` depends
only on (preset, size, seed, i): the same command writes the same bytes.  The manifest holds the preset, its
parameters with their source, the seed, per-file coverage and SHA-256, the count per 10 % coverage bin and the
generator version.  An existing ``--out`` is refused; ``--overwrite`` replaces it only when it holds a manifest this
command wrote (the new set is written beside it first, so a failed run loses nothing).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat

import argparse
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthesis.mask_presets import GENERATOR_VERSION, MANIFEST, PRESETS, bin_label, build_preset, coverage_bin
from synthesis.mask_presets import MANIFEST_TOOL as TOOL


def png_bytes(mask: np.ndarray) -> bytes:
    """A mask {0, 1} [H, W] as 8-bit grayscale PNG bytes (no metadata: identical bytes for identical masks)."""
    buf = io.BytesIO()
    Image.fromarray((mask.astype(np.uint8) * 255), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def make_masks(preset: str, num: int, size: int, seed: int, batch: int = 32):
    """Yield (index, mask uint8 {0, 1} [size, size]) for the set."""
    module, _ = build_preset(preset, size)
    for start in range(0, num, batch):
        idx = torch.arange(start, min(start + batch, num))
        masks = module(torch.zeros(len(idx), 1, size, size), idx, epoch=0, seed=seed)
        for k, i in enumerate(idx.tolist()):
            yield i, (masks[k, 0] > 0.5).numpy().astype(np.uint8)


def check_args(args) -> None:
    if args.preset not in PRESETS:
        raise SystemExit(f"--preset {args.preset!r}: expected one of {', '.join(PRESETS)}")
    if args.num < 1:
        raise SystemExit(f"--num {args.num}: must be >= 1")
    if not 32 <= args.size <= 4096:
        raise SystemExit(f"--size {args.size}: must be in [32, 4096] px")
    if not 0 <= args.seed < 2**63:
        raise SystemExit(f"--seed {args.seed}: must be in [0, 2**63)")


def write_set(preset: str, num: int, size: int, seed: int, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write the set into ``out`` (see the module docstring); returns the manifest."""
    out = Path(out).expanduser()
    if out.exists():
        if not overwrite:
            raise FileExistsError(
                f"--out {str(out)!r} already exists; pass --overwrite to replace a mask set, or choose a new folder"
            )
        if not (out / MANIFEST).is_file() or json.loads((out / MANIFEST).read_text()).get("tool") != TOOL:
            raise FileExistsError(
                f"--out {str(out)!r} exists and is not a mask set written by {TOOL} (no "
                f"{MANIFEST} of ours): refusing to replace it, even with --overwrite"
            )
    _, params = build_preset(preset, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        digits = max(4, len(str(num - 1)))
        files, counts = [], [0] * 10
        for i, mask in make_masks(preset, num, size, seed):
            data = png_bytes(mask)
            name = f"{i:0{digits}d}.png"
            (tmp / name).write_bytes(data)
            cov = float(mask.mean())
            k = coverage_bin(cov)
            counts[k] += 1
            files.append(
                {
                    "file": name,
                    "index": i,
                    "coverage": cov,
                    "bin": bin_label(k),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        manifest = {
            "tool": TOOL,
            "generator_version": GENERATOR_VERSION,
            "preset": preset,
            "size": [size, size],
            "num": num,
            "seed": seed,
            "parameters": params,
            "convention": "8-bit PNG, 255 = erased (M = 1), 0 = kept",
            "coverage_bins": "10 %-wide, (lo, hi], the first [0, 10 %] (evaluate.py's bin_index convention)",
            "counts_per_bin": {bin_label(k): c for k, c in enumerate(counts)},
            "coverage_mean": float(np.mean([f["coverage"] for f in files])),
            "versions": {"numpy": np.__version__, "torch": torch.__version__},
            "command": f"python -m {TOOL} --preset {preset} --num {num} --size {size} --seed {seed} --out {out}",
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "set")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--num", type=int, required=True, help="number of masks")
    p.add_argument("--size", type=int, default=256, help="mask side in px (LaMa: 256 or 512; others scaled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing mask set written by this command")
    args = p.parse_args(argv)
    check_args(args)
    try:
        manifest = write_set(args.preset, args.num, args.size, args.seed, args.out, args.overwrite)
    except FileExistsError as err:
        raise SystemExit(str(err)) from None
    bins = ", ".join(f"{k} {v}" for k, v in manifest["counts_per_bin"].items() if v)
    print(
        f"wrote {args.num} {args.preset} masks ({args.size} px, seed {args.seed}) to {args.out}: mean coverage "
        f"{100 * manifest['coverage_mean']:.1f} %; per bin: {bins}"
    )
    return manifest


if __name__ == "__main__":
    main()
