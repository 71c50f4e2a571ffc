"""How should a manual-optimisation GAN synchronise gradients under DDP?  Counts all-reduce bytes and times
the ESRGAN GAN-stage step (G step, then D step with BasicSR's two D backward passes) on N gloo CPU processes.

    python scripts/ddp_sync_bench.py                          # demo-size nets, 2 processes, 20 steps
    python scripts/ddp_sync_bench.py --size paper --steps 3   # the paper's 16.7M G / 14.5M D (slow on CPU)

Variants (the step's math is identical in all of them):

* ``find_unused``: one DistributedDataParallel around G and D, ``find_unused_parameters=True``, the whole
  training step inside DDP's forward and ``prepare_for_backward`` before every backward, which is exactly what
  Lightning's ``ddp_find_unused_parameters_true`` does with manual optimisation; the other network is frozen
  (requires_grad=False) during each step.
* ``toggle_only``: the same with ``find_unused_parameters=False`` (toggling requires_grad alone).
* ``separate_ddp``: one DDP wrapper per network (BasicSR's layout), ``find_unused_parameters=False``.
* ``per_optimizer`` (this project's ``ddp_gan`` strategy): no DDP reducer; before each optimizer step the
  gradients of that optimizer's parameters are averaged with bucketed all-reduces.

Prints bytes all-reduced per batch (split by network), all-reduce calls per batch, ms per batch, and
whether the ranks end bit-identical.  Figures, not assertions.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import datetime
import hashlib
import socket
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from pytorch_lightning.overrides.distributed import prepare_for_backward
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from archs.rrdbnet import RRDBNet
from archs.vgg_discriminator import VGGStyleDiscriminator
from losses.gan_loss import ragan_discriminator_fake_loss, ragan_discriminator_real_loss, ragan_generator_loss
from runtime.strategies import GradientAverager

SIZES = {  # (G kwargs, D kwargs, HR patch)
    "demo": (dict(num_feat=32, num_block=2, num_grow_ch=16), dict(num_feat=16), 64),
    "paper": (dict(num_feat=64, num_block=23, num_grow_ch=32), dict(num_feat=64), 128),
}
VARIANTS = ("find_unused", "toggle_only", "separate_ddp", "per_optimizer")


class Counter:
    """DDP comm hook that counts bucket bytes (attributed to G or D by parameter identity) and all-reduces."""

    def __init__(self, g_params, d_params):
        self.g = {id(p) for p in g_params}
        self.d = {id(p) for p in d_params}
        self.bytes = {"G": 0, "D": 0}
        self.calls = 0

    def add(self, params, nbytes_each):
        for p, n in zip(params, nbytes_each):
            self.bytes["G" if id(p) in self.g else "D"] += n
        self.calls += 1

    def hook(self, state, bucket):
        self.add(bucket.parameters(), [p.numel() * bucket.buffer().element_size() for p in bucket.parameters()])
        return default_hooks.allreduce_hook(None, bucket)


class Pair(torch.nn.Module):
    def __init__(self, net_g, net_d):
        super().__init__()
        self.net_g, self.net_d = net_g, net_d


def frozen(net):
    class _Ctx:
        def __enter__(self):
            net.requires_grad_(False)

        def __exit__(self, *exc):
            net.requires_grad_(True)

    return _Ctx()


def run_rank(rank, world, port, variant, size, steps, out_q):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A short collective timeout: a variant that deadlocks reports an error instead of hanging
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        gk, dk, hr = SIZES[size]
        net_g, net_d = RRDBNet(3, 3, scale=4, **gk), VGGStyleDiscriminator(3, input_size=hr, **dk)
        counter = Counter(net_g.parameters(), net_d.parameters())
        opt_g = torch.optim.Adam(net_g.parameters(), 1e-4, betas=(0.9, 0.99))
        opt_d = torch.optim.Adam(net_d.parameters(), 1e-4, betas=(0.9, 0.99))
        gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
        batches = [
            (torch.rand(2, 3, hr // 4, hr // 4, generator=gen), torch.rand(2, 3, hr, hr, generator=gen))
            for _ in range(steps)
        ]

        wrapper = ddp_g = ddp_d = None
        averager = None
        if variant in ("find_unused", "toggle_only"):
            pair = Pair(net_g, net_d)
            wrapper = DDP(pair, find_unused_parameters=variant == "find_unused")
            wrapper.register_comm_hook(None, counter.hook)
        elif variant == "separate_ddp":
            ddp_g, ddp_d = DDP(net_g), DDP(net_d)
            ddp_g.register_comm_hook(None, counter.hook)
            ddp_d.register_comm_hook(None, counter.hook)
        else:
            averager = GradientAverager()

        def backward(loss):
            if wrapper is not None:  # what Lightning's DDPStrategy.pre_backward does in manual optimisation
                prepare_for_backward(wrapper, loss)
            loss.backward()

        def sync(opt):
            if averager is not None:
                bytes_before, calls_before = averager.bytes, averager.calls
                params = [p for g in opt.param_groups for p in g["params"]]
                averager.average(params)
                counter.add(params[:1], [averager.bytes - bytes_before])  # attribute the call to this network
                counter.calls += averager.calls - calls_before - 1

        g_fwd = ddp_g if ddp_g is not None else net_g
        d_fwd = ddp_d if ddp_d is not None else net_d

        def step(lq, gt):
            # G step (BasicSR ESRGANModel.optimize_parameters, pixel + adversarial; VGG omitted: frozen, no DDP)
            out = g_fwd(lq)
            with frozen(net_d):
                l_pix = 1e-2 * F.l1_loss(out, gt)
                real_d_pred = net_d(gt).detach()
                fake_g_pred = net_d(out)
                l_g = l_pix + 5e-3 * ragan_generator_loss(real_d_pred, fake_g_pred)
                opt_g.zero_grad(set_to_none=True)
                backward(l_g)
                sync(opt_g)
                opt_g.step()
            # D step: real and fake halves back-propagated separately (BasicSR PR #278)
            out_d = out.detach()
            opt_d.zero_grad(set_to_none=True)
            with torch.no_grad() if ddp_d is not None else torch.enable_grad():
                fake_d_pred = net_d(out_d).detach()  # value-only forward (a DDP forward must be followed by backward)
            real_d_pred = d_fwd(gt)
            backward(ragan_discriminator_real_loss(real_d_pred, fake_d_pred))
            fake_d_pred = d_fwd(out_d)
            backward(ragan_discriminator_fake_loss(fake_d_pred, real_d_pred.detach()))
            sync(opt_d)
            opt_d.step()

        times = []
        for i, (lq, gt) in enumerate(batches):
            if i == 1:  # first step excluded (bucket rebuild, allocator warm-up)
                counter.bytes = {"G": 0, "D": 0}
                counter.calls = 0
            dist.barrier()
            t0 = time.perf_counter()
            if wrapper is not None:
                # Lightning runs the whole manual-optimisation training_step inside the DDP forward
                wrapper.module.forward = lambda lq=lq, gt=gt: step(lq, gt)
                wrapper()
            else:
                step(lq, gt)
            times.append(time.perf_counter() - t0)
        n = max(1, steps - 1)
        calls = counter.calls / n
        digest = hashlib.sha1()
        for p in list(net_g.parameters()) + list(net_d.parameters()):
            digest.update(p.detach().numpy().tobytes())
        digests = [None] * world
        dist.all_gather_object(digests, digest.hexdigest())
        if rank == 0:
            out_q.put(
                dict(
                    variant=variant,
                    ok=True,
                    g_mb=counter.bytes["G"] / n / 2**20,
                    d_mb=counter.bytes["D"] / n / 2**20,
                    calls=calls,
                    ms=1000 * sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else float("nan"),
                    identical=len(set(digests)) == 1,
                    g_params=sum(p.numel() for p in net_g.parameters()),
                    d_params=sum(p.numel() for p in net_d.parameters()),
                )
            )
    except Exception as err:  # noqa: BLE001  (report, do not hang the other rank)
        if rank == 0:
            out_q.put(
                dict(
                    variant=variant,
                    ok=False,
                    error=f"{type(err).__name__}: {str(err).splitlines()[0][:160]}",
                    trace=traceback.format_exc(),
                )
            )
            out_q.close()
            out_q.join_thread()  # flush before the hard exit
        os._exit(1)  # the other rank may be stuck in a collective; do not wait for it
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="demo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for variant in args.variants:
        q = ctx.Queue()
        port = free_port()
        procs = [
            ctx.Process(target=run_rank, args=(r, args.world, port, variant, args.size, args.steps, q))
            for r in range(args.world)
        ]
        for p in procs:
            p.start()
        try:
            row = q.get(timeout=300)
        except Exception:  # noqa: BLE001
            row = dict(variant=variant, ok=False, error="timed out")
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        rows.append(row)
    print(f"\n{args.world} gloo processes, size={args.size}, {args.steps} steps (first excluded), fp32 gradients")
    for r in rows:
        if r.get("ok"):
            print(
                f"  G {r['g_params']:,} params ({r['g_params'] * 4 / 2**20:.2f} MiB), "
                f"D {r['d_params']:,} params ({r['d_params'] * 4 / 2**20:.2f} MiB)"
            )
            break
    print(
        f"{'variant':<15}{'G MiB/batch':>12}{'D MiB/batch':>12}{'allreduce calls':>17}{'ms/batch':>10}  ranks identical"
    )
    for r in rows:
        if r.get("ok"):
            print(
                f"{r['variant']:<15}{r['g_mb']:>12.2f}{r['d_mb']:>12.2f}{r['calls']:>17.1f}{r['ms']:>10.1f}  {r['identical']}"
            )
        else:
            print(f"{r['variant']:<15}  FAILED: {r['error']}")


if __name__ == "__main__":
    main()
