"""Training-step and inference benchmark: prints figures, asserts nothing.

    python benchmarks/train_step.py                       # ESRGAN + SC-FEGAN, demo and paper sizes
    python benchmarks/train_step.py --model esrgan --config paper --precision bf16-mixed --compile
    python benchmarks/train_step.py --peak-tflops 989     # share of peak on a device not in the table
    python benchmarks/train_step.py --model realesrgan    # Real-ESRNet / Real-ESRGAN with the degradation model

For each case it runs the real LightningModule step methods (the recipe's own code: losses, EMA,
schedulers) with plain optimizers and prints images/s, ms per iteration, peak memory, the model FLOPs of
one iteration (torch.utils.flop_counter, forward + backward of every network, the loss VGG included) and
the share of the device's peak they reach, plus the share of the iteration spent synthesising the inputs
on the device (ESRGAN: the bicubic LR; Real-ESRGAN: USM + second-order degradation + crop +
pool; SC-FEGAN: mask, sketch, colour, noise, as conf/data/synthesis/default.yaml
configures them).  Random pretrained weights (speed does not depend on them).  The SC-FEGAN paper case is 512 x 512,
batch 8 (``--model scfegan --config paper --iters 1 --warmup 0`` for one iteration).  Last, the CPU milliseconds
per 512 x 512 image of each synthesis stage (eyes, mask, sketch, colour, noise), with and without part labels.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import itertools
import resource
import time
import warnings

import torch

warnings.filterwarnings("ignore")

# Dense peak TFLOP/s by device name and precision (vendor figures; fp32 = non-tensor-core FP32).
PEAKS = {
    "H200": {"bf16-mixed": 989.0, "32-true": 67.0},
    "H100": {"bf16-mixed": 989.0, "32-true": 67.0},
    "A100": {"bf16-mixed": 312.0, "32-true": 19.5},
}


def device_peak(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAKS.items():
            if key in name:
                return peaks.get(precision)
    return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Harness:
    """Raw optimizers and plain backward in place of the Trainer's, around the module's own steps."""

    def __init__(self, module):
        opts = module.configure_optimizers()
        opts, scheds = opts if isinstance(opts, tuple) else (opts, [])
        scheds = list(scheds) + [None] * (len(opts) - len(scheds))
        module._opt = lambda name: (opts[module._opt_index[name]], scheds[module._opt_index[name]])
        module.manual_backward = lambda loss: loss.backward()
        module.log_dict = lambda *a, **k: None
        module.log = lambda *a, **k: None


# Network sizes per config: paper (BasicSR's ESRGAN / the official SC-FEGAN), demo, and toy (device_check --quick).
ESRGAN_SIZES = {
    "paper": dict(num_feat=64, num_block=23, num_grow_ch=32, d_feat=64, gt_size=128, batch=16),
    "demo": dict(num_feat=32, num_block=2, num_grow_ch=16, d_feat=16, gt_size=64, batch=8),
    "toy": dict(num_feat=8, num_block=1, num_grow_ch=4, d_feat=4, gt_size=32, batch=2),
}
SCFEGAN_SIZES = {
    "paper": dict(res=512, batch=8, cnum=64),
    "demo": dict(res=128, batch=4, cnum=16),
    "toy": dict(res=128, batch=1, cnum=4),
}


def esrgan_case(config: str, stage: str, device, speed: dict | None = None):
    from datamodules.sr_datamodule import make_lr
    from lightning_modules.ema import ema_update
    from lightning_modules.esrgan_module import ESRGANModule

    z = ESRGAN_SIZES[config]
    gen = dict(
        _target_="archs.rrdbnet.RRDBNet",
        scale=4,
        num_feat=z["num_feat"],
        num_block=z["num_block"],
        num_grow_ch=z["num_grow_ch"],
    )
    gt_size, batch = z["gt_size"], z["batch"]
    m = ESRGANModule(
        generator=gen,
        discriminator=dict(
            _target_="archs.vgg_discriminator.VGGStyleDiscriminator", num_feat=z["d_feat"], input_size=gt_size
        ),
        perceptual=dict(_target_="losses.basic_loss.PerceptualLoss", layer_weights={"conv5_4": 1.0}, weights="random"),
        psnr=dict(
            iters=10**9,
            lr=2e-4,
            betas=[0.9, 0.99],
            pixel_weight=1.0,
            scheduler="step",
            step=dict(step_size=200000, gamma=0.5),
        ),
        gan=dict(
            iters=10**9,
            lr_g=1e-4,
            lr_d=1e-4,
            betas=[0.9, 0.99],
            milestones=[50000],
            gamma=0.5,
            pixel_weight=1e-2,
            perceptual_weight=1.0,
            gan_weight=5e-3,
        ),
        stages=[stage] if stage == "psnr" else ["psnr", "gan"],
        speed=speed,
    )
    m.apply_speed(device)  # model.speed: channels_last / torch.compile, as in training (configure_model)
    m.to(device)
    Harness(m)
    gt = torch.rand(batch, 3, gt_size, gt_size, device=device)

    def synth():
        return make_lr(gt, 4)

    def step(lq):
        if stage == "psnr":
            m.psnr_step(lq, gt)
        else:
            out, _ = m.generator_step(lq, gt)
            m.discriminator_step(out, gt)
        ema_update(m.net_g_ema, m.net_g, 0.999)

    nets = [m.net_g] + ([m.net_d, m.cri_perceptual.vgg] if stage == "gan" else [])
    return m, nets, batch, synth, step


def configured_synthesizer():
    """The SC-FEGAN input synthesis exactly as conf/data/synthesis/default.yaml configures it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return instantiate(OmegaConf.load(os.path.join(root, "conf", "data", "synthesis", "default.yaml")))


