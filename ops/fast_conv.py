"""Two kernels of the SC-FEGAN generator written the way TensorFlow's CPU graph runs them.

* :func:`lrn_band` -- TF's ``tf.nn.lrn``: ``x_c / (bias + alpha * sum_{|c'-c|<=r} x_{c'}^2) ** beta``.  The
  channel-window sum is one matrix product of the squared tensor with a 0/1 band matrix (what TF's CPU
  ``LRNOp`` does, ``GetBandMatrix``), here a 1x1 convolution.  ``nn.LocalResponseNorm`` computes the same sum
  with ``avg_pool3d`` over a padded copy, about 10 % of the generator's CPU forward at 512x512.
* :func:`dilated_conv2d` -- a stride-1 dilated convolution without PyTorch's CPU ``slow_conv_dilated2d``:

  1. taps that only ever see the zero padding are dropped (SC-FEGAN's bottleneck is 4x4 at 512x512 and its
     dilations are 2, 4, 8, 16: from dilation 4 on only the centre tap touches the image, the conv is 1x1);
  2. the remaining taps run as a dense conv on the ``d x d`` sub-grids of the padded input ("space to batch",
     TF's ``tf.nn.atrous_conv2d`` / ``with_space_to_batch``): pad to a multiple of ``d``, reshape the sub-grids
     into the batch, a VALID conv without dilation, reshape back, crop.

  Both are exact rewrites (the same products, summed in another order): outputs agree with ``F.conv2d`` to
  float rounding, gradients too (a dropped tap's gradient is exactly zero in both).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F


def band_matrix(channels: int, radius: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[C, C, 1, 1]`` 1x1-conv weight with ones where ``|c - c'| <= radius``."""
    idx = torch.arange(channels, device=device)
    band = ((idx[:, None] - idx[None, :]).abs() <= radius).to(dtype)
    return band.view(channels, channels, 1, 1)


