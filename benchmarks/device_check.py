"""The device check: one command, one GPU, under 7 minutes; writes ``device_check.json`` and ``device_check.md``.

    python benchmarks/device_check.py                        # one GPU (H200: ~6 min), outputs/device_check/
    python benchmarks/device_check.py --out DIR --budget-s 380
    python benchmarks/device_check.py --quick                # CPU, toy sizes: the same code paths, no figures

What it measures (the recipes' own step methods through benchmarks/train_step.py, random weights):

* ESRGAN, paper configuration (RRDBNet 64f/23b/32g, VGG-style D at 128, VGG19 conv5_4; batch 16, GT 128),
  PSNR stage and GAN stage, every combination of fp32 / bf16-mixed x channels_last x torch.compile:
  images/s, ms per iteration, peak memory, TFLOP/s and their share of the device's dense bf16 peak, the share
  of the iteration spent synthesising the LR input (bicubic on the device), and the speed-up over fp32, NCHW,
  eager: the BasicSR configuration (our iteration equals BasicSR's on CPU, ratios 0.97-1.05).
* SC-FEGAN at 512x512, batch 8: one training iteration (D step with gradient penalty, G step), fp32 and bf16;
  the share of the mask/sketch/colour synthesis.
* One 512x512 SC-FEGAN edit (batch 1, bf16): latency, eager and compiled.

fp32 means PyTorch's defaults, as BasicSR runs: TF32 off for matmuls, cuDNN allowed to use TF32 in convs.

Time budget: cases run in priority order (all eager cases first, then the compiled ones, the GAN stage in
bf16 + channels_last first) and a case starts only if its estimate fits in what is left of ``--budget-s``;
the ones that do not are listed as skipped.  Compilation dominates (RRDBNet compiles one RRDB and reuses it:
lightning_modules/speed.py).  The JSON and Markdown are rewritten after every case, so a run stopped from
outside keeps what it measured.  The estimates (H200, printed at the start) are guesses until one run has
been made; pass ``--budget-s`` to trade cases for time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/ (train_step)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import importlib.util
import itertools
import json
import platform
import signal
import time
import traceback
import types

import torch
import train_step

TARGETS = {
    "esrgan_gan_share_bf16_peak": 0.35,  # ESRGAN GAN stage: >= 35 % of the device's dense bf16 peak
    "esrgan_gan_speedup_vs_basicsr_fp32": 3.0,  # >= 3x BasicSR's fp32 iteration rate
    "scfegan_edit_ms": 10.0,  # one 512x512 edit < 10 ms
}

# Seconds per case on one H200 (estimates: setup + warm-up incl. cuDNN autotuning + compile + timed iterations).
EST_EAGER = {"psnr": 8, "gan": 12, "scfegan": 15, "edit": 5, "realesrgan": 25}
EST_COMPILE = {"psnr": 35, "gan": 75, "scfegan": 70, "edit": 40}
PRIORITY = [  # compiled cases, most informative first
    ("gan", "bf16-mixed", True),
    ("psnr", "bf16-mixed", True),
    ("gan", "bf16-mixed", False),
    ("gan", "32-true", True),
    ("psnr", "bf16-mixed", False),
    ("gan", "32-true", False),
    ("psnr", "32-true", True),
    ("psnr", "32-true", False),
]


def plan(quick: bool) -> list[dict]:
    """Every case, in the order they run, with an estimate in seconds."""
    cases = []
    precisions = ["32-true", "bf16-mixed"]
    if quick:  # the same code paths at toy sizes: each kind of case, each switch, once
        cases.append(dict(kind="esrgan", stage="psnr", precision="32-true", channels_last=False, compile=False))
        cases.append(dict(kind="esrgan", stage="gan", precision="bf16-mixed", channels_last=True, compile=True))
        cases.append(dict(kind="scfegan", stage="train", precision="bf16-mixed", channels_last=True, compile=False))
        cases.append(dict(kind="edit", stage="edit", precision="bf16-mixed", channels_last=True, compile=True))
        cases.append(dict(kind="realesrgan", stage="gan", precision="32-true", channels_last=False, compile=False))
        for c in cases:
            c["est_s"] = 5
        return cases
    for stage, precision, cl in itertools.product(("psnr", "gan"), precisions, (False, True)):
        cases.append(
            dict(
                kind="esrgan", stage=stage, precision=precision, channels_last=cl, compile=False, est_s=EST_EAGER[stage]
            )
        )
    for precision, cl in ((p, c) for p in precisions for c in (False, True)):
        cases.append(
            dict(
                kind="scfegan",
                stage="train",
                precision=precision,
                channels_last=cl,
                compile=False,
                est_s=EST_EAGER["scfegan"],
            )
        )
    for cl in (False, True):
        cases.append(
            dict(
                kind="edit",
                stage="edit",
                precision="bf16-mixed",
                channels_last=cl,
                compile=False,
                est_s=EST_EAGER["edit"],
            )
        )
    # Real-ESRGAN GAN stage (developer c2's recipe, published sizes): the share of its on-device degradation
    cases.append(
        dict(
            kind="realesrgan",
            stage="gan",
            precision="bf16-mixed",
            channels_last=True,
            compile=False,
            est_s=EST_EAGER["realesrgan"],
        )
    )
    # compiled: the edit and the fast-path training cases first, then the rest of the ESRGAN grid
    cases.append(
        dict(
            kind="edit",
            stage="edit",
            precision="bf16-mixed",
            channels_last=True,
            compile=True,
            est_s=EST_COMPILE["edit"],
        )
    )
    for stage, precision, cl in PRIORITY:
        cases.append(
            dict(
                kind="esrgan",
                stage=stage,
                precision=precision,
                channels_last=cl,
                compile=True,
                est_s=EST_COMPILE[stage],
            )
        )
        if (stage, precision, cl) == ("gan", "bf16-mixed", True):
            cases.append(
                dict(
                    kind="scfegan",
                    stage="train",
                    precision="bf16-mixed",
                    channels_last=True,
                    compile=True,
                    est_s=EST_COMPILE["scfegan"],
                )
            )
    return cases


def case_name(c: dict) -> str:
    model = {"esrgan": "ESRGAN", "scfegan": "SC-FEGAN train", "edit": "SC-FEGAN edit", "realesrgan": "Real-ESRGAN"}[
        c["kind"]
    ]
    stage = f" {c['stage']}" if c["kind"] in ("esrgan", "realesrgan") else ""
    return (
        f"{model}{stage} {'bf16' if c['precision'] == 'bf16-mixed' else 'fp32'}"
        f"{' CL' if c['channels_last'] else ''}{' compiled' if c['compile'] else ''}"
    )


def run_case(c: dict, args, device) -> dict:
    config = "toy" if args.quick else "paper"
    ns = types.SimpleNamespace(
        warmup=args.warmup,
        iters=args.iters,
        peak_tflops=args.peak_tflops,
        compile_backend=args.compile_backend,
        compile_mode=args.compile_mode,
    )
    if c["kind"] == "edit":
        z = train_step.SCFEGAN_SIZES[config]
        return train_step.edit_latency(
            device,
            c["precision"],
            c["channels_last"],
            c["compile"],
            res=z["res"],
            cnum=z["cnum"],
            iters=max(args.iters, 3 if args.quick else 50),
            warmup=args.warmup + 2,
            compile_backend=args.compile_backend,
            compile_mode=args.compile_mode,
        )
    model = c["kind"] if c["kind"] in ("esrgan", "realesrgan") else "scfegan"
    stage = c["stage"] if model != "scfegan" else "gan"
    return train_step.measure(
        ns, model, config, stage, c["precision"], c["channels_last"], c["compile"], device, quiet=True
    )


def summarise(result: dict) -> None:
    """Speed-ups over the BasicSR configuration, target checks, the synthesis shares."""
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    base = {
        r["stage"]: r["img_s"]
        for r in rows
        if r["kind"] == "esrgan" and r["precision"] == "32-true" and not r["channels_last"] and not r["compile"]
    }
    for r in rows:
        if r["kind"] == "esrgan" and r["stage"] in base:
            r["speedup_vs_fp32_eager"] = r["img_s"] / base[r["stage"]]
    gan = [r for r in rows if r["kind"] == "esrgan" and r["stage"] == "gan"]
    bf16_gan = [r for r in gan if r["precision"] == "bf16-mixed" and r.get("share_bf16_peak") is not None]
    best_share = max((r["share_bf16_peak"] for r in bf16_gan), default=None)
    best_speedup = max((r.get("speedup_vs_fp32_eager", 0) for r in gan), default=None) if "gan" in base else None
    edit = [r["ms"] for r in rows if r["kind"] == "edit"]
    best_edit = min(edit, default=None)
    on_gpu = result["device_type"] == "cuda"

    def check(value, target, higher=True):
        if value is None or not on_gpu:
            return None
        return bool(value >= target if higher else value < target)

    result["summary"] = {
        "esrgan_gan_best_share_bf16_peak": best_share,
        "esrgan_gan_best_speedup_vs_basicsr_fp32": best_speedup,
        "scfegan_edit_best_ms": best_edit,
        "targets": TARGETS,
        "target_met": {  # null: not measured (CPU --quick run, or the case was skipped)
            "esrgan_gan_share_bf16_peak": check(best_share, TARGETS["esrgan_gan_share_bf16_peak"]),
            "esrgan_gan_speedup_vs_basicsr_fp32": check(best_speedup, TARGETS["esrgan_gan_speedup_vs_basicsr_fp32"]),
            "scfegan_edit_ms": check(best_edit, TARGETS["scfegan_edit_ms"], higher=False),
        },
        # Real-ESRGAN: the share of the iteration spent in the on-device degradation (blur, resize, noise, JPEG x2)
        "degradation_share": {case_name(r): r["synthesis_share"] for r in rows if r["kind"] == "realesrgan"},
        "synthesis_share": {  # share of the iteration spent making the inputs on the device
            f"{case_name(r)}": r["synthesis_share"]
            for r in rows
            if "synthesis_share" in r and not r["compile"] and r["precision"] == "bf16-mixed" and r["channels_last"]
        },
    }


def fmt(v, spec="", pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.1f} %" if pct else format(v, spec)


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        f"# Device check — {result['device']}",
        "",
        f"torch {result['torch']}, {'quick (toy sizes, CPU: code paths only, figures meaningless)' if result['quick'] else 'paper sizes'}; "
        f"{result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget; command: `{result['command']}`",
        "",
        "## Training iterations",
        "",
        "| case | img/s | ms/it | peak mem GiB | TFLOP/s | share of bf16 peak | x fp32 eager (BasicSR) | synthesis share | first it s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["kind"] == "edit":
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['status']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {fmt(r['img_s'], '.1f')} | {fmt(r['ms_it'], '.1f')} | {fmt(r['peak_mem_gib'], '.2f')} | "
            f"{fmt(r['tflops'], '.1f')} | {fmt(r.get('share_bf16_peak'), pct=True)} | "
            f"{fmt(r.get('speedup_vs_fp32_eager'), '.2f')} | {fmt(r['synthesis_share'], pct=True)} | "
            f"{fmt(r['first_iter_s'], '.1f')} |"
        )
    lines += [
        "",
        "## SC-FEGAN edit (512x512, batch 1)" if not result["quick"] else "## SC-FEGAN edit (toy size)",
        "",
        "| case | median ms | min ms | first call s |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["kind"] != "edit":
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['status']} | | |")
            continue
        lines.append(
            f"| {r['case']} | {fmt(r['ms'], '.2f')} | {fmt(r['ms_min'], '.2f')} | {fmt(r['first_call_s'], '.1f')} |"
        )
    met = s["target_met"]
    yn = {True: "met", False: "NOT met", None: "not measured"}
    lines += [
        "",
        "## Targets",
        "",
        f"- ESRGAN GAN stage, best share of the bf16 peak: {fmt(s['esrgan_gan_best_share_bf16_peak'], pct=True)} "
        f"(target >= 35 %: {yn[met['esrgan_gan_share_bf16_peak']]})",
        f"- ESRGAN GAN stage, best speed-up over fp32 NCHW eager (BasicSR's configuration): "
        f"{fmt(s['esrgan_gan_best_speedup_vs_basicsr_fp32'], '.2f')}x (target >= 3x: {yn[met['esrgan_gan_speedup_vs_basicsr_fp32']]})",
        f"- SC-FEGAN 512x512 edit, best: {fmt(s['scfegan_edit_best_ms'], '.2f')} ms "
        f"(target < 10 ms: {yn[met['scfegan_edit_ms']]})",
        "- Real-ESRGAN degradation share of an iteration: "
        + (", ".join(f"{k} {100 * v:.1f} %" for k, v in s["degradation_share"].items()) or "not measured"),
        "",
        "## Not included",
        "",
    ]
    lines += [f"- {n}" for n in result["not_included"]] or ["- nothing"]
    return "\n".join(lines) + "\n"


def degradation_available() -> bool:
    return importlib.util.find_spec("datamodules.realesrgan_datamodule") is not None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU, toy sizes, 1 iteration: the code paths, in seconds")
    p.add_argument("--out", default="outputs/device_check", help="folder for device_check.json / .md")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no case that would end after this "
        "(default 390 s on a GPU: 7 min with margin for start-up; unlimited with --quick)",
    )
    p.add_argument(
        "--hard-limit-s",
        type=float,
        default=None,
        help="abort the running case after this (default "
        "415 s on a GPU, none with --quick); what was measured is written",
    )
    p.add_argument("--iters", type=int, default=None, help="timed iterations per case (default 20; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 3; quick 1)")
    p.add_argument("--device", default=None)
    p.add_argument("--compile-backend", default=None, help="default inductor (quick: eager, i.e. Dynamo only)")
    p.add_argument("--compile-mode", default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of a device not in the table")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    device = torch.device(args.device or ("cpu" if args.quick or not torch.cuda.is_available() else "cuda"))
    args.iters = args.iters or (1 if args.quick else 20)
    args.warmup = args.warmup or (1 if args.quick else 3)
    args.compile_backend = args.compile_backend or ("eager" if args.quick else "inductor")
    budget = args.budget_s if args.budget_s is not None else (float("inf") if args.quick else 390.0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer profiles (trainer.benchmark=true)
    cases = plan(args.quick)
    total_est = sum(c["est_s"] for c in cases)
    fits, acc = 0, 0.0
    for c in cases:
        if acc + c["est_s"] <= budget:
            acc += c["est_s"]
            fits += 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    print(
        f"device check on {name}: {len(cases)} cases, estimated {total_est:.0f} s in all; budget "
        f"{budget:.0f} s -> about {fits} cases ({acc:.0f} s) expected to run, the rest reported as skipped",
        flush=True,
    )
    os.makedirs(args.out, exist_ok=True)
    not_included = []
    if not degradation_available():
        not_included.append("Real-ESRGAN degradation share: synthesis/realesrgan.py is not in this checkout")
        cases = [c for c in cases if c["kind"] != "realesrgan"]
    result = {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "quick": args.quick,
        "budget_s": budget,
        "estimated_total_s": total_est,
        "command": " ".join(["python", *sys.argv]),
        "fp32": "PyTorch defaults: matmul TF32 off, cuDNN conv TF32 allowed",
        "rows": [],
        "not_included": not_included,
    }
    json_path, md_path = os.path.join(args.out, "device_check.json"), os.path.join(args.out, "device_check.md")

    def write():
        result["elapsed_s"] = time.perf_counter() - t0
        summarise(result)
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        with open(md_path, "w") as f:
            f.write(markdown(result))

    hard = args.hard_limit_s if args.hard_limit_s is not None else (None if args.quick else 415.0)
    if hard:

        def over_time(signum, frame):
            raise TimeoutError(f"hard limit {hard:.0f} s reached")

        signal.signal(signal.SIGALRM, over_time)
        signal.alarm(int(hard))
    scale = {False: 1.0, True: 1.0}  # observed / estimated time, eager and compiled cases: corrects the estimates
    for c in cases:
        row = {
            "case": case_name(c),
            **{k: c[k] for k in ("kind", "stage", "precision", "channels_last", "compile")},
            "est_s": round(c["est_s"] * scale[c["compile"]], 1),
        }
        elapsed = time.perf_counter() - t0
        if elapsed + row["est_s"] > budget:
            row["status"] = f"skipped (time budget: {elapsed:.0f} s used, estimate {row['est_s']:.0f} s)"
        else:
            t = time.perf_counter()
            try:
                row.update(run_case(c, args, device))
                row["status"] = "ok"
                scale[c["compile"]] = max(scale[c["compile"]], (time.perf_counter() - t) / c["est_s"])
            except TimeoutError as err:
                row["status"] = f"aborted: {err}"
                budget = 0.0  # nothing else starts
            except Exception as err:  # noqa: BLE001  one case failing must not lose the others
                row["status"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                traceback.print_exc()
            row["wall_s"] = time.perf_counter() - t
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result["rows"].append(row)
        write()
        figure = (
            f"{row['img_s']:.1f} img/s, {row['ms_it']:.1f} ms/it"
            if "img_s" in row
            else f"{row['ms']:.2f} ms"
            if "ms" in row
            else ""
        )
        took = f"  (case took {row['wall_s']:.1f} s)" if "wall_s" in row else ""
        print(f"[{time.perf_counter() - t0:6.1f} s] {row['case']:40s} {row['status']:10s} {figure}{took}", flush=True)
    if hard:
        signal.alarm(0)
    write()
    print(f"wrote {json_path} and {md_path} in {result['elapsed_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
