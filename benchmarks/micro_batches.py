"""Memory of gradient accumulation (``model.micro_batches``) and of tiled validation (``model.val_tile``): prints
figures, asserts nothing.

    python benchmarks/micro_batches.py                         # CPU, RRDBNet 64 features / 6 blocks, batch 8 GT 128
    python benchmarks/micro_batches.py --blocks 23 --batch 16  # the paper's G on a GPU
    python benchmarks/micro_batches.py --only val --tile-pad 16 # tiles with less context than the receptive margin

Each case runs in a fresh process (peak memory per process): one ESRGAN GAN-stage training step (the recipe's own
``training_step``: G, D, VGG losses, EMA) of ``--batch`` images with 1 and with N micro-batches, then one
validation forward of a ``--val-lr`` x ``--val-lr`` input untiled and tiled.  Peak memory: the CUDA allocator's
peak on a GPU, else the process's peak RSS above what it held before the step (the networks, Adam's state after a
one-image warm-up step).  Cases are interleaved (``--repeats``); CPU time per step beside the load average.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import json
import resource
import subprocess
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def _module(blocks: int, gt: int, micro: int, tile: int = 0, pad="auto"):
    from lightning_modules.esrgan_module import ESRGANModule

    m = ESRGANModule(
        generator={"_target_": "archs.rrdbnet.RRDBNet", "num_feat": 64, "num_block": blocks, "num_grow_ch": 32},
        discriminator={"_target_": "archs.vgg_discriminator.VGGStyleDiscriminator", "num_feat": 64, "input_size": gt},
        perceptual={
            "_target_": "losses.basic_loss.PerceptualLoss",
            "layer_weights": {"conv5_4": 1.0},
            "weights": "random",
        },
        psnr={
            "iters": 1,
            "lr": 2e-4,
            "betas": [0.9, 0.99],
            "pixel_weight": 1.0,
            "scheduler": "step",
            "step": {"step_size": 1, "gamma": 0.5},
        },
        gan={
            "iters": 10,
            "lr_g": 1e-4,
            "lr_d": 1e-4,
            "betas": [0.9, 0.99],
            "milestones": [5],
            "gamma": 0.5,
            "pixel_weight": 1e-2,
            "perceptual_weight": 1.0,
            "gan_weight": 5e-3,
        },
        stages=["psnr", "gan"],
        micro_batches=micro,
        val_tile=tile,
        val_tile_pad=pad,
    )
    m.iteration = 1  # the GAN stage (its first batch, without the switch's file writing)
    m.enter_gan_stage = lambda: None
    return m


def _peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset(device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # shared CPUs: one thread, CPU time comparable between cases
    torch.manual_seed(0)
    if args.case == "train":
        m = _module(args.blocks, args.gt, args.micro).to(device)
        opts, scheds = m.configure_optimizers()
        m._opt = lambda name: (opts[m._opt_index[name]], scheds[m._opt_index[name]])
        m.manual_backward = lambda loss: loss.backward()
        s = args.gt // 4

        def batch(n):
            return {
                "lq": torch.rand(n, 3, s, s, device=device),
                "gt": torch.rand(n, 3, args.gt, args.gt, device=device),
            }

        m.micro_batches = 1
        m.training_step(batch(1), 0)  # warm-up: Adam's state exists, the allocator has its pools
        m.micro_batches = args.micro
        b = batch(args.batch)
        base = _reset(device)
        t0 = time.process_time()
        m.training_step(b, 0)
        cpu = time.process_time() - t0
    else:
        pad = args.tile_pad if args.tile_pad == "auto" else int(args.tile_pad)
        m = _module(args.blocks, args.gt, 1, tile=args.tile, pad=pad).to(device).eval()
        lq = torch.rand(1, 3, args.val_lr, args.val_lr, device=device)
        m.super_resolve(lq[..., :16, :16])
        base = _reset(device)
        t0 = time.process_time()
        m.super_resolve(lq)
        cpu = time.process_time() - t0
    return {"peak_mib": (_peak_bytes(device) - base) / 2**20, "cpu_s": cpu, "device": device.type}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--gt", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro", type=int, nargs="+", default=[1, 4])
    p.add_argument("--val-lr", type=int, default=256)
    p.add_argument("--tiles", type=int, nargs="+", default=[0, 64])
    p.add_argument("--tile-pad", default="auto", help="model.val_tile_pad: auto (exact) or input pixels")
    p.add_argument("--only", choices=["train", "val"], default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        args.micro = args.micro[0]
        print(json.dumps(child(args)))
        return
    cases = [("train", f"--micro {n}", f"train step, batch {args.batch}, micro_batches={n}") for n in args.micro]
    cases += [
        (
            "val",
            f"--tile {t} --tile-pad {args.tile_pad}",
            f"validation {args.val_lr}^2 input, tile {t}, pad {args.tile_pad}",
        )
        for t in args.tiles
    ]
    cases = [c for c in cases if args.only in (None, c[0])]
    results: dict[str, list] = {label: [] for _, _, label in cases}
    common = f"--blocks {args.blocks} --gt {args.gt} --batch {args.batch} --val-lr {args.val_lr}"
    for _ in range(args.repeats):
        for case, extra, label in cases:
            cmd = [sys.executable, __file__, "--case", case, *common.split(), *extra.split()]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[label].append(json.loads(out.strip().splitlines()[-1]))
    print(f"RRDBNet 64 features, {args.blocks} blocks; GT {args.gt}; load average {os.getloadavg()[0]:.2f}")
    for label, rows in results.items():
        peak = min(r["peak_mib"] for r in rows)
        cpu = min(r["cpu_s"] for r in rows)
        print(f"  {label:<48} peak {peak:8.0f} MiB above the start   CPU {cpu:6.1f} s   ({rows[0]['device']})")


if __name__ == "__main__":
    main()
