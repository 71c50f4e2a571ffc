"""Loader benchmark: images/s one DataLoader worker delivers, beside the rate one H200 training step consumes.

    python benchmarks/data_loader.py                  # ../shared/data (SR: sr/train, faces: celebamask_mini)
    python benchmarks/data_loader.py --items 48 --rounds 3 --no-flops

Cases, each built from its data config as training builds it (Hydra compose of conf/, ``data=...``):

* ``sr_gt128``: ESRGAN, ``data=sr_shared`` (datamodules/sr_datamodule.py SRTrainDataset: decode, crop 128 + context
  margin, flips); the LR is made on the device (``on_after_batch_transfer``: bicubic).
* ``sr_gt256``: Real-ESRGAN, ``data=realesrgan_div2k`` on the same folders (realesrgan_datamodule.py: decode, 400
  patch, flips, blur kernels in the worker); the degradation runs on the device.
* ``faces512``: SC-FEGAN, ``data=celebamask_mini`` (face_datamodule.py: decode 512 image + label map); the mask /
  sketch / colour / noise synthesis runs on the device (``on_after_batch_transfer``).

"worker img/s" is items per CPU second of one process with one thread (a DataLoader worker runs one thread), so it
does not depend on the other jobs on the machine; "device part on CPU" is the device-side work measured on one CPU
thread (on a GPU it costs GPU time instead; device_check reports its share there).  Rounds interleave the cases.

"H200 needs" = 0.35 x 989 TFLOP/s (benchmarks/device_check.py's target share of benchmarks/train_step.py's dense bf16
peak for H200) / the model FLOPs per image of one training iteration, counted as device_check counts them
(train_step's paper cases under torch.utils.flop_counter; here on the meta device without the input synthesis,
which adds little; SC-FEGAN on the CPU at 128 px, x 16), so "workers" = H200 needs / worker img/s is how many
workers one GPU needs at that speed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ (train_step)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat

import argparse
import math
import statistics
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_SHARE = 0.35  # device_check.TARGETS["esrgan_gan_share_bf16_peak"]
H200_BF16 = 989.0  # train_step.PEAKS["H200"]["bf16-mixed"], TFLOP/s dense


def compose_data(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
    dm = instantiate(cfg.data, num_workers=0)
    dm.setup("fit")
    return dm


def build_cases(sr_dir: Path, faces_dir: Path) -> dict:
    cases = {}
    if sr_dir.is_dir():
        cases["sr_gt128"] = compose_data("sr_shared", [f"data.train_dirs=[{sr_dir}]", f"data.val_dirs=[{sr_dir}]"])
        cases["sr_gt256"] = compose_data(
            "realesrgan_div2k", [f"data.train_dirs=[{sr_dir}]", f"data.val_dirs=[{sr_dir}]"]
        )
    else:
        print(f"skipped SR: {sr_dir} not present")
    if (faces_dir / "train" / "images").is_dir():
        cases["faces512"] = compose_data(
            "celebamask_mini", [f"data.image_dir={faces_dir}/train/images", f"data.label_dir={faces_dir}/train/masks"]
        )
    else:
        print(f"skipped faces: {faces_dir}/train/images not present")
    return cases


def measure(dm, start: int, items: int, batch: int) -> tuple[float, float]:
    """CPU seconds per image: worker part (dataset items + collate), device part (on_after_batch_transfer)."""
    from datamodules.samplers import collate_skipping_bad

    ds = dm.train_set
    worker = device = 0.0
    for b0 in range(start, start + items, batch):
        t = time.process_time()
        batch_ = collate_skipping_bad([ds[(i % len(ds), 0)] for i in range(b0, b0 + batch)])
        worker += time.process_time() - t
        t = time.process_time()
        dm.on_after_batch_transfer(batch_, 0)
        device += time.process_time() - t
    n = math.ceil(items / batch) * batch
    return worker / n, device / n


def flops_per_image(case: str) -> float:
    """Model FLOPs per image of one paper-size training iteration (GAN stage), counted on the meta device."""
    import train_step
    from torch.utils.flop_counter import FlopCounterMode

    meta, cpu = torch.device("meta"), torch.device("cpu")
    if case == "sr_gt128":
        _, _, batch, synth, step = train_step.esrgan_case("paper", "gan", meta)
        inputs = synth()
    elif case == "sr_gt256":
        _, _, batch, synth_cpu, _ = train_step.realesrgan_case("paper", "gan", cpu)
        _, _, _, _, step = train_step.realesrgan_case("paper", "gan", meta)
        inputs = {k: v.to(meta) if torch.is_tensor(v) else v for k, v in synth_cpu().items()}
    else:
        # The SC-FEGAN step does not run on the meta device (autocast); its networks and losses are fully
        # convolutional, so the FLOPs per image scale with the pixel count: counted at 128 px on the CPU, x 16.
        z = train_step.SCFEGAN_SIZES["paper"]
        train_step.SCFEGAN_SIZES["flops128"] = dict(z, res=128, batch=1)
        _, _, batch, synth, step = train_step.scfegan_case("flops128", cpu)
        with FlopCounterMode(display=False) as fc:
            step(synth())
        return fc.get_total_flops() / batch * (z["res"] / 128) ** 2
    with FlopCounterMode(display=False) as fc:
        step(inputs)
    return fc.get_total_flops() / batch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sr-dir", default=str(ROOT.parent / "shared" / "data" / "sr" / "train"))
    p.add_argument("--faces-dir", default=str(ROOT.parent / "shared" / "data" / "faces" / "celebamask_mini"))
    p.add_argument("--items", type=int, default=32, help="images per case and round")
    p.add_argument("--batch", type=int, default=4, help="images per collated batch (device part)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (the H200 columns)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker
    warnings.filterwarnings("ignore")
    cases = build_cases(Path(args.sr_dir), Path(args.faces_dir))
    if not cases:
        print("no data: nothing measured")
        return {}
    load0 = os.getloadavg()
    for dm in cases.values():  # warm-up (imports, first decodes)
        measure(dm, 10**6, args.batch, args.batch)
    per = {name: [] for name in cases}
    for r in range(args.rounds):
        for name, dm in cases.items():
            per[name].append(measure(dm, r * args.items, args.items, args.batch))
    load1 = os.getloadavg()
    need = {}
    if not args.no_flops:
        for name in cases:
            need[name] = TARGET_SHARE * H200_BF16 * 1e12 / flops_per_image(name)
    rows = {}
    print(
        f"\nload average {load0[0]:.2f} (start) / {load1[0]:.2f} (end) on {os.cpu_count()} CPUs; torch threads 1; "
        f"{args.rounds} rounds x {args.items} images, median"
    )
    print(
        f"{'case':10s} {'worker img/s':>13s} {'device part on CPU img/s':>25s} {'H200 needs img/s':>17s} "
        f"{'GFLOP/img':>10s} {'workers per H200':>17s}"
    )
    for name in cases:
        w = statistics.median(x[0] for x in per[name])
        d = statistics.median(x[1] for x in per[name])
        row = {"worker_img_s": 1 / w, "device_part_cpu_img_s": 1 / d if d > 0 else float("inf")}
        if name in need:
            row.update(
                h200_img_s=need[name],
                gflop_img=TARGET_SHARE * H200_BF16 * 1e3 / need[name],
                workers=math.ceil(need[name] * w),
            )
        rows[name] = row
        print(
            f"{name:10s} {row['worker_img_s']:13.1f} {row['device_part_cpu_img_s']:25.1f} "
            f"{row.get('h200_img_s', float('nan')):17.0f} {row.get('gflop_img', float('nan')):10.1f} "
            f"{row.get('workers', '-'):>17}"
        )
    return rows


if __name__ == "__main__":
    main()
