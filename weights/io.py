"""Reading and writing generator weights files.

Written files use BasicSR's container, ``{"params": state_dict, "params_ema": state_dict}``, so they
load in BasicSR and in xinntao's tools as well as here.  Reading accepts that container, a bare state
dict, this project's Lightning checkpoints (``.ckpt``; the EMA generator is taken) and ``.safetensors``.

The second half (:func:`build_generator` and helpers; the key layouts are in :mod:`weights.layouts`) reads every generator file the project meets -
its own checkpoints and exports, and the published ESRGAN generators in their three key layouts
(BasicSR, xinntao/ESRGAN, 2018) - and builds the network with the architecture the file records or its tensors imply.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from archs.registry import GENERATOR_TARGETS, checked_architecture, make_network
from weights.layouts import (
    _KIND_ALIASES,
    _LAYOUT_EXAMPLES,
    _SCFEGAN_EXAMPLE,
    _few,
    _not_esrgan_message,
    esrgan_layout,
    esrgan_to_basicsr,
    generator_kind,
    scfegan_config,
    strip_module_prefix,
)

# The pretrained-file loaders, also importable from here (they were in archs/weights_io.py with the rest).
from weights.pretrained import hub_cached_file as hub_cached_file
from weights.pretrained import load_pretrained as load_pretrained
from weights.pretrained import read_layout_weights as read_layout_weights


def save_generator_weights(
    path: str | os.PathLike,
    net: nn.Module,
    net_ema: nn.Module | None = None,
    generator: Mapping | None = None,
    meta: Mapping | None = None,
) -> None:
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


def load_generator_state(path: str | os.PathLike, prefer: str = "params_ema") -> OrderedDict[str, torch.Tensor]:
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
        for prefix in ("net_g.", "net_g_ema.") if prefer == "params" else ("net_g_ema.", "net_g."):
            sub = OrderedDict((k[len(prefix) :], v) for k, v in sd.items() if k.startswith(prefix))
            if sub:
                return sub
        raise ValueError(f"checkpoint {path!r} has no 'net_g_ema.*' or 'net_g.*' keys; found {sorted(sd)[:5]}")
    for key in (prefer, "params_ema", "params"):
        if key in obj and isinstance(obj[key], dict):
            return _to_project_names(obj[key])
    return _to_project_names(obj)


def _to_project_names(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
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


def _cpu(sd: dict) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in sd.items())


#: Name of the JSON entry (``{"generator": ..., **meta}``) that :mod:`weights.export` stores in TorchScript files.
TORCHSCRIPT_META = "generator_meta.json"


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

    state: OrderedDict[str, torch.Tensor]
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
        raise ImportError(
            "reading .safetensors files needs the 'safetensors' package (pip install safetensors)"
        ) from err
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
            raise ValueError(
                f"safetensors file {path!r}: header metadata {key!r} must be a JSON object, got "
                f"{type(parsed[key]).__name__}"
            )
    return GeneratorFile(strip_module_prefix(state), parsed["generator"], parsed["meta"] or {}, path, "safetensors")


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
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
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_doublelist"),
        ("torch.jit._pickle", "build_boollist"),
        ("torch.jit._pickle", "build_tensorlist"),
        ("torch.jit._pickle", "build_genericlist"),
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


def _script_tensors(obj, prefix: str, out: OrderedDict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64 or not isinstance(getattr(obj, "state", None), Mapping):
        return  # a custom __getstate__ (not a plain module): none of its state is taken
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, _ScriptObject):
            _script_tensors(value, f"{prefix}{key}.", out, depth + 1)


def read_torchscript_tensors(path: str) -> tuple[OrderedDict[str, torch.Tensor], dict]:
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
        raise ValueError(
            f"cannot read TorchScript file {path!r} (its tensors are read without running its code; "
            f"convert it to .safetensors with python -m scripts.export --format safetensors): "
            f"{type(err).__name__}: {err}"
        ) from err
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    _script_tensors(root, "", state)
    try:
        meta = json.loads(meta_raw) if meta_raw else {}
    except ValueError as err:
        raise ValueError(f"{path!r}: {TORCHSCRIPT_META} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r}: {TORCHSCRIPT_META} must hold a JSON object, got {type(meta).__name__}")
    return OrderedDict((k, v.detach().clone()) for k, v in state.items()), meta


def _all_finite(t: torch.Tensor) -> bool:
    # CPU copies (what is written or was read) are checked in numpy: no torch op, so saving at a stage switch adds no
    # host sync to the training step (tests/test_speed.py counts them); bf16 and device tensors go through torch.
    if t.device.type == "cpu" and t.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def check_finite(state: Mapping[str, Any], source: str) -> None:
    """ValueError naming ``source`` and the first tensor holding NaN or Inf (a diverged run's weights give black
    images), or a value that is not a tensor at all."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not _all_finite(value):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"{source!r}: tensor {key!r} holds {bad} non-finite value(s) (NaN/Inf) of {value.numel()}: "
                "these weights come from a diverged run and are refused"
            )


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
        raise ValueError(
            f"{path!r} is an ONNX model: run it with onnxruntime; weights= takes .pth, .ckpt, "
            ".safetensors or TorchScript .pt files"
        )
    if _is_torchscript(path):
        state, meta = read_torchscript_tensors(path)
        return GeneratorFile(strip_module_prefix(state), meta.pop("generator", None), meta, path, "torchscript")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"cannot read generator weights {path!r} (torch.load with weights_only=True): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict or a weights container")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # this project's Lightning checkpoint
        sd = obj["state_dict"]
        generator = (obj.get("hyper_parameters") or {}).get("generator")
        order = ("net_g_ema.", "net_g.") if prefer == "params_ema" else ("net_g.", "net_g_ema.")
        for prefix in order:
            sub = OrderedDict((k[len(prefix) :], v) for k, v in sd.items() if k.startswith(prefix))
            if sub:
                return GeneratorFile(
                    sub, dict(generator) if isinstance(generator, Mapping) else None, checkpoint_meta(obj), path, "ckpt"
                )
        raise ValueError(f"checkpoint {path!r} has no 'net_g_ema.*' or 'net_g.*' keys; found {_few(sorted(sd))}")
    generator = obj.get("generator") if isinstance(obj.get("generator"), dict) else None
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    for key in (prefer, "params_ema", "params"):
        if key in obj and isinstance(obj[key], dict):
            return GeneratorFile(strip_module_prefix(obj[key]), generator, dict(meta), path, key)
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise ValueError(
            f"{path!r} holds no tensors: keys {_few(sorted(map(str, obj)))}; expected a state dict, "
            "a {'params': ..., 'params_ema': ...} container or a Lightning checkpoint"
        )
    return GeneratorFile(strip_module_prefix(tensors), None, {}, path, "bare")


