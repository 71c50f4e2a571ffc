"""MTCNN's pretrained weights, as the ``facenet-pytorch`` wheel ships them (``facenet_pytorch/data/{pnet,rnet,onet}.pt``,
MIT licence), read without importing the package.

Each file is a plain ``OrderedDict`` of float32 tensors (``conv1.weight`` ... ``dense6_3.bias``), loaded with
``torch.load(weights_only=True)`` into :mod:`archs.mtcnn`'s networks strictly: a file with other keys, other shapes or
non-finite values is refused with a message naming it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from archs.mtcnn import MTCNNNets, ONet, PNet, RNet
from weights.pretrained import read_layout_weights
from weights.registry_packages import package_file

#: The registry package and version whose wheel holds the weights (checked against the wheel's RECORD hashes).
PACKAGE, VERSION = "facenet-pytorch", "2.6.0"
#: network name -> (member of the wheel, class)
NETS = {
    "pnet": ("facenet_pytorch/data/pnet.pt", PNet),
    "rnet": ("facenet_pytorch/data/rnet.pt", RNet),
    "onet": ("facenet_pytorch/data/onet.pt", ONet),
}
_LAYOUT = "facenet-pytorch MTCNN"


def load_net(name: str, path: str | os.PathLike):
    """One of the three networks (``name`` in :data:`NETS`) from a state-dict file, in eval mode without gradients."""
    if name not in NETS:
        raise ValueError(f"MTCNN network must be one of {sorted(NETS)}, got {name!r}")
    file = Path(path).expanduser()
    what = f"MTCNN {name} weights file"
    if not file.is_file():
        raise FileNotFoundError(f"{what} {str(file)!r} does not exist")
    net = read_layout_weights(file, what, NETS[name][1], _LAYOUT)
    bad = [k for k, v in net.state_dict().items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{what} {str(file)!r} holds non-finite values in {bad[:4]}")
    return net


def mtcnn_files(download: bool = True) -> dict[str, Path]:
    """The three weight files of :data:`PACKAGE` ``==`` :data:`VERSION` (installed, cached, or fetched without deps)."""
    return {name: package_file(PACKAGE, VERSION, member, download=download) for name, (member, _) in NETS.items()}


def load_mtcnn(paths: dict | None = None, download: bool = True) -> MTCNNNets:
    """P-, R- and O-Net loaded from ``paths`` (``{"pnet": ..., "rnet": ..., "onet": ...}``), by default the files
    shipped in the facenet-pytorch wheel (:func:`mtcnn_files`)."""
    paths = dict(paths) if paths is not None else mtcnn_files(download)
    missing = sorted(set(NETS) - set(paths))
    if missing:
        raise ValueError(f"MTCNN weights: no file given for {missing}")
    return MTCNNNets(*(load_net(name, paths[name]) for name in ("pnet", "rnet", "onet"))).eval()


@functools.lru_cache(maxsize=1)
def default_mtcnn() -> MTCNNNets:
    """:func:`load_mtcnn` of the shipped weights, loaded once per process (CPU; about 2 MB)."""
    return load_mtcnn()