def lrn_band(x: torch.Tensor, band: torch.Tensor, bias: float, alpha: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """TF LRN (``depth_radius`` encoded in ``band``) of an NCHW tensor; ``band`` from :func:`band_matrix`."""
    s = F.conv2d(x * x, band)
    if alpha != 1.0:
        s = s * alpha
    s = s + bias
    return x * torch.rsqrt(s) if beta == 0.5 else x / s.pow(beta)


def _live_taps(size: int, k: int, d: int, pad_before: int) -> tuple[int, int]:
    """First and last kernel tap (along one dimension) that reads an input pixel for some output pixel.

    Output ``o`` in ``[0, size)`` reads padded position ``o + d*a``, i.e. input ``o + d*a - pad_before``.
    """
    live = [a for a in range(k) if -size < d * a - pad_before < size]
    return (live[0], live[-1]) if live else (k // 2, k // 2)


def dilated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    space_to_batch: bool = True,
    conv=None,
) -> torch.Tensor:
    """``F.conv2d(F.pad(x, padding), weight, bias, dilation=dilation)`` at stride 1, without a dilated kernel.

    ``padding`` is ``(left, right, top, bottom)`` zero padding as ``F.pad`` takes it.  ``space_to_batch=False``
    only drops the dead taps and runs the rest as a dilated conv (GPUs: cuDNN has fast dilated kernels).
    ``conv(x, weight, bias, (pad_h, pad_w))``, if given, runs the undilated convolution instead of ``F.conv2d``.
    """
    if conv is None:
        conv = lambda t, w, b, pad: F.conv2d(t, w, b, padding=pad)  # noqa: E731
    left, right, top, bottom = padding
    dh, dw = dilation
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2:]
    out_h, out_w = h + top + bottom - dh * (kh - 1), w + left + right - dw * (kw - 1)
    # 1. drop the taps that only see zeros: output o reads input o + d*a - pad_before for tap a.
    a0, a1 = _live_taps(h, kh, dh, top)
    b0, b1 = _live_taps(w, kw, dw, left)
    kh2, kw2 = a1 - a0 + 1, b1 - b0 + 1
    top2, left2 = top - dh * a0, left - dw * b0
    bottom2 = out_h - h - top2 + dh * (kh2 - 1)  # keeps the output size
    right2 = out_w - w - left2 + dw * (kw2 - 1)
    if min(top2, bottom2, left2, right2) < 0 or out_h <= 0 or out_w <= 0:  # not a 'SAME'-like padding
        return F.conv2d(F.pad(x, padding), weight, bias, dilation=dilation)
    if (kh2, kw2) != (kh, kw):
        weight = weight[:, :, a0 : a1 + 1, b0 : b1 + 1]
    top, bottom, left, right = top2, bottom2, left2, right2
    dh, dw = (dh if kh2 > 1 else 1), (dw if kw2 > 1 else 1)
    if not space_to_batch and (dh > 1 or dw > 1):
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, dilation=(dh, dw))
    if dh == dw == 1:
        if top == bottom and left == right:
            return conv(x, weight, bias, (top, left))
        return conv(F.pad(x, (left, right, top, bottom)), weight, bias, (0, 0))
    # 2. space to batch: padded length rounded up to a multiple of d; sub-grid (r, s) = xp[..., r::d, s::d].
    hp, wp = h + top + bottom, w + left + right
    hq, wq = -(-hp // dh) * dh, -(-wp // dw) * dw
    xp = F.pad(x, (left, right + wq - wp, top, bottom + hq - hp))
    n, c = x.shape[:2]
    sub = (
        xp.view(n, c, hq // dh, dh, wq // dw, dw).permute(3, 5, 0, 1, 2, 4).reshape(dh * dw * n, c, hq // dh, wq // dw)
    )
    y = conv(sub, weight, bias, (0, 0))  # VALID, no dilation
    co, oh, ow = y.shape[1:]
    y = y.view(dh, dw, n, co, oh, ow).permute(2, 3, 4, 0, 5, 1).reshape(n, co, oh * dh, ow * dw)
    return y[:, :, :out_h, :out_w]


def fast_inference(x: torch.Tensor, module: torch.nn.Module) -> bool:
    """Whether the inference-only CPU path applies: ``module`` in eval mode, no autograd, CPU, not traced, exported or
    compiled.  Eval mode only: a training step's no-grad generator pass (the D step) keeps the plain path, whose
    rounding a resumed run reproduces bit for bit (tests/test_training_faults.py).

    That path (fused gate convs, channels_last activations) computes the same function up to float rounding;
    traced, exported and compiled graphs keep the plain one, which every exporter understands.
    """
    return (
        not module.training
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
    )


# ---------------------------------------------------------------------------------------------------------------
# Weights reordered once (CPU inference)
# ---------------------------------------------------------------------------------------------------------------
# PyTorch's eager CPU convolution reorders its plain OIHW weight into oneDNN's blocked layout on every call: for
# SC-FEGAN's wide layers (up to 75 MB of fused weights at 8x8 pixels) that copy costs more than the arithmetic.
# onnxruntime and TensorFlow pack their weights once, when the graph is built; these helpers do the same through the
# oneDNN ops that torch.compile's freezing pass uses (torch.ops.mkldnn: a packed weight, a conv that reads it).
# The cache hangs off the owning module in a weak dictionary: never saved, pickled or deep-copied.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
PREPACK_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def prepack_applies(x: torch.Tensor) -> bool:
    """Whether the packed-weight ops can run ``x``: oneDNN built in, fp32 on the CPU, no CPU autocast (bf16 runs keep
    ``F.conv2d``, which autocast casts)."""
    return (
        PREPACK_AVAILABLE
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
    )


def _cached(owner: torch.nn.Module, slot: str, key: tuple, pack) -> torch.Tensor:
    """``owner``'s packed weight in ``slot``, packed again when ``key`` (parameter versions, shapes) changes."""
    entries = _PACKED.get(owner)
    if entries is None:
        entries = _PACKED[owner] = {}
    hit = entries.get(slot)
    if hit is None or hit[0] != key:
        hit = entries[slot] = (key, pack())
    return hit[1]


def tensor_version(t: torch.Tensor) -> tuple:
    """What changes when ``t``'s values may have: its data pointer (a new tensor: ``load_state_dict(assign=True)``,
    ``.to()``) and version counter (in-place writes: ``load_state_dict``, optimizers).  Tensors made under
    ``torch.inference_mode`` count no versions: their pointer alone."""
    return (t.data_ptr(), None if t.is_inference() else t._version)


def _version(t: torch.Tensor) -> tuple:
    return (*tensor_version(t), tuple(t.shape), t.stride())


def pack_conv_weight(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation=(1, 1)) -> torch.Tensor:
    """``weight`` in the layout oneDNN's convolution of ``x`` reads (an opaque tensor for :func:`conv2d_packed`).

    Packed for ``x``'s channels; the layout does not depend on its height and width (tests/test_cpu_inference.py
    runs a weight packed at one size on others)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    return torch.ops.mkldnn._reorder_convolution_weight(
        weight.contiguous(), padding, stride, dilation, 1, [1, *x.shape[1:]]
    )


def conv2d_packed(
    x: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    dilation=(1, 1),
    leaky_relu: float | None = None,
) -> torch.Tensor:
    """``F.conv2d`` on a weight from :func:`pack_conv_weight` (the same oneDNN kernels: equal to float rounding);
    ``leaky_relu``: that slope's LReLU applied inside the convolution (no extra pass over the output)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    attr, scalars = ("none", []) if leaky_relu is None else ("leaky_relu", [leaky_relu])
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, dilation, 1, attr, scalars, "")


def packed_conv2d(
    owner: torch.nn.Module,
    slot: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    version: tuple | None = None,
    leaky_relu: float | None = None,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation)`` with ``weight`` packed once and cached on ``owner``
    under ``slot`` until ``weight`` or the input's channel count changes.  ``F.conv2d`` itself where
    :func:`prepack_applies` is false.  ``version``: what identifies ``weight``'s values when it is derived from
    parameters (e.g. their data pointers and versions); by default ``weight``'s own.  ``leaky_relu``: as in
    :func:`conv2d_packed`."""
    if not prepack_applies(x):
        y = F.conv2d(x, weight, bias, stride, padding, dilation)
        return y if leaky_relu is None else F.leaky_relu_(y, leaky_relu)
    ident = _version(weight) if version is None else (version, weight.storage_offset(), tuple(weight.shape))
    key = (ident, x.shape[1], _pair(stride), _pair(padding), _pair(dilation))
    packed = _cached(owner, slot, key, lambda: pack_conv_weight(x, weight, stride, padding, dilation))
    return conv2d_packed(x, packed, bias, stride, padding, dilation, leaky_relu)


def packed_conv_transpose2d(
    owner: torch.nn.Module,
    slot: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride=(1, 1),
    padding=(0, 0),
    output_padding=(0, 0),
) -> torch.Tensor:
    """:func:`packed_conv2d` for ``F.conv_transpose2d`` (no groups, no dilation).  No activation inside the op:
    oneDNN's fused post-op made the transposed convolution 1.5-2.4x slower at 32-64 px (measured here)."""
    stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
    if not prepack_applies(x):
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    key = (_version(weight), x.shape[1], stride, padding, output_padding)

    def pack():
        return torch.ops.mkldnn._reorder_convolution_transpose_weight(
            weight.contiguous(), padding, output_padding, stride, [1, 1], 1, [1, *x.shape[1:]]
        )

    packed = _cached(owner, slot, key, pack)
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x, packed, bias, padding, output_padding, stride, [1, 1], 1, "none", [], ""
    )


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]
