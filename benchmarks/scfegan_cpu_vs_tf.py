"""SC-FEGAN generator forward on CPU: this project against the official TensorFlow graph, interleaved.

    # TensorFlow is NOT a requirement of the project: put it in a side folder and add that folder to the path.
    pip install --target /tmp/tfside tensorflow-cpu==2.20.0
    TF_SIDE=/tmp/tfside python benchmarks/scfegan_cpu_vs_tf.py --size 512 --reps 5
    python benchmarks/scfegan_cpu_vs_tf.py --no-tf            # PyTorch only: this project vs the 'before' kernels

Same random weights in both (``weights.scfegan_convert.torch_to_tf``), one input, batch 1, fp32, no gradients.
The implementations run in turn, ``--reps`` rounds (A B C A B C ...), so that a shared machine's load falls on
all of them alike; medians and the load average are printed, and the outputs are compared.

``before`` is the generator as it was before ops/fast_conv.py: ``nn.LocalResponseNorm`` (avg_pool3d) and
PyTorch's dilated conv (``slow_conv_dilated2d`` on CPU for the 4x4 bottleneck).  ``--threads`` sets both
frameworks' intra-op threads (default: torch's current count); TF keeps its inter-op default.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import contextlib
import statistics
import time

import torch
from torch import nn

from archs import gated_conv
from archs.scfegan_generator import SCFEGANGenerator
from weights.scfegan_convert import official_tf_generator, torch_to_tf


@contextlib.contextmanager
def before_kernels(net: SCFEGANGenerator):
    """The generator's kernels as they were before ops/fast_conv.py (benchmark only)."""
    fast = gated_conv.Conv2dSame.conv_padded
    lrns = {m: m.lrn for m in net.modules() if isinstance(m, gated_conv.GatedConv2d) and m.lrn is not None}
    gated_conv.Conv2dSame.conv_padded = lambda self, x: self._conv_forward(x, self.weight, self.bias)
    for m in lrns:
        m.lrn = nn.LocalResponseNorm(size=11, alpha=11.0, beta=0.5, k=5e-5)
    try:
        yield
    finally:
        gated_conv.Conv2dSame.conv_padded = fast
        for m, lrn in lrns.items():
            m.lrn = lrn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-tf", action="store_true", help="PyTorch only (this project and 'before')")
    p.add_argument("--channels-last", action="store_true", help="also this project in channels_last")
    p.add_argument("--no-before", action="store_true", help="skip the 'before' kernels")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process CPU time instead of the wall clock (steadier on a loaded machine; "
        "use with --threads 1: then it is the work done, not the waiting)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    net = SCFEGANGenerator().eval()
    x = torch.rand(1, 9, args.size, args.size) * 2 - 1
    runs = {"torch (this project)": lambda: net(x)}
    if args.channels_last:  # NHWC activations: oneDNN's native layout, no reorders between layers
        net_cl = SCFEGANGenerator().eval()
        net_cl.load_state_dict(net.state_dict())
        net_cl.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        runs["torch, channels_last"] = lambda: net_cl(x_cl)
    if not args.no_before:

        def before():
            with before_kernels(net):
                return net(x)

        runs["torch (before)"] = before
    if not args.no_tf:
        side = os.environ.get("TF_SIDE")
        if side:
            sys.path.append(side)  # after the project's packages: TF's own numpy etc. do not shadow them
        try:
            import tensorflow as tf
        except ImportError:
            sys.exit(
                "TensorFlow not importable: pip install --target /tmp/tfside tensorflow-cpu and set "
                "TF_SIDE=/tmp/tfside (or pass --no-tf)"
            )
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        if args.cpu_time:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        variables = {k: tf.constant(v) for k, v in torch_to_tf(net.state_dict()).items()}
        graph = tf.function(lambda inp: official_tf_generator(tf, variables, inp))
        x_tf = tf.constant(x.permute(0, 2, 3, 1).numpy())
        runs[f"tensorflow {tf.__version__}"] = lambda: torch.from_numpy(graph(x_tf).numpy()).permute(0, 3, 1, 2)
    print(f"SC-FEGAN generator forward, 1x9x{args.size}x{args.size} fp32, {threads} threads, torch {torch.__version__}")
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"clock: {'process CPU time' if args.cpu_time else 'wall'}")
    times = {name: [] for name in runs}
    outs = {}
    with torch.inference_mode():
        for name, fn in runs.items():  # warm-up (TF traces its graph here), outputs for the comparison
            outs[name] = fn()
        for _ in range(args.reps):
            for name, fn in runs.items():
                t = clock()
                fn()
                times[name].append(clock() - t)
    ref = outs["torch (this project)"]
    base = statistics.median(times["torch (this project)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        diff = (outs[name] - ref).abs().max().item()
        print(
            f"{name:24s} median {1000 * med:8.1f} ms  (runs: {', '.join(f'{1000 * t:.0f}' for t in ts)})  "
            f"time / this project's {med / base:5.2f}   max |out - this project's| {diff:.2e}"
        )
    print(
        f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs"
    )
    return {name: statistics.median(ts) for name, ts in times.items()}


if __name__ == "__main__":
    main()
