"""Which super-resolution network a bare state dict is, read off its keys and tensor shapes (as spandrel does), so the
community's ``.pth`` files of the ESRGAN / Real-ESRGAN families load without flags.

Recognised:

- RRDBNet (``archs/rrdbnet.py``) in all three published key layouts (BasicSR / Real-ESRGAN, xinntao's ESRGAN, the
  2018 sequential ``RRDB_Net``; :func:`weights.layouts.esrgan_layout`), any block count, width and growth, and the
  Real-ESRGAN x2 / x1 variants whose ``conv_first`` takes a pixel-unshuffled input (4x / 16x the channels;
  :func:`weights.layouts.rrdbnet_config`);
- SRVGGNetCompact (``archs/srvgg.py``; Real-ESRGAN's ``realesr-*`` compact models): ``body.0`` conv, PReLU slopes at
  the odd ``body`` indices, the last conv's ``num_out_ch * upscale**2`` outputs giving the scale.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from weights.layouts import esrgan_layout, esrgan_to_basicsr, rrdbnet_config, strip_module_prefix

__all__ = ["compact_config", "is_compact", "sr_layout"]

_RE_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")
COMPACT_EXAMPLE = (
    "body.0.weight, body.0.bias (3x3 conv), body.1.weight (PReLU), body.2.weight, ..., "
    "body.2N+2.weight (the last conv, num_out_ch * upscale**2 outputs)"
)


def is_compact(state: Mapping[str, Any]) -> bool:
    """Keys of an SRVGGNetCompact: only ``body.N.weight`` / ``body.N.bias``, a 4-D ``body.0.weight``."""
    keys = list(state)
    return (
        bool(keys)
        and all(_RE_BODY.match(str(k)) for k in keys)
        and "body.0.weight" in state
        and getattr(state["body.0.weight"], "ndim", 0) == 4
    )


def compact_config(state: Mapping[str, torch.Tensor], source: str = "weights", act_type: str | None = None) -> dict:
    """SRVGGNetCompact arguments read off a state dict (official key names).  ``ValueError`` naming ``source`` and
    the key when the tensors do not form one.  ``act_type``: the activation the file records, needed when it has no
    PReLU slopes (relu / leakyrelu leave no tensors)."""
    indices = sorted({int(_RE_BODY.match(k)[1]) for k in state})
    convs = [i for i in indices if getattr(state.get(f"body.{i}.weight"), "ndim", 0) == 4]
    slopes = [i for i in indices if getattr(state.get(f"body.{i}.weight"), "ndim", 0) == 1]
    if not convs or convs != list(range(0, 2 * len(convs), 2)):
        raise ValueError(
            f"{source}: compact SRVGGNet convs must be body.0, body.2, body.4, ...; found convs at "
            f"body indices {convs[:8]}"
        )
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    num_feat, num_in_ch = int(first.shape[0]), int(first.shape[1])
    if slopes and slopes != list(range(1, convs[-1], 2)):
        raise ValueError(
            f"{source}: PReLU slopes must follow every conv but the last (body.1, body.3, ...); "
            f"found them at {slopes[:8]}"
        )
    if not slopes and act_type not in ("relu", "leakyrelu"):
        raise ValueError(
            f"{source}: a compact SRVGGNet without PReLU weights: its activation (relu or leakyrelu) "
            "is not recorded in the tensors; save it with its architecture (a 'generator' entry)"
        )
    num_out_ch = num_in_ch  # as spandrel: the output has the input's channels
    up = math.isqrt(int(last.shape[0]) // num_out_ch) if last.shape[0] % num_out_ch == 0 else 0
    if up < 1 or up * up * num_out_ch != last.shape[0]:
        raise ValueError(
            f"{source}: the last conv body.{convs[-1]} has {last.shape[0]} outputs, not {num_out_ch} * upscale**2"
        )
    return {
        "_target_": "archs.srvgg.SRVGGNetCompact",
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "num_feat": num_feat,
        "num_conv": len(convs) - 2,
        "upscale": up,
        "act_type": "prelu" if slopes else act_type,
    }


def sr_layout(
    state: Mapping[str, torch.Tensor], source: str = "weights", act_type: str | None = None
) -> tuple[OrderedDict[str, torch.Tensor], str, dict] | None:
    """``(state in this project's key names, layout name, architecture config)`` of an SR generator's state dict, or
    None when it is none of the recognised families.  Layouts: ``basicsr``, ``xinntao``, ``sequential`` (RRDBNet)
    and ``compact`` (SRVGGNetCompact).  ``act_type``: a compact network's recorded activation (see
    :func:`compact_config`)."""
    state = strip_module_prefix(state)
    layout = esrgan_layout(state)
    if layout is not None:
        renamed = esrgan_to_basicsr(state, layout)
        return renamed, layout, rrdbnet_config(renamed)
    if is_compact(state):
        return OrderedDict(state), "compact", compact_config(state, source, act_type)
    return None
