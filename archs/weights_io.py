"""Reading and writing generator weights files.

Written files use BasicSR's container, ``{"params": state_dict, "params_ema": state_dict}``, so they
load in BasicSR and in xinntao's tools as well as here.  Reading accepts that container, a bare state
dict, this project's Lightning checkpoints (``.ckpt``; the EMA generator is taken) and ``.safetensors``.

The second half (:func:`build_generator` and helpers) reads every generator file the project meets -
its own checkpoints and exports, and the published ESRGAN generators in their three key layouts
(BasicSR, xinntao/ESRGAN, 2018) - and builds the network with the architecture the file records or its tensors imply.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def save_generator_weights(path: str | os.PathLike, net: nn.Module, net_ema: nn.Module | None = None,
                           generator: Mapping | None = None, meta: Mapping | None = None) -> None:
    """``{params, params_ema}`` (BasicSR layout), plus the architecture ``generator`` and facts ``meta`` (e.g. the
    SC-FEGAN ``noise_type`` it was trained with) when given, as :func:`read_generator_file` reads them back."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"params": _cpu(net.state_dict())}
    state["params_ema"] = _cpu((net_ema if net_ema is not None else net).state_dict())
    for key in ("params", "params_ema"):  # non-finite weights are never saved
        check_finite(state[key], f"{path} ({key}, not written)")
    if generator:
        state["generator"] = _plain(generator)
    if meta:
        state["meta"] = _plain(meta)
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written weights file behind


def load_generator_state(path: str | os.PathLike, prefer: str = "params_ema") -> "OrderedDict[str, torch.Tensor]":
    """State dict of a generator from ``path`` (see module docstring for the accepted layouts)."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"generator weights file {path!r} does not exist")
    if path.endswith(".safetensors"):
        return _read_safetensors(path).state
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read generator weights {path!r}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj:  # Lightning checkpoint of this project
        sd = obj["state_dict"]
        # ``prefer`` picks the EMA (``params_ema``, the default) or the raw generator (``params``).
        for prefix in (("net_g.", "net_g_ema.") if prefer == "params" else ("net_g_ema.", "net_g.")):
            sub = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
            if sub:
                return sub
        raise ValueError(f"checkpoint {path!r} has no 'net_g_ema.*' or 'net_g.*' keys; found {sorted(sd)[:5]}")
    for key in (prefer, "params_ema", "params"):
        if key in obj and isinstance(obj[key], dict):
            return _to_project_names(obj[key])
    return _to_project_names(obj)


def _to_project_names(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Published ESRGAN layouts (2018 sequential, xinntao) renamed to BasicSR's, so that interpolation and
    evaluation take the released files as they are; anything else is returned unchanged."""
    state = strip_module_prefix(state)
    if esrgan_layout(state) in ("sequential", "xinntao"):
        return esrgan_to_basicsr(state)
    return state


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


# =====================================================================================================================
# Published ESRGAN key layouts, generator files of every kind, and building a generator from a file
# (used by predict.py, archs/export.py and archs/scfegan_convert.py).
# =====================================================================================================================

#: Every network this project builds from a config, a checkpoint or an export, by its Hydra ``_target_``:
#: ``(role, recipe)``.  This table is the only way a ``_target_`` turns into a class (see :func:`make_network`):
#: a file naming anything else (``numpy.savetxt``, ``torch.load``, ``os.system``...) is refused before any import,
#: and only the class's own constructor arguments, with primitive values, are passed.  New architectures in
#: ``archs/`` are added here (one line).
ARCHITECTURES = {
    "archs.rrdbnet.RRDBNet": ("generator", "esrgan"),
    "archs.srvgg.SRVGGNetCompact": ("generator", "esrgan"),  # Real-ESRGAN's compact realesr-* network
    "archs.scfegan_generator.SCFEGANGenerator": ("generator", "scfegan"),
    "archs.vgg_discriminator.VGGStyleDiscriminator": ("discriminator", "esrgan"),
    "archs.sn_patch_discriminator.SNPatchDiscriminator": ("discriminator", "scfegan"),
    "archs.unet_discriminator.UNetDiscriminatorSN": ("discriminator", "esrgan"),  # Real-ESRGAN's (c2's branch)
}
#: The generator classes a weights file may name (a subset of :data:`ARCHITECTURES`).
GENERATOR_TARGETS = {t: recipe for t, (role, recipe) in ARCHITECTURES.items() if role == "generator"}


