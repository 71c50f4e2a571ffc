"""The CPU inference path (issue 21): fused gate convs and channels_last activations compute what the plain
modules compute, within 1e-5 in fp32, and leave state dicts, training and export untouched."""

import copy
import io
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archs.gated_conv import GatedConv2d, GatedDeconv2d, tf_same_pads
from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from archs.srvgg import SRVGGNetCompact
from ops import fast_conv
from ops.fast_conv import fast_inference, prepack_applies

TOL = 1e-5


def reference_gated_conv(m: GatedConv2d, x: torch.Tensor) -> torch.Tensor:
    """Official ``gate_conv`` written out: TF 'SAME' pads, two convs, LRN as ``nn.LocalResponseNorm``."""
    c = m.conv
    top, bottom = tf_same_pads(x.shape[-2], c.kernel_size[0], c.stride[0], c.dilation[0])
    left, right = tf_same_pads(x.shape[-1], c.kernel_size[1], c.stride[1], c.dilation[1])
    xp = F.pad(x, (left, right, top, bottom))
    feat = F.conv2d(xp, c.weight, c.bias, c.stride, 0, c.dilation)
    gate = F.conv2d(xp, m.gate.weight, m.gate.bias, c.stride, 0, c.dilation)
    if m.lrn is not None:
        feat = nn.LocalResponseNorm(size=11, alpha=11.0, beta=0.5, k=5e-5)(feat)
    if m.activation == "lrelu":
        feat = F.leaky_relu(feat, 0.2)
    return feat * torch.sigmoid(gate)


