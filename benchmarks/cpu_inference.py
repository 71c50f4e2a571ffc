"""CPU inference (issue 21): this project's generators against the runtimes a user would pick instead, interleaved.

    python benchmarks/cpu_inference.py                                   # PyTorch (now / before) and onnxruntime
    TF_SIDE=/work/side/tf/lib/python3.11/site-packages python benchmarks/cpu_inference.py   # + official TF graph
    python benchmarks/cpu_inference.py --omp-wait-policy default         # libgomp's spinning (see below)
    python benchmarks/cpu_inference.py --cases app --app-pairs 10        # the app's edit alone

Cases (batch 1, fp32, random weights, the same weights in every runtime):

* ``scfegan``: the SC-FEGAN generator on a 1x9x512x512 input (``--size``).  ``torch`` is this project's inference
  path (no autograd: fused gate convs with their weights packed once for oneDNN, channels_last; freed memory kept
  for reuse as app.py and predict.py do: ``inference.device.reuse_freed_memory``), ``torch (before)`` the plain
  modules as they ran before issue 21, ``onnxruntime`` this project's own ONNX export (``weights.export``), ``tensorflow`` the official graph
  built from the authors' ``model.py``/``ops.py`` (``weights.scfegan_convert.official_tf_generator``; TensorFlow
  is not a requirement: install it in a side folder and point ``TF_SIDE`` at it).
* ``rrdbnet``: RRDBNet x4, 23 blocks, on square inputs in tiles with pixels of context (``--sr``: by default a
  64x64 input in 32-px tiles + 8 of context, where per-operation overheads weigh most, and a 256x256 input in
  128-px tiles + 16), the same tiles for every runtime; reported per input megapixel.  The app and predict.py
  use larger tiles still (512 px, or the whole image, with the receptive margin as context).  ``torch`` is
  predict.py's and the app's path (``inference.tiling``: as many tiles at once as there are threads, one thread
  each, where their activations fit ``PARALLEL_TILES_BYTES``; ops/tile_threads.py), ``torch (tiles in turn)`` the
  same tiles one after the other on all threads; ``onnxruntime`` one session running the tiles in turn on its
  thread pool (as a user runs it), ``onnxruntime (tiles at once)`` single-threaded runs of one session side by
  side, as this project's path runs them.
* ``srvgg``: Real-ESRGAN's compact SRVGGNetCompact x4 at ``realesr-animevideov3-x4``'s size (16 convs, 64 features,
  PReLU), on an input of 4x the side (it costs 27x less; a 64x64 input took 0.07 s, too short to time) in the same
  tiles and with the same rows as ``rrdbnet``, against onnxruntime on this project's
  ONNX export of the same weights; per input megapixel.  No ``torch (before)`` row: the network came after issue 21
  was filed (its packed NHWC inference path: ``SRVGGNetCompact._forward_packed``).

* ``app``: the app's 512x512 face edit end to end (decode, network, composite, encode; issue 21 item 3), through
  ``/edit_face`` and through the page in Chromium, interleaved on one ``python app.py`` server with the full-width
  generator: ``benchmarks/app_edit.py --paired`` in a subprocess (see there), ``--app-pairs`` pairs; the wall time
  and the server's CPU time per edit.  Needs Chromium (as tests/test_app_server.py); left out, saying so, without it.

``--quick``: toy sizes and one round (every case, every runtime, the same code paths: proves the script works;
the figures mean nothing).  tests/test_cpu_inference.py runs it.

Each runtime runs in a process of its own (set up and warmed up first), and they take turns (A B C A B C ...) for
``--reps`` rounds, with a 0.5 s pause before each run, so that a shared machine's load falls on all of them alike
and no runtime's threads compete with another's: two thread pools in one process slow each other down (PyTorch's
OpenMP threads and onnxruntime's both spin a while after their work; measured in one process, onnxruntime came out
up to 2.3x slower than alone, PyTorch up to 1.4x).  The table gives medians of the process CPU time and of the wall
time, their ratios to this project's path, the largest output difference, and the load average.  CPU time is the
steadier figure on a shared machine; wall time is what a user waits for.

``--omp-wait-policy``: PyTorch's OpenMP threads spin while they wait for each other (libgomp's default).  On a
machine with more runnable threads than cores the spinning thread burns the time slice its partner needs;
onnxruntime's and TensorFlow's own thread pools do not suffer this.  Like predict.py and app.py, this script sets
``OMP_WAIT_POLICY=PASSIVE`` before torch is imported unless the environment already has a value (see
benchmarks/omp_wait_policy.py); ``default`` (unset), ``passive``, ``active`` override it (it has no effect once
libgomp is loaded).
"""