#: Inclusive bounds on the size arguments a file may give these networks: a weights file or checkpoint cannot make the
#: loader build (and allocate) a network far beyond any published one.  Official sizes: RRDBNet 23 x 64 (6 x 64 for
#: the anime model); SRVGGNetCompact 16 or 32 convs x 64.
ARCHITECTURE_BOUNDS = {
    "archs.rrdbnet.RRDBNet": {"num_in_ch": (1, 64), "num_out_ch": (1, 64), "num_feat": (1, 1024),
                              "num_block": (1, 256), "num_grow_ch": (1, 1024)},
    "archs.srvgg.SRVGGNetCompact": {"num_in_ch": (1, 64), "num_out_ch": (1, 64), "num_feat": (1, 1024),
                                    "num_conv": (0, 1024), "upscale": (1, 16)},
}


class UnsafeArchitectureError(ValueError):
    """A config or file names a network outside :data:`ARCHITECTURES`, or arguments it does not take."""


def _is_primitive(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_primitive(v) for v in value)
    return False


def checked_architecture(config: Mapping, source: str = "network config", role: str | None = None) -> tuple[str, dict]:
    """``(target, kwargs)`` of ``config`` after the allow-list checks of :func:`make_network` (nothing imported)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(config, Mapping):
        raise UnsafeArchitectureError(f"{source}: the network config must be a mapping with a _target_, "
                                      f"got {type(config).__name__}")
    cfg = dict(config)
    target = cfg.pop("_target_", None)
    if not isinstance(target, str) or target not in ARCHITECTURES:
        raise UnsafeArchitectureError(
            f"{source} names _target_ {target!r}, which is not one of this project's architectures "
            f"{sorted(ARCHITECTURES)}: refused (a checkpoint or weights file cannot choose what code runs)")
    if role is not None and ARCHITECTURES[target][0] != role:
        raise UnsafeArchitectureError(f"{source} names {target!r}, a {ARCHITECTURES[target][0]}, where a {role} "
                                      "is expected")
    special = sorted(k for k in cfg if not isinstance(k, str) or k.startswith("_"))
    if special:
        raise UnsafeArchitectureError(f"{source}: keys {special} are not allowed in a network config "
                                      "(only _target_ and the constructor's arguments)")
    bad = sorted(k for k, v in cfg.items() if not _is_primitive(v))
    if bad:
        raise UnsafeArchitectureError(
            f"{source}: arguments {bad} of {target} must be numbers, strings, booleans, null or lists of them; "
            f"got {', '.join(f'{k}={type(cfg[k]).__name__}' for k in bad)}")
    for name, (low, high) in ARCHITECTURE_BOUNDS.get(target, {}).items():
        value = cfg.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise UnsafeArchitectureError(f"{source}: {target} argument {name}={value!r} is outside [{low}, {high}]")
    return target, cfg


def make_network(config: Mapping, source: str = "network config", role: str | None = None) -> nn.Module:
    """Build ``{"_target_": one of ARCHITECTURES, **kwargs}``: the one place where train, evaluate, predict and
    export turn a config or a file's record into a network.  Refused (:class:`UnsafeArchitectureError`, naming
    ``source`` and the target): a target outside the table, a ``role`` mismatch, keys the constructor does not
    take, Hydra's special keys (``_args_``, ``_partial_``...), and non-primitive values."""
    import importlib
    import inspect

    target, kwargs = checked_architecture(config, source, role)
    module_name, _, class_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = inspect.signature(cls.__init__).parameters
    known = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise UnsafeArchitectureError(f"{source}: {target} takes no argument(s) {unknown}; it takes {known}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: cannot build {target}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): "
                         f"{err}") from err


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
#: Name of the JSON entry (``{"generator": ..., **meta}``) that :mod:`archs.export` stores in TorchScript files.
TORCHSCRIPT_META = "generator_meta.json"
_SCFEGAN_EXAMPLE = ("gconv1_ds.conv.weight, gconv1_ds.gate.weight, ..., co_conv4_dlt.conv.weight, "
                    "deconv1.deconv.weight, gconv8.conv.weight, ..., deconv7.deconv.weight, gconv14.gate.bias")

