"""Published ESRGAN key layouts (BasicSR, xinntao/ESRGAN, the 2018 sequential one), conversion between them, and
reading a generator's architecture off its tensors (RRDBNet, SC-FEGAN)."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

_KIND_ALIASES = {"esrgan": "esrgan", "rrdbnet": "esrgan", "scfegan": "scfegan", "sc-fegan": "scfegan"}

#: BasicSR (this project's names), xinntao/ESRGAN ``RRDBNet_arch.py``, the 2018 ``architecture.py`` ``RRDB_Net``.
ESRGAN_LAYOUTS = ("basicsr", "xinntao", "sequential")
_LAYOUT_EXAMPLES = {
    "basicsr": "conv_first.weight, body.0.rdb1.conv1.weight, conv_body.weight, conv_up1.weight, conv_up2.weight, "
    "conv_hr.weight, conv_last.weight (bare, or inside 'params' / 'params_ema')",
    "xinntao": "conv_first.weight, RRDB_trunk.0.RDB1.conv1.weight, trunk_conv.weight, upconv1.weight, "
    "upconv2.weight, HRconv.weight, conv_last.weight",
    "sequential": "model.0.weight, model.1.sub.0.RDB1.conv1.0.weight, model.1.sub.23.weight (trunk conv after "
    "the last block), model.3.weight, model.6.weight, model.8.weight, model.10.weight",
}
_SCFEGAN_EXAMPLE = (
    "gconv1_ds.conv.weight, gconv1_ds.gate.weight, ..., co_conv4_dlt.conv.weight, "
    "deconv1.deconv.weight, gconv8.conv.weight, ..., deconv7.deconv.weight, gconv14.gate.bias"
)

# BasicSR name <-> xinntao name (whole dotted prefixes; the RDB indices keep their digits).
_XINNTAO_FIXED = {
    "conv_first": "conv_first",
    "conv_body": "trunk_conv",
    "conv_up1": "upconv1",
    "conv_up2": "upconv2",
    "conv_hr": "HRconv",
    "conv_last": "conv_last",
}
_SEQ_FIXED = {
    "conv_first": "model.0",
    "conv_up1": "model.3",
    "conv_up2": "model.6",
    "conv_hr": "model.8",
    "conv_last": "model.10",
}
_RE_BASICSR_BODY = re.compile(r"^body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_RE_XINNTAO_BODY = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_RE_SEQ_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_RE_SEQ_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Drop the ``module.`` prefixes that (Distributed)DataParallel adds (repeated ones too)."""
    out = OrderedDict()
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def esrgan_layout(state: Mapping[str, Any]) -> str | None:
    """Which of :data:`ESRGAN_LAYOUTS` the keys of ``state`` use, or None when none of them."""
    keys = set(state)
    if "model.0.weight" in keys and any(_RE_SEQ_BODY.match(k) for k in keys):
        return "sequential"
    if "conv_first.weight" in keys and any(_RE_XINNTAO_BODY.match(k) for k in keys):
        return "xinntao"
    if "conv_first.weight" in keys and any(_RE_BASICSR_BODY.match(k) for k in keys):
        return "basicsr"
    return None


def _split(key: str) -> tuple[str, str]:
    base, _, leaf = key.rpartition(".")
    return base, leaf


