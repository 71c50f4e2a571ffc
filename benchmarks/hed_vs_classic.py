"""HED vs classic training sketches (issue 22): two short SC-FEGAN face runs that differ only in the sketch detector,
each evaluated on both sketch kinds, and the editors' response to one hand-drawn stroke.

1. Train, same seed and budget (HED costs ~1.1 CPU-s per 128-px face, the classic detector ~15 ms):

    nice -n 10 python train.py experiment=scfegan_faces logger=csv seed=0 model.iters=100 data.batch_size=2 \\
        trainer.limit_val_batches=0 data.num_workers=0 task_name=hed_vs_classic_hed
    nice -n 10 python train.py experiment=scfegan_faces logger=csv seed=0 model.iters=100 data.batch_size=2 \\
        trainer.limit_val_batches=0 data.num_workers=0 task_name=hed_vs_classic_classic \\
        data.synthesis.sketch.hed_weights=null

2. Evaluate and draw (the run folders are logs/<task_name>/runs/<time>):

    nice -n 10 python benchmarks/hed_vs_classic.py --hed RUN_DIR --classic RUN_DIR

   writes a fixed mask set once (``python -m scripts.make_eval_masks --preset free_form --num 100 --size 128 --seed 0``),
   runs ``evaluate.py`` four times (each model on HED and on classic sketches of the held-out faces, the same masks,
   two at a time; the exact commands are printed), and prints the masked-region table with image counts and the CPU
   time of each evaluation.  Evaluations newer than their weights are reused, and a run still training is skipped,
   so the first run's evaluations can start before the second run ends.  LPIPS is off (its backbone needs ImageNet weights, not available offline) and so is FID.

3. The picture (``--picture``, default docs/hed_vs_classic_stroke.png): one face, one mask over the jaw, a drawn
   jaw-line stroke (a narrower chin), through each generator (``inference.faces.run_network``, composited); the top
   row has the mask and no stroke, so the stroke's effect is the difference between the rows.  The face is
   scikit-image's ``astronaut.png`` (NASA, public domain), read out of the scikit-image wheel without installing it
   (``weights.registry_packages``) and aligned to the CelebA-HQ crop with MTCNN (``inference.face_align``):
   CelebA-HQ faces are for non-commercial research only and are not copied into the repository.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat

import argparse
import json
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SKIMAGE = ("scikit-image", "0.26.0", "skimage/data/astronaut.png")  # NASA photo, public domain (skimage/data/README)
COLUMNS = ("images", "psnr_mask", "ssim_mask", "l1_mask")
# Mask and stroke in CelebA-HQ crop coordinates at 512 (eyes at (203, 245) / (309, 245), celebamask_mini README):
# a band over the jaw and chin, and a drawn jaw line that narrows the chin.
JAW_MASK = [(150, 330), (170, 420), (215, 470), (256, 485), (297, 470), (342, 420), (362, 330)]
JAW_MASK_WIDTH = 70
JAW_STROKE = [(165, 340), (185, 410), (222, 455), (256, 470), (290, 455), (327, 410), (347, 340)]


def weights_of(run: str) -> Path:
    """A run folder's weights/net_g_final.pth, or the file itself."""
    p = Path(run).resolve()  # the evaluations run in the repository root
    return p / "weights" / "net_g_final.pth" if p.is_dir() else p