# BasicSR name <-> xinntao name (whole dotted prefixes; the RDB indices keep their digits).
_XINNTAO_FIXED = {
    "conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
    "conv_hr": "HRconv", "conv_last": "conv_last",
}
_SEQ_FIXED = {"conv_first": "model.0", "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
              "conv_last": "model.10"}
_RE_BASICSR_BODY = re.compile(r"^body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_RE_XINNTAO_BODY = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")
_RE_SEQ_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_RE_SEQ_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Drop the ``module.`` prefixes that (Distributed)DataParallel adds (repeated ones too)."""
    out = OrderedDict()
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
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


def esrgan_to_basicsr(state: Mapping[str, torch.Tensor], layout: str | None = None) -> "OrderedDict[str, torch.Tensor]":
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
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
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


def basicsr_to_esrgan_layout(state: Mapping[str, torch.Tensor], layout: str) -> "OrderedDict[str, torch.Tensor]":
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
        raise ValueError(f"cannot infer the RRDBNet size: {flat[0]} has shape {tuple(state[flat[0]].shape)}, not "
                         "[out, in, kh, kw] (a damaged or foreign file)")
    num_feat, first_in = state["conv_first.weight"].shape[:2]
    num_out_ch = state["conv_last.weight"].shape[0]
    num_block = len({int(m[1]) for m in map(_RE_BASICSR_BODY.match, state) if m})
    num_grow_ch = state["body.0.rdb1.conv1.weight"].shape[0]
    ratio = first_in // num_out_ch if first_in % num_out_ch == 0 else 0
    if ratio in (1, 4, 16):
        scale, num_in_ch = {1: 4, 4: 2, 16: 1}[ratio], num_out_ch
    else:
        scale, num_in_ch = 4, first_in
    return {"_target_": "archs.rrdbnet.RRDBNet", "num_in_ch": int(num_in_ch), "num_out_ch": int(num_out_ch),
            "scale": scale, "num_feat": int(num_feat), "num_block": int(num_block), "num_grow_ch": int(num_grow_ch)}


def scfegan_config(state: Mapping[str, torch.Tensor], padding_mode: str = "tf_same") -> dict:
    """SCFEGANGenerator arguments read off the tensors (``padding_mode`` cannot be: it is not a weight)."""
    w = state["gconv1_ds.conv.weight"]
    for key in ("gconv1_ds.conv.weight", "gconv14.conv.weight"):
        if getattr(state[key], "ndim", 0) != 4:
            raise ValueError(f"cannot infer the SC-FEGAN size: {key} has shape {tuple(state[key].shape)}, not "
                             "[out, in, kh, kw] (a damaged or foreign file)")
    return {"_target_": "archs.scfegan_generator.SCFEGANGenerator", "in_channels": int(w.shape[1]),
            "out_channels": int(state["gconv14.conv.weight"].shape[0]), "cnum": int(w.shape[0]),
            "self_gated_deconv": "deconv1.gate.weight" not in state, "padding_mode": padding_mode}


def _few(keys: list, n: int = 8) -> str:
    return f"{keys[:n]}{f' ... ({len(keys)} in all)' if len(keys) > n else ''}"


def _not_esrgan_message(state: Mapping[str, Any], source: str = "weights") -> str:
    expected = "; ".join(f"{name}: {ex}" for name, ex in _LAYOUT_EXAMPLES.items())
    return (f"{source} are not an ESRGAN generator in any known layout. Expected keys like - {expected}. "
            f"Found {len(state)} keys: {_few(sorted(map(str, state)))}")


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


@dataclass
class GeneratorFile:
    """What a generator weights file holds.

    Attributes:
        state: the generator's state dict (``module.`` prefixes dropped; ESRGAN keys still in the file's layout).
        generator: the architecture the file records (``{"_target_": ..., **kwargs}``), or None.
        meta: other recorded facts, e.g. ``{"bgr": True}`` for converted official SC-FEGAN weights.
        path: the file.
        container: how it was stored: ``ckpt``, ``params_ema``, ``params``, ``bare``, ``safetensors``,
            ``torchscript``.
    """

    state: "OrderedDict[str, torch.Tensor]"
    generator: dict | None = None
    meta: dict = field(default_factory=dict)
    path: str = ""
    container: str = "bare"


def _is_safetensors(path: str) -> bool:
    if path.endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 31)


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names)


def _read_safetensors(path: str) -> GeneratorFile:
    try:
        from safetensors import safe_open
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise ImportError("reading .safetensors files needs the 'safetensors' package (pip install safetensors)") from err
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta_raw = f.metadata() or {}
            state = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
    except Exception as err:
        raise ValueError(f"cannot read safetensors file {path!r}: {type(err).__name__}: {err}") from err
    parsed = {}
    for key in ("generator", "meta"):
        if not meta_raw.get(key):
            parsed[key] = None
            continue
        try:
            parsed[key] = json.loads(meta_raw[key])
        except ValueError as err:
            raise ValueError(f"safetensors file {path!r}: header metadata {key!r} is not valid JSON: {err}") from err
        if not isinstance(parsed[key], dict):
            raise ValueError(f"safetensors file {path!r}: header metadata {key!r} must be a JSON object, got "
                             f"{type(parsed[key]).__name__}")
    return GeneratorFile(strip_module_prefix(state), parsed["generator"], parsed["meta"] or {}, path, "safetensors")


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stand-in for a TorchScript class instance (``__torch__.*``): keeps the pickled state, runs nothing."""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):  # BUILD calls this instead of the file's own __setstate__
        self.state = state


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's ``data.pkl`` with the few harmless globals it needs; every
    ``__torch__.*`` class becomes a :class:`_ScriptObject` (its TorchScript ``__setstate__`` never runs)."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"), ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_doublelist"), ("torch.jit._pickle", "build_boollist"),
        ("torch.jit._pickle", "build_tensorlist"), ("torch.jit._pickle", "build_genericlist"),
        ("torch.jit._pickle", "restore_type_tag"),
    }

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self.zf, self.prefix, self.path = zf, prefix, path
        self.classes: dict = {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return self.classes.setdefault((module, name), type(name, (_ScriptObject,), {}))
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in self._ALLOWED:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected storage record {pid!r}")
        _, dtype, key, _location, numel = pid
        data = self.zf.read(f"{self.prefix}data/{key}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not isinstance(numel, int) or numel * itemsize != len(data):
            raise pickle.UnpicklingError(f"storage {key!r} holds {len(data)} bytes, not {numel} x {itemsize}")
        untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _script_tensors(obj, prefix: str, out: "OrderedDict[str, torch.Tensor]", depth: int = 0) -> None:
    if depth > 64 or not isinstance(getattr(obj, "state", None), Mapping):
        return  # a custom __getstate__ (not a plain module): none of its state is taken
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, _ScriptObject):
            _script_tensors(value, f"{prefix}{key}.", out, depth + 1)


def read_torchscript_tensors(path: str) -> tuple["OrderedDict[str, torch.Tensor]", dict]:
    """The tensors (by attribute path) of a TorchScript archive and its ``generator_meta.json``, read WITHOUT
    ``torch.jit.load``: that would compile the archive's code and run its ``__setstate__`` methods, which a
    stranger's file can use to write any file.  Only the pickled data and the raw tensor bytes are read."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            data_pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if not data_pkl:
                raise ValueError("no data.pkl in the archive")
            prefix = data_pkl[0][: -len("data.pkl")]
            with zf.open(data_pkl[0]) as f:
                root = _TorchScriptUnpickler(f, zf, prefix, path).load()
            meta_name = f"{prefix}extra/{TORCHSCRIPT_META}"
            meta_raw = zf.read(meta_name).decode("utf-8") if meta_name in names else ""
    except Exception as err:
        raise ValueError(f"cannot read TorchScript file {path!r} (its tensors are read without running its code; "
                         f"convert it to .safetensors with python -m archs.export --format safetensors): "
                         f"{type(err).__name__}: {err}") from err
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    _script_tensors(root, "", state)
    try:
        meta = json.loads(meta_raw) if meta_raw else {}
    except ValueError as err:
        raise ValueError(f"{path!r}: {TORCHSCRIPT_META} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r}: {TORCHSCRIPT_META} must hold a JSON object, got {type(meta).__name__}")
    return OrderedDict((k, v.detach().clone()) for k, v in state.items()), meta


def check_finite(state: Mapping[str, Any], source: str) -> None:
    """ValueError naming ``source`` and the first tensor holding NaN or Inf (a diverged run's weights give black
    images), or a value that is not a tensor at all."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{source!r}: tensor {key!r} holds {bad} non-finite value(s) (NaN/Inf) of {value.numel()}: "
                             "these weights come from a diverged run and are refused")