import os
import sys

# As predict.py and app.py (benchmarks/omp_wait_policy.py): before torch loads libgomp; --omp-wait-policy overrides.
# The runtimes' worker processes import this file again (as __mp_main__): the parent's choice reaches them through
# _CPU_INFERENCE_OMP ("default": libgomp's own, the variable unset).
if os.environ.get("_CPU_INFERENCE_OMP") == "default":
    os.environ.pop("OMP_WAIT_POLICY", None)
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if __name__ == "__main__":
    for i, arg in enumerate(sys.argv):
        value = (
            arg.split("=", 1)[1]
            if arg.startswith("--omp-wait-policy=")
            else (sys.argv[i + 1] if arg == "--omp-wait-policy" and i + 1 < len(sys.argv) else None)
        )
        if value in ("passive", "active"):
            os.environ["OMP_WAIT_POLICY"] = value.upper()
        elif value == "default":  # libgomp's own default (spin a while, then sleep)
            os.environ.pop("OMP_WAIT_POLICY")
            os.environ["_CPU_INFERENCE_OMP"] = "default"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat

import argparse
import atexit
import contextlib
import json
import multiprocessing
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from archs import gated_conv, rrdbnet, scfegan_generator
from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from archs.srvgg import SRVGGNetCompact
from inference.device import reuse_freed_memory
from inference.tiling import plan_workers, tile_grid, tiled_forward
from weights.export import export_generator


@contextlib.contextmanager
def before_issue_21():
    """The plain modules (no fused gate convs, NCHW), as every module ran before issue 21 (benchmark only)."""
    mods = (gated_conv, scfegan_generator, rrdbnet)
    saved = [m.fast_inference for m in mods]
    for m in mods:
        m.fast_inference = lambda *args: False
    try:
        yield
    finally:
        for m, f in zip(mods, saved):
            m.fast_inference = f


def ort_session(net, example, path, threads):
    import onnxruntime as ort

    export_generator(net, "onnx", path, example=example)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(sess.run(None, {"input": x.contiguous().numpy()})[0])


def tiled(fn, x, scale, tile, pad, pool=None):
    """``fn`` on ``tile`` x ``tile`` input tiles with ``pad`` pixels of context (clipped at the border); through
    ``pool`` (an executor) when given, several tiles at once."""
    _, _, h, w = x.shape
    out = torch.zeros(x.shape[0], 3, h * scale, w * scale)
    grid = tile_grid(h, w, tile)

    def run(box):
        y0, y1, x0, x1 = box
        return fn(x[..., max(y0 - pad, 0) : min(y1 + pad, h), max(x0 - pad, 0) : min(x1 + pad, w)])

    for (y0, y1, x0, x1), y in zip(grid, (pool.map if pool else map)(run, grid)):
        oy, ox = (y0 - max(y0 - pad, 0)) * scale, (x0 - max(x0 - pad, 0)) * scale
        out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = y[
            ..., oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
        ]
    return out


