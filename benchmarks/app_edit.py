"""Time one face edit through the app's handler, end to end (figures, not a test).

    python benchmarks/app_edit.py [--size 512] [--cnum 64] [--repeats 3] [--threads N]

What is timed (wall clock, and process CPU time, which on a shared machine says more) is the Generate button's work: read the uploaded PNG, turn three editor layers into mask / sketch /
colour, run the SC-FEGAN generator (``inference.faces.edit_face``: resize to the working size, forward, composite) and
write the result PNG.  The generator has random weights (timing does not depend on them); the full-width official
generator (cnum 64, 92.9 M parameters) at 512x512 is the default.  The first run (warm-up) is reported apart.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from archs.scfegan_generator import SCFEGANGenerator
from inference.images import write_png
from webui.handlers import edit_face_editor
from webui.models import ModelStore
from weights.io import save_generator_file
from weights.layouts import scfegan_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cnum", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = args.size
    with tempfile.TemporaryDirectory() as tmp:
        net = SCFEGANGenerator(cnum=args.cnum).eval()
        weights = save_generator_file(
            os.path.join(tmp, "G.pth"), net, scfegan_config(net.state_dict()), {"input_size": s}
        )
        cfg = OmegaConf.create(
            {
                "device": "cpu",
                "precision": "fp32",
                "use_ema": True,
                "weights": weights,
                "demo_runs": {"face": tmp, "sr": tmp},
                "face": {"size": "auto", "noise": "auto", "bgr": "auto", "generator": {"padding_mode": "tf_same"}},
            }
        )
        store = ModelStore(cfg)
        t0 = time.perf_counter()
        store.face()
        load_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        face = write_png(os.path.join(tmp, "face.png"), rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
        layers = [np.zeros((s, s, 4), np.uint8) for _ in range(3)]
        layers[0][s // 4 : s // 2, s // 4 : 3 * s // 4] = 255
        layers[1][s // 3, s // 4 : 3 * s // 4] = (0, 0, 0, 255)
        layers[2][s // 3 + 8 : s // 3 + 16, s // 3 : s // 2] = (200, 120, 90, 255)
        times, cpu = [], []
        for _ in range(args.repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            edit_face_editor(store, face, {"layers": layers}, seed=0, out_dir=tmp)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    params = sum(p.numel() for p in net.parameters())
    print(
        f"SC-FEGAN edit {s}x{s}, cnum {args.cnum} ({params / 1e6:.1f} M parameters), torch threads "
        f"{torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  weights load {load_s:.2f} s; first edit (warm-up) {times[0]:.2f} s")
    rest = times[1:]
    print(
        f"  edit end to end: median {statistics.median(rest):.2f} s, min {min(rest):.2f} s over {len(rest)} runs "
        f"(wall clock)"
    )
    # On a shared machine wall time measures the neighbours too; CPU time / threads is what the edit would take
    # alone on the same cores, assuming the threads keep them busy.
    c = statistics.median(cpu[1:])
    print(f"  CPU time per edit: median {c:.2f} s = {c / torch.get_num_threads():.2f} s per thread")


if __name__ == "__main__":
    main()