def face_like_images(batch: int, res: int, device, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] (bicubic-upsampled noise): edges and regions like a photo's, not white noise,
    so the sketch and colour stages do representative work."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, max(res // 16, 2), max(res // 16, 2), generator=g)
    x = torch.nn.functional.interpolate(x, size=(res, res), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).to(device)


def face_like_seg(batch: int, res: int, device) -> torch.Tensor:
    """A crude CelebAMask-HQ layout (skin, hair on top, eyes, nose, mouth) for the labelled synthesis path."""
    seg = torch.zeros(batch, 1, res, res, dtype=torch.long)
    r = res
    seg[:, :, r // 5 :, r // 5 : 4 * r // 5] = 1
    seg[:, :, : r // 4] = 13
    seg[:, :, 15 * r // 32 : r // 2, 11 * r // 32 : 13 * r // 32] = 5
    seg[:, :, 15 * r // 32 : r // 2, 19 * r // 32 : 21 * r // 32] = 4
    seg[:, :, r // 2 : 19 * r // 32, 15 * r // 32 : 17 * r // 32] = 2
    seg[:, :, 23 * r // 32 : 25 * r // 32, 13 * r // 32 : 19 * r // 32] = 11
    return seg.to(device)


def synthesis_stage_times(args) -> None:
    """CPU milliseconds per image at 512 for each synthesis stage (the configured pipeline), with and without
    face-part labels (the colour map differs: per-part medians vs the unlabelled region method)."""
    torch.manual_seed(0)
    synth = configured_synthesizer()
    synth.timing = True
    n, res = args.stage_batch, 512
    image = face_like_images(n, res, "cpu")
    for labelled in (True, False):
        batch = {"image": image, "index": torch.arange(n)}
        if labelled:
            batch["seg"] = face_like_seg(n, res, "cpu")
        totals: dict[str, float] = {}
        for rep in range(args.warmup + args.iters):
            synth(dict(batch), epoch=rep)
            if rep >= args.warmup:
                for k, v in synth.last_timing.items():
                    totals[k] = totals.get(k, 0.0) + v
        per = {k: v / args.iters / n for k, v in totals.items()}
        text = "  ".join(
            f"{k} {per[k]:8.1f}" for k in ("eyes", "mask", "sketch", "color", "noise", "total") if k in per
        )
        print(
            f"synthesis cpu 512x512 {'labels   ' if labelled else 'no labels'} ms/image | {text}  "
            f"(batch {n}, {torch.get_num_threads()} threads)",
            flush=True,
        )


def realesrgan_case(config: str, stage: str, device, speed: dict | None = None):
    """Real-ESRNet (psnr) / Real-ESRGAN (gan); synthesis = the whole on-device LR making of
    RealESRGANDataModule.synthesize (kernels come from the workers: made once here, their CPU cost printed)."""
    import numpy as np
    from omegaconf import OmegaConf

    from datamodules.realesrgan_datamodule import RealESRGANDataModule
    from lightning_modules.ema import ema_update
    from lightning_modules.realesrgan_module import RealESRGANModule
    from ops.blur_kernels import sample_degradation_kernels

    paper = config == "paper"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    deg = OmegaConf.load(os.path.join(root, "conf", "data", "degradation", "realesrgan.yaml"))
    deg.seed = 0
    deg = OmegaConf.to_container(deg, resolve=True)
    # paper: the published sizes (batch 12 per GPU, 400 patch, 256 crop); demo: conf/data/realesrgan_demo.yaml
    batch, pad, gt_size = (12, 400, 256) if paper else (4, 96, 64)
    deg["pool_size"] = 15 * batch if paper else 4 * batch
    dm = RealESRGANDataModule(
        degradation=deg, crop_pad_size=pad, train_dirs=[], val_dirs=[], gt_size=gt_size, batch_size=batch, num_workers=0
    )
    gen = dict(
        _target_="archs.rrdbnet.RRDBNet",
        scale=4,
        **(
            dict(num_feat=64, num_block=23, num_grow_ch=32) if paper else dict(num_feat=32, num_block=2, num_grow_ch=16)
        ),
    )
    m = RealESRGANModule(
        generator=gen,
        discriminator=dict(_target_="archs.unet_discriminator.UNetDiscriminatorSN", num_feat=64 if paper else 16),
        perceptual=dict(
            _target_="losses.basic_loss.PerceptualLoss",
            weights="random",
            layer_weights={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
        ),
        psnr=dict(
            iters=10**9,
            lr=2e-4,
            betas=[0.9, 0.99],
            pixel_weight=1.0,
            gt_usm=True,
            scheduler="multistep",
            multistep=dict(milestones=[10**9], gamma=0.5),
        ),
        gan=dict(
            iters=10**9,
            lr_g=1e-4,
            lr_d=1e-4,
            betas=[0.9, 0.99],
            milestones=[10**9],
            gamma=0.5,
            pixel_weight=1.0,
            perceptual_weight=1.0,
            gan_weight=0.1,
            gan_type="vanilla",
        ),
        stages=[stage] if stage == "psnr" else ["psnr", "gan"],
        speed=speed,
    )
    m.apply_speed(device)
    m.to(device)
    Harness(m)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    ks = [sample_degradation_kernels(rng, deg["kernels"]) for _ in range(batch)]
    print(f"  (kernels in the workers: {1000 * (time.perf_counter() - t) / batch:.2f} ms per sample on the CPU)")
    raw = {
        "gt": torch.rand(batch, 3, pad, pad, device=device),
        **{k: torch.from_numpy(np.stack([d[k] for d in ks])).to(device) for k in ks[0]},
    }

    def synth():
        return dm.synthesize(dict(raw))

    def step(b):
        lq, gt, gt_usm = m.training_pair(b)
        if stage == "psnr":
            m.psnr_step(lq, gt, gt_usm)
        else:
            out, _ = m.generator_step(lq, gt, gt_usm=gt_usm)
            m.discriminator_step(out, gt, gt_usm)
        ema_update(m.net_g_ema, m.net_g, 0.999)

    nets = [m.net_g] + ([m.net_d, m.cri_perceptual.vgg] if stage == "gan" else [])
    return m, nets, batch, synth, step


def scfegan_case(config: str, device, speed: dict | None = None, batch_override: int | None = None):
    from lightning_modules.scfegan_module import SCFEGANModule

    z = SCFEGAN_SIZES[config]
    res, batch, cnum = z["res"], z["batch"], z["cnum"]
    batch = batch_override or batch
    m = SCFEGANModule(
        generator=dict(_target_="archs.scfegan_generator.SCFEGANGenerator", cnum=cnum),
        discriminator=dict(_target_="archs.sn_patch_discriminator.SNPatchDiscriminator", cnum=cnum),
        loss=dict(alpha=6.0, sigma=0.05, gamma=120.0, upsilon=0.1, beta=0.001, theta=10.0, epsilon=0.001),
        optim=dict(lr_g=1e-4, lr_d=1e-4, betas=[0.5, 0.999], d_steps=1),
        iters=10**9,
        vgg_weights="random",
        speed=speed,
    )
    m.apply_speed(device)
    m.to(device)
    Harness(m)
    synthesizer = configured_synthesizer().to(device)
    base = {"image": face_like_images(batch, res, device), "index": torch.arange(batch, device=device)}

    def synth():
        return synthesizer(dict(base), epoch=0)

    def step(b):
        with torch.no_grad():
            _, comp = m(b)
        m.discriminator_step(b, comp)
        gen, comp = m(b)
        m.generator_step(b, gen, comp)

    return m, [m.net_g, m.net_d, m.cri_vgg.vgg], batch, synth, step


FLOP_CACHE: dict = {}


def measure(args, model, config, stage, precision, channels_last, compile_, device, quiet=False) -> dict:
    """One case: ``args.warmup`` iterations (compilation happens in the first), one under the FLOP counter, then
    ``args.iters`` timed iterations and as many of the input synthesis alone.  Returns the figures (and prints
    them unless ``quiet``)."""
    torch.manual_seed(0)
    speed = {
        "channels_last": bool(channels_last),
        "compile": bool(compile_),
        "compile_backend": getattr(args, "compile_backend", "inductor"),
        "compile_mode": getattr(args, "compile_mode", None),
    }
    if model == "esrgan":
        m, nets, batch, synth, step = esrgan_case(config, stage, device, speed)
    elif model == "realesrgan":
        m, nets, batch, synth, step = realesrgan_case(config, stage, device, speed)
    else:
        m, nets, batch, synth, step = scfegan_case(config, device, speed, getattr(args, "batch", None))
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    if getattr(
        args, "synthesis_only", False
    ):  # e.g. the paper-size Real-ESRGAN degradation on a CPU, where the step would take minutes
        for _ in range(args.warmup):
            synth()
        sync(device)
        t = time.perf_counter()
        for _ in range(args.iters):
            synth()
        sync(device)
        print(
            f"{model}/{config}/{stage:5s} synthesis only: {1000 * (time.perf_counter() - t) / args.iters:9.1f} ms per "
            f"batch of {batch}",
            flush=True,
        )
        return

    def iteration():
        with amp:
            b = synth()
            step(b)

    sync(device)
    t = time.perf_counter()
    first_iter = 0.0
    for i in range(args.warmup):
        iteration()
        if i == 0:
            sync(device)
            first_iter = time.perf_counter() - t
    sync(device)
    from torch.utils.flop_counter import FlopCounterMode

    # The model FLOPs do not depend on layout or compilation: a compiled case reuses the count of the same eager
    # case when one ran before (counting under the dispatch mode could make the compiled networks recompile).
    key = (model, config, stage, precision)
    if compile_ and key in FLOP_CACHE:
        flops = FLOP_CACHE[key]
    else:
        with FlopCounterMode(display=False) as fc, amp:
            b = synth()
            step(b)
        flops = FLOP_CACHE[key] = fc.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Synthesis alone, then whole iterations.
    sync(device)
    t = time.perf_counter()
    for _ in range(args.iters):
        with amp:
            synth()
    sync(device)
    t_synth = (time.perf_counter() - t) / args.iters
    t = time.perf_counter()
    for _ in range(args.iters):
        iteration()
    sync(device)
    t_iter = (time.perf_counter() - t) / args.iters
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2**30
        mem = f"{peak_mem:6.2f} GiB"
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        mem = f"{peak_mem:6.2f} GiB RSS"
    peak = device_peak(device, precision, args.peak_tflops)
    bf16_peak = device_peak(device, "bf16-mixed", args.peak_tflops)
    tflops = flops / t_iter / 1e12
    share = f"{100 * tflops / peak:5.1f}%" if peak else "   n/a"
    name = f"{model}/{config}/{stage}"
    if not quiet:
        print(
            f"{name:22s} {precision:10s} cl={int(channels_last)} compile={int(compile_)} | "
            f"{batch / t_iter:8.1f} img/s {1000 * t_iter:9.1f} ms/it | {mem} | "
            f"{flops / 1e9:9.1f} GFLOP/it {tflops:7.2f} TFLOP/s peak {share} | synthesis {100 * t_synth / t_iter:5.1f}%",
            flush=True,
        )
    return {
        "model": model,
        "config": config,
        "stage": stage,
        "precision": precision,
        "channels_last": bool(channels_last),
        "compile": bool(compile_),
        "batch": batch,
        "img_s": batch / t_iter,
        "ms_it": 1000 * t_iter,
        "peak_mem_gib": peak_mem,
        "peak_mem_kind": "allocated" if device.type == "cuda" else "process RSS",
        "gflop_it": flops / 1e9,
        "tflops": tflops,
        "share_peak": tflops / peak if peak else None,
        "share_bf16_peak": tflops / bf16_peak if bf16_peak else None,
        "synthesis_share": t_synth / t_iter,
        "first_iter_s": first_iter,
    }


@torch.no_grad()
def edit_latency(
    device,
    precision: str,
    channels_last: bool = False,
    compile_: bool = False,
    res: int = 512,
    cnum: int = 64,
    iters: int = 20,
    warmup: int = 3,
    compile_backend: str = "inductor",
    compile_mode: str | None = None,
) -> dict:
    """One SC-FEGAN edit: the generator on a batch of 1 (what predict.py runs per edit), median ms."""
    from archs.scfegan_generator import SCFEGANGenerator
    from lightning_modules import speed

    torch.manual_seed(0)
    g = SCFEGANGenerator(cnum=cnum).to(device).eval()
    x = torch.randn(1, 9, res, res, device=device)
    if channels_last:
        speed.to_channels_last(g)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_:
        speed.compile_networks([g], compile_mode, compile_backend)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    times = []
    with amp:
        sync(device)
        t = time.perf_counter()
        g(x)
        sync(device)
        first = time.perf_counter() - t
        for _ in range(max(warmup - 1, 0)):
            g(x)
        for _ in range(iters):
            sync(device)
            t = time.perf_counter()
            g(x)
            sync(device)
            times.append(time.perf_counter() - t)
    times.sort()
    return {
        "precision": precision,
        "channels_last": bool(channels_last),
        "compile": bool(compile_),
        "res": res,
        "cnum": cnum,
        "ms": 1000 * times[len(times) // 2],
        "ms_min": 1000 * times[0],
        "first_call_s": first,
    }


def scfegan_inference(args, device, precision):
    r = edit_latency(device, precision, iters=args.iters, warmup=args.warmup)
    print(f"scfegan inference 512x512 batch 1 {precision:10s} | {r['ms']:8.2f} ms", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["esrgan", "realesrgan", "scfegan", "all"], default="all")
    p.add_argument("--config", choices=["demo", "paper", "all"], default="all")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed", "all"], default="all")
    p.add_argument("--channels-last", choices=["0", "1", "all"], default="all")
    p.add_argument("--compile", choices=["0", "1", "all"], default="0")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the share column")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="SC-FEGAN batch size instead of the case's (paper 8, demo 4), e.g. 1 for a CPU smoke run",
    )
    p.add_argument("--stage-batch", type=int, default=2, help="images per batch for the CPU per-stage timing")
    p.add_argument("--no-stages", action="store_true", help="skip the CPU per-stage synthesis timing")
    p.add_argument("--synthesis-only", action="store_true", help="time the on-device input synthesis alone")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    expand = lambda v, opts: opts if v == "all" else [v]  # noqa: E731
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}"
    )
    cases = []
    for model in expand(args.model, ["esrgan", "realesrgan", "scfegan"]):
        stages = ["psnr", "gan"] if model in ("esrgan", "realesrgan") else ["gan"]
        for config, stage in itertools.product(expand(args.config, ["demo", "paper"]), stages):
            cases.append((model, config, stage))
    for (model, config, stage), precision, cl, comp in itertools.product(
        cases,
        expand(args.precision, ["32-true", "bf16-mixed"]),
        expand(args.channels_last, ["0", "1"]),
        expand(args.compile, ["0", "1"]),
    ):
        try:
            measure(args, model, config, stage, precision, cl == "1", comp == "1", device)
        except Exception as err:  # noqa: BLE001  report and go on: one case (e.g. compile on a CPU without a compiler) may fail
            print(f"{model}/{config}/{stage} {precision} cl={cl} compile={comp}: FAILED {type(err).__name__}: {err}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.model in ("scfegan", "all"):
        for precision in expand(args.precision, ["32-true", "bf16-mixed"]):
            scfegan_inference(args, device, precision)
        if not args.no_stages:
            synthesis_stage_times(args)


if __name__ == "__main__":
    main()