def build(case: str, runtime: str, opts: dict, tmp: str):
    """A zero-argument callable running ``runtime`` on ``case``'s input (the same seeded weights and input in every
    process)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if case == "scfegan":
        net = SCFEGANGenerator().eval()
        x = torch.rand(1, 9, opts["size"], opts["size"], generator=g) * 2 - 1
        example, call = x[..., :128, :128], (lambda fn: fn(x))
    else:
        if case == "rrdbnet":
            net = RRDBNet(num_block=23).eval()
        else:  # realesr-animevideov3-x4's size (README "Predict and export"; Real-ESRGAN inference_realesrgan.py)
            net = SRVGGNetCompact(num_feat=64, num_conv=16, upscale=4, act_type="prelu").eval()
            with torch.no_grad():  # PReLU slopes off their 0.25 default, as trained weights are
                for m in net.modules():
                    if isinstance(m, torch.nn.PReLU):
                        m.weight.uniform_(0.0, 0.5, generator=g)
        x = torch.rand(1, 3, opts["sr_size"], opts["sr_size"], generator=g)
        example = x[..., :32, :32]
        call = lambda fn: tiled(fn, x, 4, opts["tile"], opts["tile_pad"])  # noqa: E731
        side, tile, pad = opts["sr_size"], opts["tile"], opts["tile_pad"]
        if runtime == "torch":  # predict.py's and the app's path: tiles at once where they fit (inference/tiling.py)
            workers = plan_workers(net, side, side, tile, pad, "cpu")
            return lambda: tiled_forward(net, x, 4, tile, pad, workers=workers)
        if runtime == "torch (tiles in turn)":
            return lambda: tiled_forward(net, x, 4, tile, pad)
        if runtime == "onnxruntime (tiles at once)":  # one single-threaded session run from a thread per core
            fn = ort_session(net, example, os.path.join(tmp, f"{case}.onnx"), 1)
            pool = ThreadPoolExecutor(opts["threads"])
            return lambda: tiled(fn, x, 4, tile, pad, pool)
    if runtime == "torch":
        return lambda: call(net)
    if runtime == "torch (before)":

        def before():
            with before_issue_21():
                return call(net)

        return before
    if runtime == "onnxruntime":
        fn = ort_session(net, example, os.path.join(tmp, f"{case}.onnx"), opts["threads"])
        return lambda: call(fn)
    # the official SC-FEGAN graph in TensorFlow, from a side folder (TF_SIDE)
    sys.path.append(os.environ["TF_SIDE"])  # after the project's packages
    import tensorflow as tf

    from weights.scfegan_convert import official_tf_generator, torch_to_tf

    tf.config.threading.set_intra_op_parallelism_threads(opts["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    variables = {k: tf.constant(v) for k, v in torch_to_tf(net.state_dict()).items()}
    graph = tf.function(lambda inp: official_tf_generator(tf, variables, inp))
    x_tf = tf.constant(x.permute(0, 2, 3, 1).numpy())
    return lambda: torch.from_numpy(graph(x_tf).numpy()).permute(0, 3, 1, 2)


def worker(conn, case: str, runtime: str, opts: dict, tmp: str) -> None:
    """One runtime in a process of its own: its thread pool alone on the cores when its turn comes."""
    torch.set_num_threads(opts["threads"])
    if runtime == "torch":  # as app.py and predict.py do (the rows before it ran without)
        reuse_freed_memory()
    fn = build(case, runtime, opts, tmp)  # parameters made outside inference mode (the fast path's cache)
    with torch.inference_mode():
        out = fn()  # warm-up
        conn.send(runtime)
        while conn.recv() == "run":
            c, w = time.process_time(), time.perf_counter()
            fn()
            conn.send((time.process_time() - c, time.perf_counter() - w))
    conn.send(out.numpy())


def _recv(proc, conn):
    """The worker's next message; stops the benchmark if the worker died (its traceback is on stderr)."""
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise SystemExit(f"benchmark worker {proc.name} exited with {proc.exitcode}")
    return conn.recv()