def read_generator_file(path: str | os.PathLike, prefer: str = "params_ema") -> GeneratorFile:
    """Read any generator file this project knows (see :func:`build_generator`), without building a network.

    Pickled files are read with ``torch.load(weights_only=True)``; TorchScript archives with
    :func:`read_torchscript_tensors` (their tensors only: no TorchScript code is loaded or run).
    """
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        raise ValueError(f"generator weights file {path!r} is a directory, not a weights file")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"generator weights file {path!r} is not a regular file (a device, FIFO or socket)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"generator weights file {path!r} does not exist")
    if _is_safetensors(path):
        return _read_safetensors(path)
    if path.endswith(".onnx"):
        raise ValueError(f"{path!r} is an ONNX model: run it with onnxruntime; weights= takes .pth, .ckpt, "
                         ".safetensors or TorchScript .pt files")
    if _is_torchscript(path):
        state, meta = read_torchscript_tensors(path)
        return GeneratorFile(strip_module_prefix(state), meta.pop("generator", None), meta, path, "torchscript")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read generator weights {path!r} (torch.load with weights_only=True): "
                         f"{type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict or a weights container")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # this project's Lightning checkpoint
        sd = obj["state_dict"]
        generator = (obj.get("hyper_parameters") or {}).get("generator")
        order = ("net_g_ema.", "net_g.") if prefer == "params_ema" else ("net_g.", "net_g_ema.")
        for prefix in order:
            sub = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
            if sub:
                return GeneratorFile(sub, dict(generator) if isinstance(generator, Mapping) else None,
                                     checkpoint_meta(obj), path, "ckpt")
        raise ValueError(f"checkpoint {path!r} has no 'net_g_ema.*' or 'net_g.*' keys; found {_few(sorted(sd))}")
    generator = obj.get("generator") if isinstance(obj.get("generator"), dict) else None
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    for key in (prefer, "params_ema", "params"):
        if key in obj and isinstance(obj[key], dict):
            return GeneratorFile(strip_module_prefix(obj[key]), generator, dict(meta), path, key)
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise ValueError(f"{path!r} holds no tensors: keys {_few(sorted(map(str, obj)))}; expected a state dict, "
                         "a {'params': ..., 'params_ema': ...} container or a Lightning checkpoint")
    return GeneratorFile(strip_module_prefix(tensors), None, {}, path, "bare")


