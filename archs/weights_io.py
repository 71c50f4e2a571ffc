"""Reading and writing generator weights files.

Written files use BasicSR's container, ``{"params": state_dict, "params_ema": state_dict}``, so they
load in BasicSR and in xinntao's tools as well as here.  Reading accepts that container, a bare state
dict, and this project's Lightning checkpoints (``.ckpt``; the EMA generator is taken).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn


def save_generator_weights(path: str | os.PathLike, net: nn.Module, net_ema: nn.Module | None = None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"params": _cpu(net.state_dict())}
    state["params_ema"] = _cpu((net_ema if net_ema is not None else net).state_dict())
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written weights file behind


def load_generator_state(path: str | os.PathLike, prefer: str = "params_ema") -> "OrderedDict[str, torch.Tensor]":
    """State dict of a generator from ``path`` (see module docstring for the accepted layouts)."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"generator weights file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read generator weights {path!r}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj:  # Lightning checkpoint of this project
        sd = obj["state_dict"]
        for prefix in ("net_g_ema.", "net_g."):
            sub = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
            if sub:
                return sub
        raise ValueError(f"checkpoint {path!r} has no 'net_g_ema.*' or 'net_g.*' keys; found {sorted(sd)[:5]}")
    for key in (prefer, "params_ema", "params"):
        if key in obj and isinstance(obj[key], dict):
            return OrderedDict(obj[key])
    return OrderedDict(obj)


def load_into(net: nn.Module, state: dict, source: str = "weights") -> None:
    """``load_state_dict(strict=True)`` with an error that lists what differs."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        raise ValueError(
            f"{source} do not fit {type(net).__name__}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shape[:3]]}"
        )
    net.load_state_dict(state)


def _cpu(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in sd.items())
