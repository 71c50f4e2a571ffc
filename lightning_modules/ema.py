"""Exponential moving average of a network's weights (BasicSR ``base_model.py::model_ema``)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema_p = decay * ema_p + (1 - decay) * p over parameters; buffers are copied.  ``decay`` 0 copies ``net``.

    BasicSR averages parameters only; copying buffers keeps e.g. BN statistics consistent when a
    generator has them (RRDBNet and SC-FEGAN's G have none).
    """
    ema_params = list(ema.parameters())
    params = [p.detach() for p in net.parameters()]
    if decay == 0:  # no averaging (BasicSR ema_decay 0): the "EMA" is the network itself, bit for bit
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