def interleaved(case: str, runtimes: list[str], opts: dict, reps: int, tmp: str) -> dict:
    """{runtime: (cpu_s list, wall_s list, output)}: each runtime in its own process (set up and warmed up first),
    then ``reps`` rounds in turn, with a pause before each run so that the previous runtime's threads have stopped
    spinning (two thread pools in one process, or running at once, slow each other down)."""
    ctx = multiprocessing.get_context("spawn")
    procs = {}
    for rt in runtimes:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(child, case, rt, opts, tmp), daemon=True)
        p.start()
        _recv(p, parent)  # built and warmed up
        procs[rt] = (p, parent)
    res = {rt: ([], []) for rt in runtimes}
    for _ in range(reps):
        for rt, (p, conn) in procs.items():
            time.sleep(0.5)
            conn.send("run")
            cpu, wall = _recv(p, conn)
            res[rt][0].append(cpu)
            res[rt][1].append(wall)
    out = {}
    for rt, (p, conn) in procs.items():
        conn.send("stop")
        out[rt] = (*res[rt], torch.from_numpy(_recv(p, conn)))
        p.join(60)
    return out


def table(title, res, per=1.0, unit="s"):
    base = "torch"
    cpu0, wall0 = statistics.median(res[base][0]), statistics.median(res[base][1])
    print(f"\n{title}")
    print(
        f"  {'runtime':28s} {'CPU ' + unit:>10s} {'wall ' + unit:>10s} {'CPU / torch':>12s} {'wall / torch':>13s}"
        f" {'max |out - torch|':>18s}   wall runs (s)"
    )
    for name, (cpu, wall, out) in res.items():
        c, w = statistics.median(cpu), statistics.median(wall)
        diff = (out - res[base][2]).abs().max().item()
        print(
            f"  {name:28s} {c / per:10.2f} {w / per:10.2f} {c / cpu0:12.2f} {w / wall0:13.2f} {diff:18.2e}   "
            + ", ".join(f"{v:.2f}" for v in wall)
        )


# onnxruntime as a user runs it (one session, the tiles in turn on its thread pool), and with the tiles spread over
# single-threaded runs at once as this project's path does (ops/tile_threads.py).
SR_ORT = ["onnxruntime", "onnxruntime (tiles at once)"]
SRVGG_SIDE = 4  # the compact network's input side, in multiples of --sr's (it is 27x cheaper than RRDBNet)