def esrgan_to_basicsr(state: Mapping[str, torch.Tensor], layout: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """Rename an ESRGAN generator state dict of any published layout to BasicSR's (this project's) names.

    A pure rename (same topology; xinntao/ESRGAN ``transer_RRDB_models.py``); ``module.`` prefixes are dropped.
    Raises ``ValueError`` naming the expected and the found keys when the layout is none of the three, and
    naming the keys it cannot place when the layout is recognised but holds extra entries.
    """
    state = strip_module_prefix(state)
    layout = layout or esrgan_layout(state)
    if layout is None:
        raise ValueError(_not_esrgan_message(state))
    if layout not in ESRGAN_LAYOUTS:
        raise ValueError(f"unknown ESRGAN layout {layout!r}; known: {ESRGAN_LAYOUTS}")
    if layout == "basicsr":
        return OrderedDict(state)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unplaced = []
    if layout == "xinntao":
        inverse = {v: k for k, v in _XINNTAO_FIXED.items()}
        for key, value in state.items():
            m = _RE_XINNTAO_BODY.match(key)
            base, leaf = _split(key)
            if m:
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            elif base in inverse:
                out[f"{inverse[base]}.{leaf}"] = value
            else:
                unplaced.append(key)
    else:  # sequential
        inverse = {v: k for k, v in _SEQ_FIXED.items()}
        blocks = {int(m[1]) for m in map(_RE_SEQ_BODY.match, state) if m}
        trunk_index = max(blocks) + 1 if blocks else None
        for key, value in state.items():
            m = _RE_SEQ_BODY.match(key)
            t = _RE_SEQ_TRUNK.match(key)
            base, leaf = _split(key)
            if m:
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            elif t and int(t[1]) == trunk_index:
                out[f"conv_body.{t[2]}"] = value
            elif base in inverse:
                out[f"{inverse[base]}.{leaf}"] = value
            else:
                unplaced.append(key)
    if unplaced:
        raise ValueError(
            f"ESRGAN weights in the {layout!r} layout hold keys that have no place in RRDBNet: "
            f"{_few(sorted(unplaced))} (expected only: {_LAYOUT_EXAMPLES[layout]})"
        )
    return out


def basicsr_to_esrgan_layout(state: Mapping[str, torch.Tensor], layout: str) -> OrderedDict[str, torch.Tensor]:
    """The inverse of :func:`esrgan_to_basicsr`: BasicSR names -> ``layout`` (to write files the published
    tools read, and to test the readers).  The sequential layout exists for x4 networks only."""
    if layout not in ESRGAN_LAYOUTS:
        raise ValueError(f"unknown ESRGAN layout {layout!r}; known: {ESRGAN_LAYOUTS}")
    if layout == "basicsr":
        return OrderedDict(state)
    num_block = len({int(m[1]) for m in map(_RE_BASICSR_BODY.match, state) if m})
    out = OrderedDict()
    for key, value in state.items():
        m = _RE_BASICSR_BODY.match(key)
        base, leaf = _split(key)
        if layout == "xinntao":
            out[f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{m[4]}" if m else f"{_XINNTAO_FIXED[base]}.{leaf}"] = value
        elif m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = value
        elif base == "conv_body":
            out[f"model.1.sub.{num_block}.{leaf}"] = value
        else:
            out[f"{_SEQ_FIXED[base]}.{leaf}"] = value
    return out


def rrdbnet_config(state: Mapping[str, torch.Tensor]) -> dict:
    """RRDBNet arguments read off a BasicSR-layout state dict's tensor shapes.

    ``scale`` follows from ``conv_first``'s input channels: ``num_out_ch`` (x4), 4x that (x2,
    pixel-unshuffle 2) or 16x (x1, unshuffle 4), as in BasicSR / Real-ESRGAN; any other count is read as
    ``num_in_ch`` of an x4 network.
    """
    need = ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"cannot infer the RRDBNet size: missing {missing}")
    flat = [k for k in need if getattr(state[k], "ndim", 0) != 4]
    if flat:
        raise ValueError(
            f"cannot infer the RRDBNet size: {flat[0]} has shape {tuple(state[flat[0]].shape)}, not "
            "[out, in, kh, kw] (a damaged or foreign file)"
        )
    num_feat, first_in = state["conv_first.weight"].shape[:2]
    num_out_ch = state["conv_last.weight"].shape[0]
    num_block = len({int(m[1]) for m in map(_RE_BASICSR_BODY.match, state) if m})
    num_grow_ch = state["body.0.rdb1.conv1.weight"].shape[0]
    ratio = first_in // num_out_ch if first_in % num_out_ch == 0 else 0
    if ratio in (1, 4, 16):
        scale, num_in_ch = {1: 4, 4: 2, 16: 1}[ratio], num_out_ch
    else:
        scale, num_in_ch = 4, first_in
    return {
        "_target_": "archs.rrdbnet.RRDBNet",
        "num_in_ch": int(num_in_ch),
        "num_out_ch": int(num_out_ch),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": int(num_block),
        "num_grow_ch": int(num_grow_ch),
    }


def scfegan_config(state: Mapping[str, torch.Tensor], padding_mode: str = "tf_same") -> dict:
    """SCFEGANGenerator arguments read off the tensors (``padding_mode`` cannot be: it is not a weight)."""
    w = state["gconv1_ds.conv.weight"]
    for key in ("gconv1_ds.conv.weight", "gconv14.conv.weight"):
        if getattr(state[key], "ndim", 0) != 4:
            raise ValueError(
                f"cannot infer the SC-FEGAN size: {key} has shape {tuple(state[key].shape)}, not "
                "[out, in, kh, kw] (a damaged or foreign file)"
            )
    return {
        "_target_": "archs.scfegan_generator.SCFEGANGenerator",
        "in_channels": int(w.shape[1]),
        "out_channels": int(state["gconv14.conv.weight"].shape[0]),
        "cnum": int(w.shape[0]),
        "self_gated_deconv": "deconv1.gate.weight" not in state,
        "padding_mode": padding_mode,
    }


def _few(keys: list, n: int = 8) -> str:
    return f"{keys[:n]}{f' ... ({len(keys)} in all)' if len(keys) > n else ''}"


def _not_esrgan_message(state: Mapping[str, Any], source: str = "weights") -> str:
    expected = "; ".join(f"{name}: {ex}" for name, ex in _LAYOUT_EXAMPLES.items())
    return (
        f"{source} are not an ESRGAN generator in any known layout. Expected keys like - {expected}. "
        f"Found {len(state)} keys: {_few(sorted(map(str, state)))}"
    )


def generator_kind(state: Mapping[str, Any]) -> str | None:
    """``"esrgan"`` (any published layout), ``"scfegan"``, or None."""
    state = strip_module_prefix(state)
    if "gconv1_ds.conv.weight" in state and "gconv14.conv.weight" in state:
        return "scfegan"
    if esrgan_layout(state) is not None:
        return "esrgan"
    from weights.detect import is_compact  # Real-ESRGAN's compact SRVGGNet: an SR generator too

    if is_compact(state):
        return "esrgan"
    return None