def make_masks(out: Path, num: int, size: int) -> Path:
    if not (out / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "scripts.make_eval_masks", "--preset", "free_form", "--num", str(num)]
        cmd += ["--size", str(size), "--seed", "0", "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    return out


def eval_command(weights: Path, sketch: str, args, masks: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "evaluate.py",
        "model=scfegan",
        "data=celebamask_mini",
        f"data.resolution={args.size}",
        f"data.test_dir={args.test_dir}",
        "data.num_workers=0",
        f"ckpt_path={weights}",
        f"eval_masks={masks}",
        f"sketch_detector={sketch}",
        "user_strokes.enabled=false",
        "metrics.fid.enabled=false",
        "coverage_bins=[]",
        f"metrics_file={out}",
        "overwrite=true",
    ]


def run_evaluations(jobs: dict, parallel: int) -> dict:
    """{key: (cmd, out)} -> {key: CPU seconds}, ``parallel`` at a time; the CPU time of each child from wait4."""
    cpu, pending, running = {}, list(jobs.items()), {}
    while pending or running:
        while pending and len(running) < parallel:
            key, (cmd, _) = pending.pop(0)
            print("$", " ".join(cmd[1:]), flush=True)
            log = open(Path(jobs[key][1]).with_suffix(".log"), "w")
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # one core each
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[proc.pid] = (key, log, proc)  # referenced: an unreferenced Popen is reaped by subprocess itself
            time.sleep(1.5)  # evaluate.py's run folder is named to the second: the next one starts in another
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        key, log, proc = running.pop(pid)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        log.close()
        if code != 0:
            raise RuntimeError(f"evaluation {key} failed (exit code {code}): see {log.name}")
        cpu[key] = usage.ru_utime + usage.ru_stime
    return cpu


def table(results: dict, cpu: dict, preset: str) -> str:
    lines = [
        "| trained on | evaluated on | images | PSNR in mask (dB) | SSIM in mask | L1 in mask | eval CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (model, sketch), rows in results.items():
        (row,) = [v for k, v in rows.items() if k.endswith("/" + preset)]
        lines.append(
            f"| {model} | {sketch} | {row['images']} | {row['psnr_mask']:.2f} | {row['ssim_mask']:.4f} | "
            f"{row['l1_mask']:.4f} | {cpu.get((model, sketch), float('nan')):.0f} |"
        )
    return "\n".join(lines)


def aligned_face(size: int) -> np.ndarray:
    """scikit-image's astronaut, aligned as CelebA-HQ at ``size`` (H x W x 3 float32 RGB in [0, 1])."""
    from inference.face_align import celebahq_transform, detect_faces, warp_to_crop
    from weights.registry_packages import package_file

    photo = cv2.cvtColor(cv2.imread(str(package_file(*SKIMAGE)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    faces = detect_faces(photo)
    if not faces:
        raise RuntimeError("MTCNN found no face in astronaut.png")
    return warp_to_crop(photo, celebahq_transform(faces[0].landmarks, (size, size)), (size, size))


def polyline(points, size: int, width: float) -> np.ndarray:
    """A polyline given at 512, drawn at ``size`` with ``width`` px (at 512), as a bool map."""
    s = size / 512
    canvas = np.zeros((size, size), np.uint8)
    pts = np.round(np.array(points, np.float64) * s * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(canvas, [pts], False, 1, max(1, round(width * s)), cv2.LINE_8, shift=4)
    return canvas > 0


def label(img: np.ndarray, text: str, height: int = 18) -> np.ndarray:
    strip = np.full((height, img.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (3, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, img], 0)


def picture(models: dict, size: int, out: Path, scale: int = 2) -> None:
    """Rows: mask only, mask + drawn stroke; columns: the input as the editor shows it, then each model's edit."""
    import torch

    from inference.faces import resolve_noise, run_network
    from weights.io import build_generator

    face = aligned_face(size)
    mask = polyline(JAW_MASK, size, JAW_MASK_WIDTH)
    stroke = polyline(JAW_STROKE, size, 1.0 * 512 / size) & mask  # one pixel at the working size
    nets = {name: build_generator(w, kind="scfegan") for name, w in models.items()}
    rows, fills = [], {name: [] for name in nets}
    for sketch in (None, stroke):
        shown = face.copy()
        shown[mask] = 0.5 * shown[mask] + 0.5  # the erased region, lightened as in the app
        if sketch is not None:
            shown[sketch] = (0.0, 0.0, 0.0)
        cells = [shown]
        for name, (net, info) in nets.items():
            with torch.no_grad():
                gen = run_network(net, face, mask, sketch, None, noise=resolve_noise("auto", info.meta), seed=0)
            cells.append(np.where(mask[..., None], gen, face))
            fills[name].append(gen[mask])
        rows.append(np.concatenate(cells, 1))
    for name, (plain, stroked) in fills.items():  # how much the drawn stroke moved each editor's fill
        print(
            f"{name}-trained: the stroke changes the fill by {255 * np.abs(stroked - plain).mean():.2f} / 255 on average"
        )
    grid = (np.concatenate(rows, 0) * 255 + 0.5).astype(np.uint8)
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cell = size * scale
    heads = ["input: mask (+ drawn stroke)"] + [f"trained on {name} sketches" for name in models]
    header = np.concatenate([label(np.zeros((0, cell, 3), np.uint8), h) for h in heads], 1)
    grid = np.concatenate([header, grid], 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hed", required=True, help="run folder (or weights file) trained on HED sketches")
    p.add_argument("--classic", required=True, help="run folder (or weights file) trained on classic sketches")
    p.add_argument("--test-dir", default="../shared/data/faces/celebamask_mini/test/images", help="held-out faces")
    p.add_argument("--size", type=int, default=128, help="the models' working size (experiment=scfegan_faces: 128)")
    p.add_argument("--num", type=int, default=100, help="masks in the fixed set (one per test image)")
    p.add_argument("--work", default=str(REPO / "outputs" / "hed_vs_classic"), help="masks, metrics JSON, logs")
    p.add_argument("--parallel", type=int, default=2, help="evaluations at a time")
    p.add_argument("--picture", default=str(REPO / "docs" / "hed_vs_classic_stroke.png"))
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-picture", action="store_true")
    args = p.parse_args(argv)
    if args.test_dir != p.get_default("test_dir"):  # the default is relative to the repository root, as in README
        args.test_dir = str(Path(args.test_dir).resolve())
    models = {"HED": weights_of(args.hed), "classic": weights_of(args.classic)}
    missing = [f"--{name.lower()}: {w}" for name, w in models.items() if not w.is_file()]
    if missing:  # a run still training: its evaluations wait, the other model's run now (results are reused)
        print("not there yet (skipped): " + "; ".join(missing))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_eval:
        masks = make_masks(work / "masks_free_form", args.num, args.size)
        jobs, cpu = {}, {}
        for model, w in models.items():
            for sketch in ("hed", "classic"):
                out = work / f"{model.lower()}_model_{sketch}_sketch.json"
                done = out.with_suffix(".done.json")  # {"cmd", "cpu_s"} of a finished evaluation
                if not w.is_file():
                    continue
                cmd = eval_command(w, sketch, args, masks, out)
                if done.is_file() and done.stat().st_mtime > w.stat().st_mtime:
                    record = json.loads(done.read_text())
                    if record.get("cmd") == cmd[1:]:  # the same evaluation of these weights: reused
                        cpu[(model, sketch)] = float(record["cpu_s"])
                        continue
                jobs[(model, sketch)] = (cmd, out)
        print(f"load average at the start: {os.getloadavg()}", flush=True)
        t0 = time.perf_counter()
        for key, seconds in run_evaluations(jobs, args.parallel).items():
            cpu[key] = seconds
            done = {"cmd": jobs[key][0][1:], "cpu_s": seconds}
            Path(jobs[key][1]).with_suffix(".done.json").write_text(json.dumps(done))
        outs = {(m, s): work / f"{m.lower()}_model_{s}_sketch.json" for m, s in cpu}
        results = {k: json.loads(out.read_text()) for k, out in sorted(outs.items())}
        print(f"\nload average at the end: {os.getloadavg()}; {time.perf_counter() - t0:.0f} s wall")
        print(table(results, cpu, "free_form"))
    if not args.skip_picture and not missing:
        picture(models, args.size, Path(args.picture))


if __name__ == "__main__":
    main()
