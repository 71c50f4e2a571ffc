"""Does a packed format pay for 480x480 sub-images?  PNG decode vs a raw .npy memory map, per training item.

    python benchmarks/subimage_decode.py                 # sub-images cut from ../shared/data/sr/train
    python benchmarks/subimage_decode.py --dir data/DIV2K/DIV2K_train_HR_sub

Per item, what an SR worker does (datamodules/sr_datamodule.py SRTrainDataset): ``png`` = read_image (decode the
whole sub-image, to float32) then a 128 + 2 x 8 px crop; ``npy`` = the same crop sliced from an ``np.load(...,
mmap_mode="r")`` uint8 array, then to float32 (only the crop's pages are read).  CPU time (process_time, one thread),
the two interleaved image by image; files in the page cache (a second pass), so disk speed is not measured.  Also
bytes on disk per image.  Without --dir, sub-images (480/240, BasicSR's DIV2K settings) are cut from the shared SR
training images into a temporary folder with scripts/extract_subimages.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from datamodules.image_io import read_image
from scripts.extract_subimages import extract

CROP = 128 + 2 * 8  # GT 128 with the LR context margin of x4 bicubic (lr_margin 8)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=None, help="folder of sub-image PNGs (default: cut from ../shared/data/sr/train)")
    p.add_argument("--num", type=int, default=60, help="images measured")
    args = p.parse_args(argv)
    cv2.setNumThreads(0)
    tmp = tempfile.TemporaryDirectory(prefix="subimage_decode_")
    if args.dir:
        src = Path(args.dir)
    else:
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "sr" / "train" / "SunHays80"
        if not shared.is_dir():
            print(f"no data: {shared} not present and no --dir")
            return {}
        src = Path(tmp.name) / "sub"
        extract(shared, src, 480, 240, 0, workers=1)
    pngs = sorted(src.glob("*.png"))[: args.num]
    npys = []
    for f in pngs:
        arr = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        npy = Path(tmp.name) / (f.stem + ".npy")
        np.save(npy, arr)
        npys.append(npy)
    rng = np.random.default_rng(0)
    t_png, t_npy = [], []
    for _ in range(2):  # first pass warms the page cache
        t_png.clear(), t_npy.clear()
        for f, n in zip(pngs, npys):
            y, x = (int(v) for v in rng.integers(0, 480 - CROP, 2))
            t = time.process_time()
            img = read_image(f)
            img[y : y + CROP, x : x + CROP].copy()
            t_png.append(time.process_time() - t)
            t = time.process_time()
            a = np.load(n, mmap_mode="r")[y : y + CROP, x : x + CROP]
            (cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
            t_npy.append(time.process_time() - t)
    png_ms, npy_ms = 1000 * statistics.mean(t_png), 1000 * statistics.mean(t_npy)
    png_kb = statistics.mean(f.stat().st_size for f in pngs) / 1024
    npy_kb = statistics.mean(n.stat().st_size for n in npys) / 1024
    load = os.getloadavg()[0]
    print(f"{len(pngs)} sub-images 480x480 from {src}; load average {load:.2f} on {os.cpu_count()} CPUs")
    print(f"png  (decode whole + crop {CROP}): {png_ms:7.2f} ms CPU per item, {png_kb:7.0f} KiB per image")
    print(f"npy  (memmap crop {CROP}):         {npy_ms:7.2f} ms CPU per item, {npy_kb:7.0f} KiB per image")
    print(f"ratio png / npy: {png_ms / npy_ms:.1f}x CPU; npy is {npy_kb / png_kb:.2f}x the bytes")
    tmp.cleanup()
    return {"png_ms": png_ms, "npy_ms": npy_ms, "png_kib": png_kb, "npy_kib": npy_kb}


if __name__ == "__main__":
    main()
