"""Peak memory of the SR tab's upscale (``webui.handlers.upscale_file``'s path: ``inference.tiling.upscale_tiles``
into the output array, then the PNG written from it in place) on large photos (figures, not a test).

    python benchmarks/sr_memory.py [--mp 16,4] [--tile 512] [--model bicubic|animevideov3|tiny]

Each case runs in a fresh process (``python benchmarks/sr_memory.py --child ...``) so its peak RSS
(``ru_maxrss``) is its own; the figures are the peak over the process's RSS before the upscale (interpreter,
torch and the decoded input), beside what is output-sized (the uint8 result, 3 bytes per output pixel): what is
left is the per-tile work, the same for every image size at one tile size.  ``tracemalloc`` traces numpy's
allocations (not torch's).

``--model``: ``bicubic`` (MATLAB bicubic x4, ``ops.imresize``: runs a 16 MP x4 upscale on two CPU cores in
minutes), ``animevideov3`` (Real-ESRGAN's compact ``realesr-animevideov3-x4`` architecture, random weights, 16
convs at 64 features: the speed of a real network; about 0.6 TMAC per input megapixel) or ``tiny`` (a 1-block
RRDBNet).  The input is a smooth random photo-like image (PNG), written once to a temporary folder.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import json
import resource
import subprocess
import tempfile
import time
import tracemalloc

import numpy as np
import torch

MB = 1024 * 1024


class Bicubic(torch.nn.Module):
    """MATLAB bicubic x``scale`` as an SR "network" (``ops.imresize``): no weights, the tiling path unchanged."""

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        from ops.imresize import imresize

        return torch.stack([imresize(im, self.scale) for im in x])


def make_net(kind: str):
    if kind == "bicubic":
        return Bicubic(4)
    if kind == "animevideov3":
        from archs.srvgg import SRVGGNetCompact

        return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu").eval()
    from archs.rrdbnet import RRDBNet

    return RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    from inference.device import reuse_freed_memory
    from inference.images import read_image
    from inference.tiling import upscale_tiles
    from webui.handlers import save_png

    reuse_freed_memory()  # as app.py
    torch.set_num_threads(args.threads or torch.get_num_threads())
    net = make_net(args.model)
    img = read_image(args.input)
    h, w = img.size
    before = rss_mb()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    tiles = []
    with torch.no_grad():
        out = upscale_tiles(net, img, 4, torch.device("cpu"), tile=args.tile, progress=lambda d, n: tiles.append(d))
    t_up = time.perf_counter() - t0
    out_bytes = out.nbytes
    path = save_png(out, args.out_dir, "result", consume=True)
    del out
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            dict(
                w=w,
                h=h,
                tiles=len(tiles),
                rss_before_mb=before,
                peak_rss_mb=peak,
                extra_mb=peak - before,
                out_mb=out_bytes / MB,
                traced_peak_mb=traced_peak / MB,
                upscale_s=t_up,
                wall_s=wall,
                cpu_s=cpu,
                png_mb=os.path.getsize(path) / MB,
            )
        )
    )


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields plus a little noise (compresses like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
    import cv2

    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mp", default="16,4", help="input megapixels (4:3 photos), comma-separated")
    ap.add_argument("--tile", type=int, default=512, help="tile side in input pixels (the app's sr_auto_tile)")
    ap.add_argument("--model", default="bicubic", choices=["bicubic", "animevideov3", "tiny"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from inference.images import write_png

    load = lambda: ", ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731
    print(f"load average at the start: {load()} on {os.cpu_count()} CPUs; model {args.model}, tiles of {args.tile}")
    print(
        f"  {'input':>11s} {'output':>11s} {'tiles':>5s} {'out MB':>7s} {'peak RSS':>8s} {'peak-before':>11s} "
        f"{'beyond output':>13s} {'numpy peak':>10s} {'upscale s':>9s} {'CPU s':>7s} {'PNG MB':>7s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for mp in (float(v) for v in args.mp.split(",")):
            w = int(round((mp * 1e6 * 4 / 3) ** 0.5))
            h = int(round(mp * 1e6 / w))
            src = write_png(os.path.join(tmp, f"in_{mp:g}.png"), photo(h, w))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--input", src, "--out-dir", tmp]
            cmd += ["--model", args.model, "--tile", str(args.tile), "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-3000:])
                raise SystemExit(f"the {mp:g} MP case failed")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            beyond = r["extra_mb"] - r["out_mb"]
            print(
                f"  {r['w']:>5d}x{r['h']:<5d} {4 * r['w']:>5d}x{4 * r['h']:<5d} {r['tiles']:5d} {r['out_mb']:7.0f} "
                f"{r['peak_rss_mb']:8.0f} {r['extra_mb']:11.0f} {beyond:13.0f} {r['traced_peak_mb']:10.0f} "
                f"{r['upscale_s']:9.1f} {r['cpu_s']:7.1f} {r['png_mb']:7.0f}"
            )
            for f in os.listdir(tmp):
                if f.startswith("result"):
                    os.remove(os.path.join(tmp, f))
    print(
        "MB = MiB; peak-before: peak RSS over the RSS before the upscale (which holds the decoded input); "
        "beyond output: what is left after the uint8 output array"
    )
    print(f"load average (1, 5, 15 min) at the end: {load()}")


if __name__ == "__main__":
    main()
