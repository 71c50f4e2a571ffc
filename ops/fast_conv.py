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
) -> torch.Tensor:
    """``F.conv2d(F.pad(x, padding), weight, bias, dilation=dilation)`` at stride 1, without a dilated kernel.

    ``padding`` is ``(left, right, top, bottom)`` zero padding as ``F.pad`` takes it.  ``space_to_batch=False``
    only drops the dead taps and runs the rest as a dilated conv (GPUs: cuDNN has fast dilated kernels).
    """
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
            return F.conv2d(x, weight, bias, padding=(top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias)
    # 2. space to batch: padded length rounded up to a multiple of d; sub-grid (r, s) = xp[..., r::d, s::d].
    hp, wp = h + top + bottom, w + left + right
    hq, wq = -(-hp // dh) * dh, -(-wp // dw) * dw
    xp = F.pad(x, (left, right + wq - wp, top, bottom + hq - hp))
    n, c = x.shape[:2]
    sub = (
        xp.view(n, c, hq // dh, dh, wq // dw, dw).permute(3, 5, 0, 1, 2, 4).reshape(dh * dw * n, c, hq // dh, wq // dw)
    )
    y = F.conv2d(sub, weight, bias)  # VALID, no dilation
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
