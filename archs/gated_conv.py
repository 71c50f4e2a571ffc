"""Gated convolution building blocks of SC-FEGAN (official ``ops.py``: ``gate_conv``,
``gate_deconv``), TF-exact 'SAME' padding, and the TF-equivalent LRN.

Padding (``padding_mode``):

* ``"tf_same"`` (default): bit-for-bit TensorFlow 'SAME'.  TF pads
  ``total = max((ceil(in/s) - 1)*s + (k-1)*d + 1 - in, 0)`` with ``before = total//2`` and the
  extra pixel *after* (bottom/right).  At stride 2 this is asymmetric (k7: 2/3, k5: 1/2,
  k3: 0/1 on even inputs), so it is applied with an explicit ``F.pad``; at stride 1 it is
  symmetric and goes into the conv's own ``padding``.  A k5 s2 'SAME' transposed conv is the
  adjoint of that padded conv: ``ConvTranspose2d(padding=1)`` and then the last row and column
  dropped.  Needed to import the official TF checkpoint; it costs one pad per stride-2 layer.
* ``"symmetric"``: the usual PyTorch ``padding=d*(k-1)//2`` (``ConvTranspose2d(padding=2,
  output_padding=1)``).  Same output sizes, but shifted by one pixel against TF at stride 2:
  fine for training from scratch, wrong for the official weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ops.fast_conv import (
    band_matrix,
    conv2d_packed,
    dilated_conv2d,
    fast_inference,
    lrn_band,
    pack_conv_weight,
    packed_conv2d,
    packed_conv_transpose2d,
    prepack_applies,
    tensor_version,
)

PADDING_MODES = ("tf_same", "symmetric")


def _check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def tf_same_pads(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' for one spatial dimension of length ``size``."""
    k_eff = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


