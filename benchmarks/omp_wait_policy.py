"""OMP_WAIT_POLICY (issue 21): PyTorch CPU inference with libgomp's default (spinning) wait against PASSIVE.

    python benchmarks/omp_wait_policy.py [--rounds 3] [--threads 1,2] [--cases scfegan,rrdbnet] [--busy 0]
        [--policies default,passive,spin1k,spin3k,spin30k]

Why: PyTorch's OpenMP threads spin while they wait for each other.  When the machine has more runnable threads
than cores (a shared or busy laptop), a spinning thread burns the time slice its partner needs.  The policy is
read once, when libgomp loads (with torch), so each measurement is a fresh process: the environment is set
before the child imports torch.  Children run interleaved (round after round, every policy x threads x case in
turn) so a neighbour's load falls on all alike; each child times ``--forwards`` forwards after a warm-up and
reports its process CPU time and wall time.  ``--busy N`` adds N single-thread busy loops (same niceness) for
the whole run, to see the policies on a machine that is not idle.

Cases (fp32, random weights, batch 1): ``scfegan``, the SC-FEGAN generator on 1x9x512x512; ``rrdbnet``, RRDBNet
x4 (23 blocks) on a 64x64 input in 32-px tiles with 8 px of context (benchmarks/cpu_inference.py's tiling).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse
import json
import multiprocessing
import statistics
import subprocess
import time

# name -> the libgomp variables a child starts with (unset: libgomp's default, spinning about 3 ms before sleeping).
# GOMP_SPINCOUNT bounds the spin (about 100 iterations per microsecond, libgomp env.c) and wins over the policy.
POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"},
    "spin3k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"},
    "spin30k": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"},
}


def child(case: str, threads: int, forwards: int) -> dict:
    import tv_compat  # loads torch, and with it libgomp, under this process's environment

    import torch

    from archs.rrdbnet import RRDBNet
    from archs.scfegan_generator import SCFEGANGenerator
    from benchmarks.cpu_inference import tiled
    from inference.device import reuse_freed_memory

    reuse_freed_memory()  # as app.py and predict.py
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case == "scfegan":
        net = SCFEGANGenerator().eval()
        x = torch.rand(1, 9, 512, 512) * 2 - 1
        fn = lambda: net(x)  # noqa: E731
    else:
        net = RRDBNet(num_block=23).eval()
        x = torch.rand(1, 3, 64, 64)
        fn = lambda: tiled(net, x, 4, 32, 8)  # noqa: E731
    cpu, wall = [], []
    with torch.inference_mode():
        fn()  # warm-up
        for _ in range(forwards):
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}


def busy_loop() -> None:
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--cases", default="scfegan,rrdbnet")
    p.add_argument("--forwards", type=int, default=2, help="timed forwards per child (median)")
    p.add_argument("--policies", default=",".join(POLICIES), help="among " + ", ".join(POLICIES))
    p.add_argument("--busy", type=int, default=0, help="single-thread busy loops running beside the children")
    p.add_argument("--child", nargs=3, metavar=("CASE", "THREADS", "FORWARDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    load = lambda: ", ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731
    print(f"{os.cpu_count()} CPUs, {args.busy} busy loops beside, load average at the start: {load()}")
    hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
    for h in hogs:
        h.start()
    policies = args.policies.split(",")
    keys = [(c, int(t), pol) for c in args.cases.split(",") for t in args.threads.split(",") for pol in policies]
    res = {k: [] for k in keys}
    loads = {k: [] for k in keys}
    try:
        for _ in range(args.rounds):
            for case, threads, pol in keys:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                env.update(POLICIES[pol])
                cmd = [sys.executable, __file__, "--child", case, str(threads), str(args.forwards)]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                res[case, threads, pol].append(r)
                loads[case, threads, pol].append(os.getloadavg()[0])
                print(
                    f"  {case} {threads} threads {pol}: CPU {r['cpu']:.2f} s, wall {r['wall']:.2f} s "
                    f"(load {loads[case, threads, pol][-1]:.1f})",
                    flush=True,
                )
    finally:
        for h in hogs:
            h.kill()
    print(f"\nmedians over {args.rounds} interleaved rounds (each: median of {args.forwards} forwards after a warm-up)")
    print(
        f"  {'case':8s} {'threads':>7s} {'policy':>8s} {'CPU s':>7s} {'wall s':>7s} {'CPU / ' + policies[0]:>14s}"
        f" {'wall / ' + policies[0]:>15s}   {'load avg (1 min) per round'}"
    )
    for case, threads, pol in keys:
        c = statistics.median(r["cpu"] for r in res[case, threads, pol])
        w = statistics.median(r["wall"] for r in res[case, threads, pol])
        c0 = statistics.median(r["cpu"] for r in res[case, threads, policies[0]])
        w0 = statistics.median(r["wall"] for r in res[case, threads, policies[0]])
        print(
            f"  {case:8s} {threads:7d} {pol:>8s} {c:7.2f} {w:7.2f} {c / c0:14.2f} {w / w0:15.2f}   "
            + ", ".join(f"{v:.1f}" for v in loads[case, threads, pol])
        )
    print(f"\nload average (1, 5, 15 min) at the end: {load()}")


if __name__ == "__main__":
    main()