#: Hyper-parameters of this project's checkpoints that travel with the generator as ``meta`` (into
#: ``GeneratorFile.meta`` and from there into every export): the SC-FEGAN input noise the model was trained with
#: and the image size it was trained at (predict.py's size=auto).
CHECKPOINT_META_KEYS = ("noise_type", "input_size")


def checkpoint_meta(ckpt: Mapping) -> dict:
    """The ``meta`` facts a Lightning checkpoint of this project records in its hyper-parameters."""
    hp = ckpt.get("hyper_parameters") or {}
    return {k: hp[k] for k in CHECKPOINT_META_KEYS if isinstance(hp, Mapping) and hp.get(k) is not None}


def _checked_config(generator: Mapping, kind: str, source: str) -> dict:
    target, kwargs = checked_architecture(generator, source, role="generator")
    if GENERATOR_TARGETS[target] != kind:
        raise ValueError(f"{source} holds a {GENERATOR_TARGETS[target]} generator ({target}), not {kind}")
    return {"_target_": target, **kwargs}


def make_generator(config: Mapping, source: str = "generator config") -> nn.Module:
    """Build a generator from ``{"_target_": one of GENERATOR_TARGETS, **kwargs}`` (see :func:`make_network`)."""
    return make_network(config, source, role="generator")


def _check_recorded_sizes(config: Mapping, inferred: Mapping, path: str) -> None:
    """The architecture a file records must match its tensors BEFORE the network is built: a record saying
    ``num_feat=300000`` next to 8-channel tensors would otherwise allocate terabytes (or ``num_block=10**7`` hang)."""
    for key, value in inferred.items():
        if key in ("_target_", "padding_mode", "self_gated_deconv", "act_type") or key not in config:
            continue
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] != value:
            raise ValueError(f"{path!r}: the recorded generator says {key}={config[key]!r} but the file's tensors "
                             f"say {key}={value}: refused before building anything")