class TFLocalResponseNorm(nn.Module):
    """The official ``tf.nn.lrn(x, bias=5e-5)``, computed as TF's CPU kernel does (a band-matrix product).

    TF defaults: depth_radius 5, alpha 1, beta 0.5, i.e.
    ``x_c / sqrt(5e-5 + sum_{c'=c-5}^{c+5} x_{c'}^2)`` with zeros beyond the first/last channel.
    Equal to ``nn.LocalResponseNorm(size=11, alpha=11, beta=0.5, k=5e-5)`` (PyTorch divides alpha by
    n = 2*5+1, tf.nn.lrn radius 5), which sums the window with ``avg_pool3d`` on a padded copy: ~10 % of the
    generator's CPU forward, against ~3 % for the band product (ops/fast_conv.py).  No parameters or buffers
    (state dicts, traced and exported files as with ``nn.LocalResponseNorm``): the band matrix is cached per
    channel count, dtype and device.
    """

    def __init__(self, depth_radius: int = 5, bias: float = 5e-5, alpha: float = 1.0, beta: float = 0.5) -> None:
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta
        self._bands: dict = {}

    def band(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return band_matrix(x.shape[1], self.depth_radius, x.dtype, x.device)  # part of the graph
        key = (x.shape[1], x.dtype, x.device)
        band = self._bands.get(key)
        if band is None:
            band = self._bands[key] = band_matrix(x.shape[1], self.depth_radius, x.dtype, x.device)
        return band

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrn_band(x, self.band(x), self.bias, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


def tf_lrn() -> TFLocalResponseNorm:
    """The official ``tf.nn.lrn(x, bias=5e-5)``."""
    return TFLocalResponseNorm()


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with 'SAME' output size (``ceil(in/stride)``) under ``same_padding``.

    ``same_padding`` is named so to stay clear of ``nn.Conv2d.padding_mode`` (zeros/reflect).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        same_padding: str = "tf_same",
    ) -> None:
        _check_padding_mode(same_padding)
        total = dilation * (kernel_size - 1)
        # Static (built-in, symmetric) padding wherever it is exact; dynamic F.pad otherwise.
        if same_padding == "symmetric":
            static, dynamic = total // 2, False
        elif stride == 1 and total % 2 == 0:
            # TF 'SAME' at stride 1 is symmetric and independent of the input size.
            static, dynamic = total // 2, False
        else:
            static, dynamic = 0, True
        super().__init__(in_channels, out_channels, kernel_size, stride, static, dilation, bias=bias)
        self.same_padding = same_padding
        self._dynamic = dynamic

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the TF 'SAME' explicit padding (identity when the padding is built in)."""
        if not self._dynamic:
            return x
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))

    def conv_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution alone, on an input already passed through :meth:`pad`."""
        if self.dilation != (1, 1) and self.stride == (1, 1) and not torch.jit.is_tracing():
            # Dilated: taps that only see padding dropped and, on CPU, space-to-batch instead of PyTorch's
            # slow_conv_dilated2d (ops/fast_conv.py; the same numbers).  Traced/exported graphs keep the plain
            # conv: the pruning depends on the input size.
            ph, pw = self.padding
            return dilated_conv2d(
                x, self.weight, self.bias, (pw, pw, ph, ph), self.dilation, space_to_batch=x.device.type == "cpu"
            )
        return self._conv_forward(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_padded(self.pad(x))


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` whose output is exactly ``stride * in`` ('SAME' transposed conv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        stride: int = 2,
        bias: bool = True,
        same_padding: str = "tf_same",
    ) -> None:
        _check_padding_mode(same_padding)
        if same_padding == "tf_same":
            # Adjoint of a 'SAME' conv on an input of stride*in: that conv pads k-s in total,
            # (k-s)//2 before, the rest after; the ConvT crops the same amounts.
            total = max(kernel_size - stride, 0)
            before = total // 2
            padding, output_padding = before, 0
            crop_end = total - 2 * before  # extra crop at the bottom/right (k5 s2: 1)
        else:
            padding = (kernel_size - 1) // 2
            output_padding = stride - kernel_size + 2 * padding
            if not 0 <= output_padding < stride:
                raise ValueError(f"symmetric padding cannot give a x{stride} output for kernel {kernel_size}")
            crop_end = 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, output_padding=output_padding, bias=bias
        )
        self.same_padding = same_padding
        self._crop_end = crop_end

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )
        return self._crop(y)

    def forward_packed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the weight packed once for oneDNN (CPU inference; ops/fast_conv.py), the same
        numbers."""
        return self._crop(
            packed_conv_transpose2d(
                self, "weight", x, self.weight, self.bias, self.stride, self.padding, self.output_padding
            )
        )

    def _crop(self, y: torch.Tensor) -> torch.Tensor:
        if self._crop_end:
            y = y[..., : y.shape[-2] - self._crop_end, : y.shape[-1] - self._crop_end]
        return y


class GatedConv2d(nn.Module):
    """Official ``gate_conv``: ``act(LRN(conv(x))) * sigmoid(conv_g(x))``.

    Two separate convs with the same k/s/dilation (TF scopes ``<name>`` -> ``conv`` and
    ``<name>_g`` -> ``gate``), unlike DeepFill v2's single conv split in halves.  LRN is on the
    feature branch only (never on the gate).  ``activation=None`` gives the output layer
    (gconv14): ``conv(x) * sigmoid(conv_g(x))``.  Init follows TF ``tf.layers.conv2d``:
    Glorot-uniform weights, zero biases.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        use_lrn: bool = True,
        activation: str | None = "lrelu",
        negative_slope: float = 0.2,
        padding_mode: str = "tf_same",
    ) -> None:
        super().__init__()
        if activation not in ("lrelu", None):
            raise ValueError(f"activation must be 'lrelu' or None, got {activation!r}")
        self.conv = Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation, same_padding=padding_mode)
        self.gate = Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation, same_padding=padding_mode)
        self.lrn = tf_lrn() if use_lrn else None
        self.activation = activation
        self.negative_slope = negative_slope
        for conv in (self.conv, self.gate):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _params(self) -> tuple[torch.Tensor, ...]:
        return (self.conv.weight, self.gate.weight, self.conv.bias, self.gate.bias)

    def _params_key(self) -> tuple:
        """What the fused caches follow: a parameter's ``_version`` counts in-place writes (``load_state_dict``
        included), its data pointer a new tensor."""
        return tuple(tensor_version(p) for p in self._params())

    def fused_params(
        self, memory_format: torch.memory_format = torch.contiguous_format
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``conv`` and ``gate`` as one conv with ``2 * out_channels`` outputs (features first), for inference.

        Derived from the two convs' parameters (the saved layout is unchanged) and cached until either changes
        (a parameter's ``_version`` counts in-place writes, ``load_state_dict`` included).
        """
        params = self._params()
        key = self._params_key() + (memory_format,)
        cached = self.__dict__.get("_fused")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = torch.cat(params[:2]).contiguous(memory_format=memory_format)
                bias = torch.cat(params[2:])
            cached = self.__dict__["_fused"] = (key, weight, bias)
        return cached[1], cached[2]

    def packed_fused_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fused_params` with the weight packed for oneDNN once (ops/fast_conv.py: the per-call reorder of a
        plain weight cost more than the arithmetic in the 8x8-32x32 layers), cached like it; the plain fused copy is
        dropped once packed, so the cache holds one copy of the weights, as before."""
        key = self._params_key() + (x.shape[1],)
        cached = self.__dict__.get("_fused_packed")
        if cached is None or cached[0] != key:
            weight, bias = self.fused_params()
            self.__dict__.pop("_fused", None)
            packed = pack_conv_weight(x, weight, self.conv.stride, self.conv.padding)
            cached = self.__dict__["_fused_packed"] = (key, packed, bias)
        return cached[1], cached[2]

    def __getstate__(self):  # the fused caches are derived: never pickled or deep-copied
        state = self.__dict__.copy()
        state.pop("_fused", None)
        state.pop("_fused_packed", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_inference(x, self):
            return self._forward_fused(x)
        xp = self.conv.pad(x)  # both branches see the same padded input: pad once
        feat = self.conv.conv_padded(xp)
        if self.lrn is not None:
            feat = self.lrn(feat)
        if self.activation == "lrelu":
            feat = F.leaky_relu(feat, self.negative_slope)
        return feat * torch.sigmoid(self.gate.conv_padded(xp))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with one conv of doubled width (one pass over the input, one oneDNN call instead of
        two) and in-place activations; the same numbers up to float rounding (tests/test_cpu_inference.py)."""
        c = self.conv
        xp = c.pad(x)
        if c.dilation == (1, 1) and prepack_applies(x):
            weight, bias = self.packed_fused_params(xp)
            y = conv2d_packed(xp, weight, bias, c.stride, c.padding)
        else:
            fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            weight, bias = self.fused_params(fmt)
            if c.dilation != (1, 1):
                # the pruned, space-to-batch conv with its (input-size dependent) weight packed once per size
                ph, pw = c.padding
                key = self._params_key()
                conv = lambda t, w, b, pad: packed_conv2d(self, "dilated", t, w, b, 1, pad, version=key)  # noqa: E731
                y = dilated_conv2d(xp, weight, bias, (pw, pw, ph, ph), c.dilation, conv=conv)
            else:
                y = F.conv2d(xp, weight, bias, c.stride, c.padding)
        n = c.out_channels
        feat, gate = y[:, :n], y[:, n:]
        if self.lrn is not None:
            out = self.lrn(feat)
            if self.activation == "lrelu":
                F.leaky_relu_(out, self.negative_slope)
        elif self.activation == "lrelu":
            out = F.leaky_relu(feat, self.negative_slope)
        else:
            return feat * torch.sigmoid(gate)
        return out.mul_(torch.sigmoid(gate))


class GatedDeconv2d(nn.Module):
    """Official ``gate_deconv``: a 'SAME' transposed conv (k5, s2) that doubles H and W.

    ``self_gated=True`` reproduces the released graph (official ops.py:31-54, issue #37): the gate is
    ``sigmoid`` of the already-activated feature, ``d = LReLU(ConvT(x) + b1); y = d * sigmoid(d)``.
    The official second ConvT and its ``biases2`` are computed and thrown away, so they are
    not created here (``biases2`` in the TF checkpoint is simply skipped on import).
    ``self_gated=False`` is the "fixed" variant: a separate gate ConvT -> sigmoid.
    No LRN (the official deconvs have none).  Init as TF: weights N(0, 0.02), zero biases.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        stride: int = 2,
        self_gated: bool = True,
        negative_slope: float = 0.2,
        padding_mode: str = "tf_same",
    ) -> None:
        super().__init__()
        self.self_gated = self_gated
        self.negative_slope = negative_slope
        self.deconv = ConvTranspose2dSame(in_channels, out_channels, kernel_size, stride, same_padding=padding_mode)
        self.gate = (
            None
            if self_gated
            else ConvTranspose2dSame(in_channels, out_channels, kernel_size, stride, same_padding=padding_mode)
        )
        for conv in (self.deconv, self.gate):
            if conv is not None:
                nn.init.normal_(conv.weight, 0.0, 0.02)
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None and fast_inference(x, self):  # the same ops, in place, the weight packed once
            d = F.leaky_relu_(self.deconv.forward_packed(x), self.negative_slope)
            return d.mul_(torch.sigmoid(d))
        d = F.leaky_relu(self.deconv(x), self.negative_slope)
        gate = torch.sigmoid(d) if self.gate is None else torch.sigmoid(self.gate(x))
        return d * gate