def plain(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The modules' plain path (autograd on), i.e. the outputs as they were before the fast path."""
    with torch.enable_grad():
        return net(x).detach()


def _random_init(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # non-zero biases: the fused bias order is checked too
            p.copy_(torch.randn(p.shape, generator=g) * (p.shape[1:].numel() ** -0.5 if p.dim() > 1 else 0.1))


@pytest.mark.parametrize(
    "kw",
    [
        dict(in_channels=9, out_channels=16, kernel_size=7, stride=2, use_lrn=False),  # gconv1_ds
        dict(in_channels=16, out_channels=24, kernel_size=5, stride=2),  # LRN, stride 2
        dict(in_channels=24, out_channels=24, kernel_size=3, dilation=2),  # dilated
        dict(in_channels=24, out_channels=24, kernel_size=3, dilation=8),  # only the centre tap is live
        dict(in_channels=12, out_channels=3, kernel_size=3, use_lrn=False, activation=None),  # gconv14
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_gated_conv_matches_reference(kw, channels_last):
    m = GatedConv2d(**kw).eval()
    _random_init(m)
    x = torch.randn(2, kw["in_channels"], 16, 16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = reference_gated_conv(m, x)
        assert fast_inference(x, m)
        fast = m(x)
    assert _fused_ran(m)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max().item() < TOL
    assert (fast - plain(m, x)).abs().max().item() < TOL


def test_fused_weights_follow_the_parameters():
    """A cached fused weight is never stale: load_state_dict and in-place edits invalidate it."""
    m = GatedConv2d(8, 8, 3).eval()
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        first = m(x)
    other = GatedConv2d(8, 8, 3)
    _random_init(other, seed=1)
    m.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert (m(x) - reference_gated_conv(other, x)).abs().max().item() < TOL
        assert not torch.allclose(m(x), first)
        m.gate.bias.add_(1.0)
        assert (m(x) - reference_gated_conv(m, x)).abs().max().item() < TOL


def _fused_ran(m: GatedConv2d) -> bool:
    """The fused path ran: the plain fused weight is cached, or its packed copy (which replaces it: one copy)."""
    d = m.__dict__
    return ("_fused" in d) != ("_fused_packed" in d) or (m.conv.dilation != (1, 1) and "_fused" in d)


@pytest.mark.parametrize("dilation", [1, 2])
def test_fused_cache_is_not_saved_or_copied(dilation):
    m = GatedConv2d(4, 4, 3, dilation=dilation).eval()
    with torch.inference_mode():
        m(torch.randn(1, 4, 8, 8))
    assert _fused_ran(m)
    assert ("_fused_packed" in m.__dict__) == (dilation == 1 and prepack_applies(torch.ones(1)))
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert not {"_fused", "_fused_packed"} & set(other.__dict__)
        assert other not in fast_conv._PACKED  # the packed weights (a weak dict keyed by module) stay behind
    buf = io.BytesIO()
    torch.save(m, buf)  # a whole pickled module (no weights_only reader here: our own object)


def test_fast_path_only_in_eval_mode_without_autograd_on_cpu():
    x = torch.randn(1, 3, 4, 4)
    m = torch.nn.Identity().eval()
    assert not fast_inference(x, m)  # grad enabled: training keeps the plain modules
    with torch.no_grad():
        assert fast_inference(x, m)
        # A training step's no-grad pass (the D step's fake images) keeps the plain path: resumes stay bit-identical.
        assert not fast_inference(x, m.train())
    m.eval()
    with torch.inference_mode():
        assert fast_inference(x, m)
    with torch.no_grad():
        assert not fast_inference(torch.empty(1, 3, 4, 4, device="meta"), m)


def test_self_gated_deconv_in_place_path():
    m = GatedDeconv2d(8, 4).eval()
    _random_init(m)
    x = torch.randn(1, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = m(x)
    ref = plain(m, x)
    assert (fast - ref).abs().max().item() < TOL


@pytest.mark.parametrize("cnum,size", [(8, 256), (64, 128)])
def test_generator_fast_path_matches_plain(cnum, size):
    torch.manual_seed(0)
    net = SCFEGANGenerator(cnum=cnum).eval()
    _random_init(net)
    keys = list(net.state_dict())
    x = torch.rand(1, 9, size, size) * 2 - 1
    ref = plain(net, x)
    with torch.inference_mode():
        fast = net(x)
    assert fast.is_contiguous()  # callers get the usual NCHW layout back
    assert (fast - ref).abs().max().item() < TOL
    assert list(net.state_dict()) == keys  # the fused layout is never saved
    assert all(v.is_contiguous() for v in net.state_dict().values())


def test_generator_training_step_unchanged():
    """Autograd keeps the plain modules: gradients flow to both the feature and the gate convs."""
    net = SCFEGANGenerator(cnum=4)
    x = torch.rand(1, 9, 128, 128) * 2 - 1
    net(x).mean().backward()
    assert net.gconv2_ds.conv.weight.grad is not None and net.gconv2_ds.gate.weight.grad is not None
    assert not {"_fused", "_fused_packed"} & set(net.gconv2_ds.__dict__)
    assert net.gconv2_ds not in fast_conv._PACKED


needs_prepack = pytest.mark.skipif(not prepack_applies(torch.ones(1)), reason="this torch has no oneDNN packed convs")


@needs_prepack
def test_packed_weights_serve_every_input_size():
    """A weight packed for one input (ops.fast_conv) runs inputs of other sizes (tiles, other photos) exactly as
    F.conv2d / F.conv_transpose2d, and is packed once: the cache keeps the first packing across sizes."""
    torch.manual_seed(0)
    conv, deconv = nn.Conv2d(16, 24, 3), nn.ConvTranspose2d(16, 8, 5, 2, 1)
    packs = []
    real_pack = torch.ops.mkldnn._reorder_convolution_weight
    with torch.no_grad():
        for size in (12, 7, 33, 12):
            x = torch.randn(1, 16, size, size + 3).contiguous(memory_format=torch.channels_last)
            y = fast_conv.packed_conv2d(conv, "w", x, conv.weight, conv.bias, 2, 1)
            assert torch.equal(y, F.conv2d(x, conv.weight, conv.bias, 2, 1))
            packs.append(fast_conv._PACKED[conv]["w"][1])
            yt = fast_conv.packed_conv_transpose2d(deconv, "w", x, deconv.weight, deconv.bias, 2, 1)
            assert (yt - F.conv_transpose2d(x, deconv.weight, deconv.bias, 2, 1)).abs().max().item() < TOL
        assert all(p is packs[0] for p in packs)
        conv.weight.mul_(2)  # an in-place change repacks
        y = fast_conv.packed_conv2d(conv, "w", x, conv.weight, conv.bias, 2, 1)
        assert fast_conv._PACKED[conv]["w"][1] is not packs[0]
        assert torch.equal(y, F.conv2d(x, conv.weight, conv.bias, 2, 1))
    assert real_pack is torch.ops.mkldnn._reorder_convolution_weight


@needs_prepack
def test_generator_fast_path_without_packing_and_under_autocast(monkeypatch):
    """Where the packed ops do not apply (a torch without them: forced here; CPU bf16 autocast) the fused path runs
    F.conv2d and gives the same numbers; bf16 autocast really runs in bf16 (it is not silently fp32)."""
    torch.manual_seed(0)
    net = SCFEGANGenerator(cnum=8).eval()
    _random_init(net)
    x = torch.rand(1, 9, 128, 128) * 2 - 1
    ref = plain(net, x)
    unpacked = SCFEGANGenerator(cnum=8).eval()
    unpacked.load_state_dict(net.state_dict())
    with torch.inference_mode():
        packed = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not prepack_applies(x)
            bf16 = net(x)
        monkeypatch.setattr(fast_conv, "PREPACK_AVAILABLE", False)
        assert (unpacked(x) - ref).abs().max().item() < TOL
    assert (packed - ref).abs().max().item() < TOL
    assert unpacked not in fast_conv._PACKED and "_fused_packed" not in unpacked.gconv2_ds.__dict__
    assert 1e-4 < (bf16.float() - ref).abs().max().item() < 0.5


def test_networks_made_in_inference_mode_run():
    """Parameters made under torch.inference_mode count no versions: the caches key them by pointer alone."""
    x = torch.rand(1, 9, 128, 128)
    with torch.inference_mode():
        sc = SCFEGANGenerator(cnum=4).eval()
        sr = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()
        assert sc(x).shape == (1, 3, 128, 128) and sr(x[:, :3, :16, :16]).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size", [8, 16, 24])
def test_dilated_fused_layer_at_several_sizes(size):
    """The dilated layers' taps are pruned per input size and their packed weight follows the size."""
    m = GatedConv2d(8, 8, 3, dilation=4).eval()
    _random_init(m)
    with torch.no_grad():
        for s in (size, size + 8, size):
            x = torch.randn(1, 8, s, s).contiguous(memory_format=torch.channels_last)
            assert (m(x) - reference_gated_conv(m, x)).abs().max().item() < TOL


@pytest.mark.parametrize("scale", [4, 2])
def test_rrdbnet_fast_path_matches_plain(scale):
    torch.manual_seed(0)
    net = RRDBNet(num_block=2, num_feat=16, num_grow_ch=8, scale=scale).eval()
    _random_init(net)
    x = torch.rand(1, 3, 24, 20)
    x0 = x.clone()
    ref = plain(net, x)
    seen = []
    net.body[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    with torch.inference_mode():
        fast = net(x)
        again = net(x[..., :16, :12])  # another tile size: the same packed weights
    assert seen == [False, False]  # channels_last inside
    assert fast.is_contiguous() and fast.shape == ref.shape
    assert (fast - ref).abs().max().item() < TOL
    assert (again - plain(net, x[..., :16, :12])).abs().max().item() < TOL
    assert torch.equal(x, x0)  # the in-place residuals never touch the caller's tensor
    if prepack_applies(x):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert all(m in fast_conv._PACKED for m in convs)  # every conv ran packed, once per weight
        with torch.no_grad():
            net.conv_last.bias.add_(1.0)
        with torch.inference_mode():
            assert (net(x) - plain(net, x)).abs().max().item() < TOL  # a changed weight is packed again


@pytest.mark.parametrize("act_type", ["prelu", "relu", "leakyrelu"])
def test_srvgg_fast_path_matches_plain(act_type):
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=16, num_conv=3, upscale=4, act_type=act_type).eval()
    _random_init(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.PReLU):  # slopes off their shared 0.25 default, one per channel
                m.weight.uniform_(0.0, 0.5)
    x = torch.rand(1, 3, 20, 28)
    ref = plain(net, x)
    with torch.inference_mode():
        fast = net(x)
        again = net(x[..., :12, :16])  # another tile size: the same packed weights
    assert fast.is_contiguous() and fast.shape == ref.shape
    assert (fast - ref).abs().max().item() < TOL
    assert (again - plain(net, x[..., :12, :16])).abs().max().item() < TOL
    if prepack_applies(x):
        assert all(m in fast_conv._PACKED for m in net.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.slow
def test_cpu_inference_benchmark_quick_mode_prints_every_row():
    """`python benchmarks/cpu_inference.py --quick` (the command the lead's full run shares its code with): every case
    prints its rows, the runtimes agree on the outputs, the compact SRVGGNet row compares torch with onnxruntime
    on the same tiles (issue 21 item 2), and the app's edit is timed through the API and the browser (item 3)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_SIDE"}  # no TensorFlow row here
    threads = os.environ.get("TEST_TORCH_THREADS", "2")
    out = subprocess.run(
        [sys.executable, "benchmarks/cpu_inference.py", "--quick", "--threads", threads],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    blocks = out.stdout.split("\n\n")
    sr_rows = ["torch", "torch (tiles in turn)", "onnxruntime", "onnxruntime (tiles at once)"]
    titles = {
        "SC-FEGAN generator": ["torch", "torch (before)", "onnxruntime"],
        "RRDBNet x4 (23 blocks)": sr_rows[:2] + ["torch (before)"] + sr_rows[2:],
        "SRVGGNetCompact x4 (16 convs, 64 features": sr_rows,
    }
    for title, expected in titles.items():
        (block,) = [b for b in blocks if b.startswith(title)]
        rows = block.splitlines()[2:]
        names = [r[2:30].strip() for r in rows]  # the runtime column (28 characters after 2 spaces)
        assert names == expected, block
        for row in rows:
            nums = re.findall(r"[-+]?\d+\.\d+(?:e[-+]\d+)?", row[30:])  # CPU, wall, 2 ratios, max |diff|, runs
            cpu, diff = float(nums[0]), float(nums[4])
            assert cpu > 0 and diff < 1e-4, row  # same weights, same tiles: the same output
    # the app's edit through the API and the browser (issue 21 item 3), where Chromium is installed
    app = [b for b in blocks if b.startswith("The app's SC-FEGAN edit")]
    if not app:
        assert "no Chromium found" in out.stdout and os.environ.get("APP_BROWSER_TESTS") != "required", out.stdout
        return
    rows = app[0].splitlines()[2:]
    assert [r[2:24].strip() for r in rows] == ["/edit_face (API)", "browser Generate"], app[0]
    for row in rows:
        wall, cpu, ratio = (float(v) for v in row[24:].split()[:3])
        assert wall > 0 and cpu > 0 and ratio > 0, row


_FAULTS = """
import resource, sys
import tv_compat, torch
from archs.scfegan_generator import SCFEGANGenerator
from inference.device import reuse_freed_memory
if sys.argv[1] == "on":
    assert reuse_freed_memory()
torch.set_num_threads(1)
net = SCFEGANGenerator(cnum=8).eval()
x = torch.rand(1, 9, 1024, 1024)  # the last concatenation (50 MB) is above glibc's largest dynamic mmap threshold
with torch.inference_mode():
    for _ in range(5):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        net(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_reuse_freed_memory_stops_page_faults_between_forwards():
    """inference.device.reuse_freed_memory (app.py, predict.py): after the first forward the activations come from
    memory the process already holds, so later forwards fault no pages in (without it, glibc maps and faults them
    in again every time: kernel time, 0.27 CPU-s of a 512x512 SC-FEGAN forward).  Fresh processes: the malloc
    settings are process-wide; one thread (a second one allocates a little from an arena of its own)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    faults = {}
    for mode in ("off", "on"):
        run = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode, "1"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        faults[mode] = int(run.stdout.strip().splitlines()[-1])
    assert faults["off"] > 10_000, faults  # the case really faults without it (30,000-132,000 in 3 forwards here)
    assert faults["on"] < faults["off"] / 8, faults  # 1-2 here after 5 warm-up forwards