def build_generator(
    path: str | os.PathLike,
    kind: str = "auto",
    prefer: str = "params_ema",
    defaults: Mapping | None = None,
) -> tuple[nn.Module, GeneratorFile]:
    """The generator in ``path``, built and loaded, in eval mode on the CPU.

    Accepted files: this project's Lightning ``.ckpt`` (architecture from ``hyper_parameters.generator``, EMA
    weights ``net_g_ema.*`` unless ``prefer="params"``), its weights files (``{params, params_ema}``
    containers, with optional ``generator`` / ``meta`` entries), its exports (``.safetensors`` with metadata,
    TorchScript), bare state dicts, and the published ESRGAN generators in all three layouts
    (:data:`ESRGAN_LAYOUTS`).  ``module.`` prefixes are dropped.

    ``kind``: ``auto``, ``esrgan`` or ``scfegan``.  The architecture is the one the file records; otherwise it
    is read off the tensor shapes (RRDBNet: features, blocks, growth, scale; SC-FEGAN: width, channels, deconv
    gate), with ``defaults`` (a generator config) for what shapes cannot tell (SC-FEGAN ``padding_mode``).
    The returned ``GeneratorFile.state`` holds the state dict as loaded (BasicSR names for ESRGAN).
    """
    info = read_generator_file(path, prefer=prefer)
    check_finite(info.state, info.path)
    found = generator_kind(info.state)
    want = _KIND_ALIASES.get(str(kind).lower(), None) if kind != "auto" else found
    if kind != "auto" and want is None:
        raise ValueError(f"kind must be 'auto', 'esrgan' or 'scfegan', got {kind!r}")
    if want is None:
        raise ValueError(
            f"{info.path!r} is not a generator this project can build. Expected an ESRGAN generator with keys like - "
            + "; ".join(f"{n}: {ex}" for n, ex in _LAYOUT_EXAMPLES.items())
            + f" - or an SC-FEGAN generator with keys like {_SCFEGAN_EXAMPLE}. "
            f"Found {len(info.state)} keys: {_few(sorted(map(str, info.state)))}"
        )
    if want == "esrgan":
        if found != "esrgan":
            raise ValueError(_not_esrgan_message(info.state, source=repr(info.path)))
        from weights.detect import sr_layout  # RRDBNet in its three layouts, or the compact SRVGGNet

        recorded_act = info.generator.get("act_type") if isinstance(info.generator, Mapping) else None
        try:
            state, layout, inferred = sr_layout(info.state, repr(info.path), act_type=recorded_act)
        except ValueError as err:
            raise ValueError(f"{info.path!r}: {err}") from err
        info.meta.setdefault("layout", layout)
        config = _checked_config(info.generator, "esrgan", repr(info.path)) if info.generator else inferred
        _check_recorded_sizes(config, inferred, info.path)
    else:
        if found != "scfegan":
            raise ValueError(
                f"{info.path!r} is not an SC-FEGAN generator: expected keys like {_SCFEGAN_EXAMPLE}; "
                f"found {len(info.state)} keys: {_few(sorted(map(str, info.state)))}"
            )
        state = info.state
        if info.generator:
            config = _checked_config(info.generator, "scfegan", repr(info.path))
            try:
                inferred = scfegan_config(state)
            except ValueError as err:
                raise ValueError(f"{info.path!r}: {err}") from err
            _check_recorded_sizes(config, inferred, info.path)
        else:
            padding = (defaults or {}).get("padding_mode", "tf_same")
            config = scfegan_config(state, padding_mode=padding)
    net = make_generator(config, source=repr(info.path))
    load_into(net, state, source=repr(info.path))
    info.state = state
    info.generator = config
    return net.eval(), info


