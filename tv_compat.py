"""Make ``import torchvision`` work with the CPU build of torch.

The torchvision wheel on the package registry is built against CUDA torch.  With the CPU
torch its C extension (``torchvision/_C.so``) fails to load, and torchvision's fake-tensor
registrations then die with ``operator torchvision::nms does not exist``; torchmetrics and
pytorch_lightning import torchvision, so they die too.  Defining the two missing operator
*schemas* lets the pure-Python parts (models, transforms, utils) import.  The ops stay
unimplemented: calling ``torchvision.ops.nms`` still raises, which this project never does.

Every entry point (train.py, evaluate.py, benchmarks, tests/conftest.py) imports this module
before anything that imports torchvision.  Where the extension loads normally (a matching
torchvision build, e.g. on a CUDA machine) this module does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIB = None  # keeps the torch.library.Library alive (it unregisters on garbage collection)


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision: nothing to fix
    for name in os.listdir(os.path.dirname(spec.origin)):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), name))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def apply() -> bool:
    """Register the missing schemas if needed.  Returns True when it had to."""
    global _LIB
    if _LIB is not None or "torchvision" in sys.modules or _extension_loads():
        return False
    _LIB = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _LIB.define(schema)
    return True


apply()
