"""The recipes' fast path (``model.speed`` in the model configs): memory layout, torch.compile, fused Adam.

None of these switches changes what is computed (same losses, same updates up to float rounding) or what is
saved: ``nn.Module.compile()`` compiles a module in place, so state-dict keys keep their names (a
``torch.compile(net)`` wrapper would add ``_orig_mod.`` to every key and break checkpoints, interpolation and
export), and channels_last changes strides only.  ``benchmarks/device_check.py`` measures each switch.

``channels_last`` and ``compile`` take ``true``, ``false`` or ``auto`` (on when the run trains on a CUDA device).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

DEFAULTS = {
    # NHWC activations: the tensor-core layout of cuDNN's bf16 convs (and oneDNN's native one on CPU).
    "channels_last": "auto",
    # torch.compile of the networks that are trained (static shapes: training crops have one size).
    "compile": False,
    "compile_mode": None,  # torch.compile mode: null (default), reduce-overhead, max-autotune...
    "compile_backend": "inductor",
    # Adam's fused kernel (one kernel for all parameters; CUDA and, in torch >= 2.4, CPU): on this CPU 27 ms
    # against 82 ms (for-loop) per step of the 16.7M-parameter RRDBNet, one thread.
    "fused_adam": True,
}


def speed_options(cfg: Mapping | None) -> dict:
    """``cfg`` merged over :data:`DEFAULTS`, with a clear error for an unknown key or value."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"model.speed: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    for key in ("channels_last", "compile"):
        if out[key] not in (True, False, "auto"):
            raise ValueError(f"model.speed.{key} must be true, false or auto, got {out[key]!r}")
    return out


def enabled(value, device: torch.device | str | None) -> bool:
    """An ``auto`` switch is on for CUDA devices."""
    if value == "auto":
        return device is not None and torch.device(device).type == "cuda"
    return bool(value)


def adam(params: Iterable, fused: bool, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused kernel when asked for and every parameter supports it."""
    params = list(params)
    if fused and params and all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params):
        return torch.optim.Adam(params, fused=True, **kwargs)
    return torch.optim.Adam(params, **kwargs)


def to_channels_last(*nets: nn.Module) -> None:
    for net in nets:
        net.to(memory_format=torch.channels_last)


def compile_regions(net: nn.Module) -> list[nn.Module]:
    """What to compile in ``net``: its ``compile_regions()`` (repeated blocks: compiled once, reused for every
    copy, which keeps the cold start short) or the whole network."""
    regions = getattr(net, "compile_regions", None)
    return list(regions()) if callable(regions) else [net]


def compile_networks(nets: Iterable[nn.Module], mode: str | None = None, backend: str = "inductor") -> None:
    """Compile in place (``nn.Module.compile``): keys and parameters unchanged.  ``dynamic=False``: one graph per
    input shape, the training crop; validation uses the EMA/eval networks, which are not compiled."""
    for net in nets:
        for region in compile_regions(net):
            region.compile(mode=mode, backend=backend, dynamic=False)


def is_compiled(net: nn.Module) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in net.modules())