def load():
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="scfegan,rrdbnet,srvgg,app")
    p.add_argument("--app-pairs", type=int, default=6, help="app: API / browser edit pairs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size", type=int, default=512, help="SC-FEGAN input side (a multiple of 128)")
    p.add_argument(
        "--sr",
        default="64/32+8,256/128+16",
        help="SR inputs and tiles, SIDE/TILE+CONTEXT, comma-separated: each a table per SR network",
    )
    p.add_argument("--no-before", action="store_true", help="skip the plain modules")
    p.add_argument("--quick", action="store_true", help="toy sizes, one round: the code paths, no figures")
    p.add_argument(
        "--omp-wait-policy", choices=("default", "passive", "active"), help="default: the environment's, else passive"
    )
    args = p.parse_args(argv)
    if args.quick:  # every case and runtime at toy sizes (a 2x2 tile grid with context), one round
        args.reps, args.size, args.sr = 1, 128, "24/16+4"
    try:
        sr_configs = [
            (int(a), int(b), int(c))
            for a, b, c in (re.fullmatch(r"(\d+)/(\d+)\+(\d+)", v.strip()).groups() for v in args.sr.split(","))
        ]
    except AttributeError:
        p.error(f"--sr: SIDE/TILE+CONTEXT[,...], e.g. 64/32+8; got {args.sr!r}")
    torch.set_num_threads(args.threads)
    cases = args.cases.split(",")
    print(
        f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
        f", {args.reps} interleaved rounds, medians; {os.cpu_count()} CPUs; load average at the start: {load()}"
    )
    tmp = tempfile.mkdtemp(prefix="cpu_inference_")
    atexit.register(shutil.rmtree, tmp, True)  # the ONNX exports

    opts = dict(threads=args.threads, size=args.size)
    if "scfegan" in cases:
        runtimes = ["torch"] + ([] if args.no_before else ["torch (before)"]) + ["onnxruntime"]
        if os.environ.get("TF_SIDE"):
            runtimes.append("tensorflow")
        res = interleaved("scfegan", runtimes, opts, args.reps, tmp)
        table(f"SC-FEGAN generator, 1x9x{args.size}x{args.size}, per forward (load average now: {load()})", res)
    for sr_size, tile, pad in sr_configs:
        opts.update(sr_size=sr_size, tile=tile, tile_pad=pad)
        mp = sr_size**2 / 1e6
        tiles = f"{sr_size}x{sr_size} input in {tile}-px tiles + {pad}-px context"
        if "rrdbnet" in cases:
            runtimes = ["torch", "torch (tiles in turn)"] + ([] if args.no_before else ["torch (before)"])
            res = interleaved("rrdbnet", runtimes + SR_ORT, opts, args.reps, tmp)
            title = f"RRDBNet x4 (23 blocks), {tiles}, per input megapixel (load average now: {load()})"
            table(title, res, per=mp, unit="s/MP")
        if "srvgg" in cases:  # 27x cheaper than RRDBNet: an input of 4x the side (16x the tiles) times well
            side = sr_size * (1 if args.quick else SRVGG_SIDE)
            res = interleaved(
                "srvgg", ["torch", "torch (tiles in turn)"] + SR_ORT, dict(opts, sr_size=side), args.reps, tmp
            )
            title = (
                f"SRVGGNetCompact x4 (16 convs, 64 features: realesr-animevideov3-x4), {side}x{side} input in "
                f"{tile}-px tiles + {pad}-px context, per input megapixel (load average now: {load()})"
            )
            table(title, res, per=side**2 / 1e6, unit="s/MP")
    if "app" in cases:
        app_table(args, tmp)
    print(f"\nload average (1, 5, 15 min) at the end: {load()} on {os.cpu_count()} CPUs")


def app_table(args, tmp: str) -> None:
    """The app's edit through the API and the browser: benchmarks/app_edit.py --paired, its medians as a table."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from app_edit import find_chromium

    if find_chromium() is None:
        print("\nthe app: no Chromium found (CHROMIUM_PATH, /usr/lib/chromium/chromium): its rows are left out")
        return
    size, cnum, pairs = (128, 8, 1) if args.quick else (args.size, 64, args.app_pairs)
    out = os.path.join(tmp, "app_edit.json")
    cmd = [sys.executable, os.path.join(here, "app_edit.py"), "--paired", "--repeats", str(pairs)]
    cmd += ["--size", str(size), "--cnum", str(cnum), "--threads", str(args.threads), "--json", out]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"benchmarks/app_edit.py failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    with open(out) as f:
        res = json.load(f)
    api = statistics.median(res["/edit_face (API)"]["wall"])
    print(
        f"\nThe app's SC-FEGAN edit, {size}x{size} end to end (cnum {cnum}), {pairs} interleaved pairs after a "
        f"warm-up, medians (load average now: {load()}; per pair: python benchmarks/app_edit.py --paired)"
    )
    print(f"  {'via':22s} {'wall s':>10s} {'server CPU s':>13s} {'wall / API':>11s}   wall runs (s)")
    for name, r in res.items():
        w, c = statistics.median(r["wall"]), statistics.median(r["server_cpu"])
        print(f"  {name:22s} {w:10.2f} {c:13.2f} {w / api:11.2f}   " + ", ".join(f"{v:.2f}" for v in r["wall"]))


if __name__ == "__main__":
    main()