#: Hyper-parameters of this project's checkpoints that travel with the generator as ``meta`` (into
#: ``GeneratorFile.meta`` and from there into every export): the SC-FEGAN input noise the model was trained with
#: the image size it was trained at (predict.py's size=auto) and the sketch detector (with the HED weights' name) its
#: training sketches came from (evaluate.py's sketch_detector=auto).
CHECKPOINT_META_KEYS = ("noise_type", "input_size", "sketch_detector", "sketch_hed_weights")


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


def _check_recorded_sizes(config: Mapping, inferred: Mapping, path: str, skip_nested: bool = False) -> None:
    """The architecture a file records must match its tensors BEFORE the network is built: a record saying
    ``num_feat=300000`` next to 8-channel tensors would otherwise allocate terabytes (or ``num_block=10**7`` hang).
    ``skip_nested``: leave nested values (a ``_target_`` planted in a size) to the allow-list's UnsafeArchitectureError."""
    for key, value in inferred.items():
        if key in ("_target_", "padding_mode", "self_gated_deconv", "act_type") or key not in config:
            continue
        if skip_nested and isinstance(config[key], (Mapping, list, tuple)):
            continue
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] != value:
            raise ValueError(
                f"{path!r}: the recorded generator says {key}={config[key]!r} but the file's tensors "
                f"say {key}={value}: refused before building anything"
            )


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
        if isinstance(info.generator, Mapping):  # recorded vs tensors first: the message names both values
            _check_recorded_sizes(info.generator, inferred, info.path, skip_nested=True)
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


def check_output_file(
    out, inputs=(), overwrite: bool = False, what: str = "output", flag: str = "overwrite=true"
) -> str:
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
            raise ValueError(
                f"{what} {out!r} is the input {src!r}: it would be overwritten. Choose another output "
                f"(refused even with {flag}: inputs are never overwritten)"
            )
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(
            f"{what} {out!r} already exists: nothing was written. Pass {flag} to replace it, or choose another file"
        )
    return out