def _plain(value: Any) -> Any:
    """OmegaConf containers and tuples -> plain JSON-able Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_generator_file(
    path: str | os.PathLike,
    state: Mapping[str, torch.Tensor] | nn.Module,
    generator: Mapping | None = None,
    meta: Mapping | None = None,
) -> str:
    """Write a generator with its architecture and metadata; the format follows the file name.

    ``.safetensors``: the tensors, with ``generator`` and ``meta`` as JSON strings in the header metadata.
    Anything else (``.pth``): BasicSR's ``{"params", "params_ema"}`` container (both the same) plus
    ``"generator"`` and ``"meta"`` entries, readable with ``torch.load(weights_only=True)`` and by BasicSR.
    Written atomically.  Returns the path.
    """
    path = os.path.expanduser(str(path))
    sd = _cpu(state.state_dict() if isinstance(state, nn.Module) else state)
    check_finite(sd, f"{path} (not written)")  # non-finite weights are never saved
    generator = _plain(generator) if generator is not None else None
    meta = _plain(meta) if meta else {}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        header = {"format": "pt", "meta": json.dumps(meta)}
        if generator is not None:
            header["generator"] = json.dumps(generator)
        save_file(OrderedDict((k, v.contiguous()) for k, v in sd.items()), tmp, metadata=header)
    else:
        obj: dict = {"params": sd, "params_ema": sd}
        if generator is not None:
            obj["generator"] = generator
        if meta:
            obj["meta"] = meta
        torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def check_output_file(out, inputs=(), overwrite: bool = False, what: str = "output",
                      flag: str = "overwrite=true") -> str:
    """predict.py's rules for one output file of any command that writes (interpolate, export, convert, evaluate's
    metrics_file, render scripts): never a directory, never one of the ``inputs`` (through links too, refused even
    with ``flag``), and an existing file only with ``flag``.  Checked before anything is read or computed."""
    out = os.path.expanduser(str(out))
    if os.path.isdir(out):
        raise IsADirectoryError(f"{what} {out!r} is a directory: give a file name")
    real = os.path.normcase(os.path.realpath(out))
    for src in inputs:
        if not src:
            continue
        src = os.path.expanduser(str(src))
        same = real == os.path.normcase(os.path.realpath(src))
        if not same and os.path.exists(out) and os.path.exists(src):
            same = os.path.samefile(out, src)  # hard links
        if same:
            raise ValueError(f"{what} {out!r} is the input {src!r}: it would be overwritten. Choose another output "
                             f"(refused even with {flag}: inputs are never overwritten)")
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"{what} {out!r} already exists: nothing was written. Pass {flag} to replace it, "
                              "or choose another file")
    return out


def load_pretrained(path: str | os.PathLike, what: str = "pretrained weights file"):
    """THE loader of every pretrained file this project reads (VGG16/19 and the LPIPS backbone from the torch hub
    cache or a given path, FID's Inception, HED, BiSeNet, DexiNed): ``torch.load(weights_only=True)``, so a
    poisoned file (e.g. in ``$TORCH_HOME/hub/checkpoints``) cannot run code.  ValueError naming the file otherwise."""
    path = os.path.expanduser(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError for payloads, EOF / zip errors for damage
        raise ValueError(f"{what} {path!r} refused: not a plain tensor file readable with torch.load(weights_only="
                         f"True) (a pickle that runs code, or a damaged file): {type(err).__name__}: {err}") from err


def hub_cached_file(weights_enum) -> str:
    """The torch hub cache path of a torchvision weights entry (``VGG19_Weights.IMAGENET1K_V1``), downloaded there
    first when missing; read it with :func:`load_pretrained` (torchvision's own loader unpickles with
    ``weights_only=False``).  Download failures (no network) raise OSError / URLError."""
    url = weights_enum.url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
    return path


def read_layout_weights(file, what: str, make_net, layout: str, rename=None):
    """Load a pretrained helper network (HED, BiSeNet, ...) from ``file``, a torch state dict of one published layout.

    ``what`` names the file in messages ("HED weights file"); ``rename`` maps the file's keys to the net's. Every
    failure is a ValueError naming the file: unreadable, not a state dict, keys of another layout, wrong shapes.
    """
    try:
        state = load_pretrained(file, what)
    except ValueError as err:  # any unreadable file gets the same clear message
        raise ValueError(f"{what} {str(file)!r} is not a readable torch state dict ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{what} {str(file)!r} holds a {type(state).__name__}, not a state dict")
    state = {(rename or (lambda k: k))(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    net = make_net()
    expected = set(net.state_dict())
    missing = [k for k in net.state_dict() if k not in state]  # in layout order
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{what} {str(file)!r} is not in the {layout} layout: missing keys {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}, unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"{what} {str(file)!r}: {err}") from err
    return net.eval().requires_grad_(False)
