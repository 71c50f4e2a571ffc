"""Crop large training images into overlapping sub-images for faster loading, as BasicSR prepares DIV2K.

    python -m scripts.extract_subimages --input data/DIV2K/DIV2K_train_HR --output data/DIV2K/DIV2K_train_HR_sub \
        --crop-size 480 --step 240
    # pre-made LR folders, as BasicSR: X4 with --crop-size 120 --step 60 (X2: 240/120, X3: 160/80)

Follows BasicSR ``scripts/data_preparation/extract_subimages.py`` (XPixelGroup/BasicSR): crop_size 480, step 240,
thresh_size 0 for DIV2K_train_HR; the windows start at 0, step, 2 step, ... while they fit, plus one flush with the
far border when more than ``thresh_size`` pixels would be left uncovered; sub-image ``k`` (1-based, row-major) of
``0001.png`` is ``0001_s{k:03d}.png``, with ``x2``/``x3``/``x4``/``x8`` removed from the name as BasicSR does for
DIV2K's LR files; PNG compression level 3 (BasicSR's default); images read unchanged (16-bit and alpha kept).

Differences: the output is always PNG (lossless, whatever the input); an image smaller than the crop is skipped with a
warning (BasicSR fails on it).  An existing ``--output`` is refused (as BasicSR); ``--skip-existing`` continues an
interrupted run, skipping images whose sub-images are all there (each file is written under a temporary name and
renamed, so none is ever half-written).  The input folder is never written.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PNG_COMPRESSION = 3  # BasicSR opt['compression_level'] (cv2's default)


def crop_starts(length: int, crop_size: int, step: int, thresh_size: int = 0) -> list[int]:
    """Window starts along one axis, as BasicSR's worker computes h_space / w_space."""
    if length < crop_size:
        return []
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def sub_name(path: Path, index: int) -> str:
    """BasicSR's name: the stem without x2/x3/x4/x8, ``_s{index:03d}``, here always ``.png``."""
    stem = path.stem
    for tag in ("x2", "x3", "x4", "x8"):
        stem = stem.replace(tag, "")
    return f"{stem}_s{index:03d}.png"


def windows(h: int, w: int, crop_size: int, step: int, thresh_size: int) -> list[tuple[int, int]]:
    """(top, left) of every sub-image, row-major (BasicSR's order and numbering)."""
    return [
        (y, x)
        for y in crop_starts(h, crop_size, step, thresh_size)
        for x in crop_starts(w, crop_size, step, thresh_size)
    ]


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.height, im.width


def process(task) -> tuple[str, int, str]:
    """Worker: crop one image.  Returns (file, sub-images written, message)."""
    path, out, crop_size, step, thresh_size, skip_existing = task
    path, out = Path(path), Path(out)
    if skip_existing:
        try:
            h, w = _image_size(path)
            names = [sub_name(path, k + 1) for k in range(len(windows(h, w, crop_size, step, thresh_size)))]
            if names and all((out / n).is_file() for n in names):
                return str(path), 0, "skipped (all sub-images exist)"
        except (
            OSError,
            ValueError,
            Image.DecompressionBombError,
        ):  # PIL cannot read the header: the decode below reports the file
            pass
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim not in (2, 3):
        return str(path), 0, "unreadable image: skipped"
    h, w = img.shape[:2]
    wins = windows(h, w, crop_size, step, thresh_size)
    if not wins:
        return str(path), 0, f"smaller ({w}x{h}) than the crop {crop_size}: skipped"
    for k, (y, x) in enumerate(wins, start=1):
        final = out / sub_name(path, k)
        if skip_existing and final.is_file():
            continue
        tmp = out / f".{final.name}.{os.getpid()}.tmp.png"
        crop = np.ascontiguousarray(img[y : y + crop_size, x : x + crop_size, ...])
        if not cv2.imwrite(str(tmp), crop, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
            return str(path), k - 1, f"could not write {tmp}"
        os.replace(tmp, final)
    return str(path), len(wins), ""


def extract(input_dir, output_dir, crop_size=480, step=240, thresh_size=0, workers=None, skip_existing=False) -> dict:
    src, out = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    if crop_size < 1 or step < 1 or thresh_size < 0:
        raise ValueError(
            f"need --crop-size >= 1, --step >= 1, --thresh-size >= 0; got {crop_size}, {step}, {thresh_size}"
        )
    if not src.is_dir():
        raise FileNotFoundError(f"--input {str(src)!r} does not exist or is not a folder")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"--output {str(out)!r} must not be inside the input folder {str(src)!r}")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"--input {str(src)!r} holds no image ({', '.join(IMG_EXTENSIONS)})")
    stems = {}
    for p in files:
        key = sub_name(p, 1)
        if key in stems:
            raise ValueError(f"{stems[key].name} and {p.name} would write the same sub-image names ({key}, ...)")
        stems[key] = p
    if out.exists() and not skip_existing:
        raise FileExistsError(
            f"--output {str(out)!r} already exists (BasicSR's rule too); choose a new folder, or "
            f"pass --skip-existing to complete an interrupted run"
        )
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, os.cpu_count() or 1)
    tasks = [(str(p), str(out), crop_size, step, thresh_size, skip_existing) for p in files]
    t0 = time.perf_counter()
    if workers == 1:
        results = [process(t) for t in tasks]
    else:
        with get_context("spawn").Pool(workers) as pool:
            results = pool.map(process, tasks, chunksize=1)
    written = sum(n for _, n, _ in results)
    notes = [(f, msg) for f, _, msg in results if msg]
    for f, msg in notes:
        print(f"{f}: {msg}", file=sys.stderr)
    return {"images": len(files), "sub_images": written, "notes": notes, "seconds": time.perf_counter() - t0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder of images (not recursive, as BasicSR's scandir)")
    p.add_argument("--output", required=True, help="new folder for the sub-images")
    p.add_argument("--crop-size", type=int, default=480, help="BasicSR: 480 for DIV2K_train_HR")
    p.add_argument("--step", type=int, default=240, help="BasicSR: 240 for DIV2K_train_HR")
    p.add_argument("--thresh-size", type=int, default=0, help="BasicSR: 0 (always add the border window)")
    p.add_argument("--workers", type=int, default=None, help="processes (default min(8, CPUs))")
    p.add_argument("--skip-existing", action="store_true", help="complete an interrupted run into --output")
    args = p.parse_args(argv)
    try:
        res = extract(
            args.input, args.output, args.crop_size, args.step, args.thresh_size, args.workers, args.skip_existing
        )
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    print(
        f"wrote {res['sub_images']} sub-images of {res['images']} images to {args.output} in "
        f"{res['seconds']:.1f} s ({len(res['notes'])} notes above)"
    )
    return res


if __name__ == "__main__":
    main()
