"""Export generators to safetensors, TorchScript and ONNX.

    python -m scripts.export --weights PATH --format onnx --out G.onnx          [--kind auto|esrgan|scfegan]
    python -m scripts.export --weights PATH --format torchscript --out G.pt
    python -m scripts.export --weights PATH --format safetensors --out G.safetensors
    python predict.py model=esrgan weights=PATH export=onnx export_path=G.onnx      # the same through Hydra

``--weights`` takes every file :func:`weights.io.build_generator` reads (this project's ``.ckpt`` and
weights files, the published ESRGAN layouts, converted official SC-FEGAN weights).  Every export carries the
architecture and metadata (e.g. ``bgr`` of converted official SC-FEGAN weights), so ``predict.py weights=...``
and ``build_generator`` read the safetensors and TorchScript files back; in ONNX they are model metadata
properties ``generator`` and ``meta`` (JSON).

Graphs (TorchScript and ONNX) take ``input`` [B, C, H, W] float32 and return ``output``:

* **RRDBNet**: [B, 3, H, W] in [0, 1] -> [B, 3, sH, sW] (unclamped, as the network); batch, height and width
  are dynamic (for x2 / x1 networks H and W must be even / multiples of 4).
* **SC-FEGAN**: the 9-channel generator input ``[I*(1-M), sketch, colour, M, noise]`` in the encodings of
  the official demo.py -> G(x) in [-1, 1] (not composited).  Batch, height and width are dynamic, and the graph is
  valid for every size the generator accepts (multiples of 128): the TF-'SAME' pads of the stride-2 layers are
  stored as constants (they are the same for every even size) and the transposed convs crop their last
  row/column with negative-index slices, so the traced graph does not bake in the example size.

ONNX uses the TorchScript-based exporter (``dynamo=False``; opset 17 by default): it exports both networks in
seconds with dynamic axes, where the ``torch.export`` path takes minutes on the SC-FEGAN generator.
"""

import copy
import json
import os
import types
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from archs.gated_conv import Conv2dSame, ConvTranspose2dSame, tf_same_pads
from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SIZE_MULTIPLE, SCFEGANGenerator
from weights.io import TORCHSCRIPT_META, _plain, build_generator, check_output_file, save_generator_file

__all__ = ["FORMATS", "export_ready", "example_input", "export_generator", "export_file"]

FORMATS = ("safetensors", "torchscript", "onnx")
_EXTENSIONS = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}


def _const_pad(self: Conv2dSame, x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, self._export_pads)


def _neg_crop_forward(self: ConvTranspose2dSame, x: torch.Tensor) -> torch.Tensor:
    y = F.conv_transpose2d(
        x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
    )
    c = self._crop_end
    return y[..., :-c, :-c] if c else y


def export_ready(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` whose traced graph is valid for every input size it accepts.

    RRDBNet traces as it is.  In the SC-FEGAN generator the size-dependent Python arithmetic of TF 'SAME'
    padding would be frozen at the example size by tracing; the copy uses constant pads (identical for every
    even input, and every stride-2 layer of the generator sees even inputs) and negative-index crops.
    The numbers it computes are unchanged.
    """
    net = copy.deepcopy(net).eval().cpu()
    for m in net.modules():
        if isinstance(m, Conv2dSame) and m._dynamic:
            even = 2 * SIZE_MULTIPLE  # any even size gives the same pads
            top, bottom = tf_same_pads(even, m.kernel_size[0], m.stride[0], m.dilation[0])
            left, right = tf_same_pads(even, m.kernel_size[1], m.stride[1], m.dilation[1])
            m._export_pads = (left, right, top, bottom)
            m.pad = types.MethodType(_const_pad, m)
        elif isinstance(m, ConvTranspose2dSame):
            m.forward = types.MethodType(_neg_crop_forward, m)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _in_channels(net: nn.Module) -> int:
    if isinstance(net, SCFEGANGenerator):
        return net.in_channels
    if isinstance(net, RRDBNet):
        return net.conv_first.in_channels // ({4: 1, 2: 2, 1: 4}[net.scale] ** 2)
    raise TypeError(f"no export recipe for {type(net).__name__}")


def example_input(net: nn.Module, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """A [1, C, H, W] tracing input (RRDBNet 32x32, SC-FEGAN 128x128 unless given)."""
    default = SIZE_MULTIPLE if isinstance(net, SCFEGANGenerator) else 32
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, _in_channels(net), height or default, width or default, generator=g)
    if isinstance(net, SCFEGANGenerator):
        x = x * 2 - 1
    return x


def export_generator(
    net: nn.Module,
    fmt: str,
    path: str | os.PathLike,
    generator: Mapping | None = None,
    meta: Mapping | None = None,
    example: torch.Tensor | None = None,
    opset: int = 17,
) -> str:
    """Write ``net`` as ``fmt`` (one of :data:`FORMATS`) to ``path``; ``generator`` / ``meta`` are stored with it."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    path = os.path.expanduser(str(path))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    generator = _plain(generator) if generator is not None else None
    meta = _plain(meta) if meta else {}
    if fmt == "safetensors":
        return save_generator_file(path, net, generator, meta)
    ready = export_ready(net)
    x = example if example is not None else example_input(net)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(ready, x, check_trace=False)
        extra = {TORCHSCRIPT_META: json.dumps({"generator": generator, **meta})}
        torch.jit.save(traced, path, _extra_files=extra)
        return path
    import onnx  # pinned in requirements.txt; fail early with the package name

    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ready,
            (x,),
            path,
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            dynamic_axes={"input": axes, "output": {0: "batch", 2: "out_height", 3: "out_width"}},
            dynamo=False,
        )
    model = onnx.load(path)
    props = {"meta": json.dumps(meta)}
    if generator is not None:
        props["generator"] = json.dumps(generator)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)
    return path


def export_file(
    weights: str | os.PathLike,
    fmt: str,
    path: str | os.PathLike | None = None,
    kind: str = "auto",
    prefer: str = "params_ema",
    defaults: Mapping | None = None,
    opset: int = 17,
    height: int | None = None,
    width: int | None = None,
    overwrite: bool = False,
    flag: str = "overwrite=true",
) -> str:
    """Read a generator file and export it; ``path`` defaults to the weights' name with the format's extension.
    The output is never the weights file; an existing one is replaced only with ``overwrite``."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    if path is None:
        path = os.path.splitext(str(weights))[0] + _EXTENSIONS[fmt]
    if os.path.abspath(os.path.expanduser(str(path))) == os.path.abspath(os.path.expanduser(str(weights))):
        raise ValueError(f"export path {path!r} is the weights file itself; choose another export_path")
    check_output_file(path, (weights,), overwrite, "export path", flag)
    net, info = build_generator(weights, kind=kind, prefer=prefer, defaults=defaults)
    return export_generator(net, fmt, path, info.generator, info.meta, example_input(net, height, width), opset)
