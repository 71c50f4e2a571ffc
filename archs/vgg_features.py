"""Frozen VGG feature extractor shared by ESRGAN's perceptual loss and SC-FEGAN's
perceptual/style losses (BasicSR ``basicsr/archs/vgg_arch.py`` naming).

Weights come from, in order of preference (``weights=`` argument):

* ``"imagenet"``: torchvision's weight enum (``VGG19_Weights.IMAGENET1K_V1`` /
  ``VGG16_Weights.IMAGENET1K_V1``).  torchvision looks in ``$TORCH_HOME/hub/checkpoints``
  first and downloads only when the file is missing.
* a path to a local ``.pth``: a torchvision VGG state dict (``features.N.weight`` keys;
  ``classifier.*`` keys are ignored) or a bare ``features`` state dict (``N.weight``).
* ``"auto"``: ``"imagenet"`` when the weights can be had, else ``"random"`` with a warning.  Only the
  offline demo uses it; real configs use ``"imagenet"`` or a path so that a missing file is an error.
* ``"random"``: random initialisation.  Only for tests and smoke runs: the losses are then
  meaningless as *perceptual* losses, which is why it warns.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import torch
from torch import nn
from torchvision import models

# Layer names of torchvision's ``vgg*.features`` in order (BasicSR's NAMES).
_VGG16 = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
]  # fmt: skip
_VGG19 = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]  # fmt: skip
LAYER_NAMES = {"vgg16": _VGG16, "vgg19": _VGG19}
_BUILDERS = {"vgg16": ("D", models.VGG16_Weights), "vgg19": ("E", models.VGG19_Weights)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but cannot be had."""


def load_vgg_features_state(arch: str, weights: str) -> OrderedDict[str, torch.Tensor] | None:
    """Return the state dict of ``vgg*.features`` for ``weights`` (None for ``"random"``)."""
    if weights == "auto":
        try:
            return load_vgg_features_state(arch, "imagenet")
        except WeightsNotFoundError as err:
            warnings.warn(f"{err}\nweights='auto': falling back to a RANDOM {arch}.", stacklevel=3)
            return None
    if weights == "random":
        warnings.warn(
            f"{arch}: randomly initialised VGG (weights='random'); perceptual/style losses are "
            "not perceptual with it. Use it for tests and smoke runs only.",
            stacklevel=3,
        )
        return None
    if weights == "imagenet":
        from weights.pretrained import hub_cached_file, load_pretrained

        enum = _BUILDERS[arch][1].IMAGENET1K_V1
        try:
            hub = hub_cached_file(enum)
        except Exception as err:  # URLError, HTTPError, socket errors: no network
            hub = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
            raise WeightsNotFoundError(
                f"{arch}: ImageNet weights are not in the torch hub cache ({hub}) and could not be "
                f"downloaded from {enum.url} ({type(err).__name__}: {err}). Either copy that file "
                f"to {hub}, or set the config key for the VGG weights (e.g. "
                f"model.perceptual.weights=/path/to/{os.path.basename(enum.url)})."
            ) from err
        # not enum.get_state_dict(): torchvision unpickles the cache with weights_only=False (code would run)
        state = load_pretrained(hub, f"{arch}: ImageNet weights in the torch hub cache")
        if not isinstance(state, dict):
            raise ValueError(f"{arch}: {hub!r} holds a {type(state).__name__}, not a state dict")
    else:
        path = os.path.expanduser(str(weights))
        if not os.path.isfile(path):
            raise WeightsNotFoundError(
                f"{arch}: weights file {path!r} does not exist (expected a torchvision {arch} "
                "state dict, or 'imagenet' to use torchvision's weight enum)."
            )
        from weights.pretrained import load_pretrained

        try:
            state = load_pretrained(path, f"{arch}: weights file")
        except ValueError as err:
            raise ValueError(f"{arch}: cannot read weights file {path!r}: {err}") from err
        if not isinstance(state, dict):
            raise ValueError(f"{arch}: weights file {path!r} holds a {type(state).__name__}, not a state dict")
    features = features_state(state)
    if not features:
        raise ValueError(
            f"{arch}: weights {weights!r} hold no VGG feature keys (expected 'features.0.weight', ...); "
            f"found {sorted(state)[:6]}"
        )
    return features


def features_state(state: dict) -> OrderedDict[str, torch.Tensor]:
    """The ``features.*`` part of a torchvision VGG/AlexNet/SqueezeNet state dict, keys without the prefix
    (a bare ``features`` state dict, keys ``N.weight``, is returned as is)."""
    features = OrderedDict()
    for key, value in state.items():
        if key.startswith("features."):
            features[key[len("features.") :]] = value
        elif key.split(".")[0].isdigit():
            features[key] = value
    return features


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG returning the features at ``layer_names``.

    Args:
        layer_names: e.g. ``["conv5_4"]`` (ESRGAN) or ``["pool1", "pool2", "pool3"]`` (SC-FEGAN).
        arch: ``"vgg19"`` or ``"vgg16"``.
        weights: ``"imagenet"``, a local path, or ``"random"`` (see module docstring).
        use_input_norm: subtract the ImageNet mean / divide by std; the input is RGB in [0, 1].
        range_norm: map the input from [-1, 1] to [0, 1] first.
    """

    def __init__(
        self,
        layer_names: list[str],
        arch: str = "vgg19",
        weights: str = "imagenet",
        use_input_norm: bool = True,
        range_norm: bool = False,
    ) -> None:
        super().__init__()
        if arch not in LAYER_NAMES:
            raise ValueError(f"unknown VGG arch {arch!r}; expected one of {sorted(LAYER_NAMES)}")
        names = LAYER_NAMES[arch]
        unknown = [n for n in layer_names if n not in names]
        if unknown:
            raise ValueError(f"{arch} has no layer(s) {unknown}; valid names: {names}")
        self.layer_names = list(layer_names)
        self.arch = arch
        last = max(names.index(n) for n in layer_names)
        # Only the convolutional part (torchvision's make_layers): the 120M-parameter classifier is never used.
        features = models.vgg.make_layers(models.vgg.cfgs[_BUILDERS[arch][0]], batch_norm=False)
        state = load_vgg_features_state(arch, weights)
        if state is not None:
            features.load_state_dict(state)
        # What the run really uses, for its summary, result.json and the wandb config (train.py): a random
        # backbone (weights='random', or 'auto' without ImageNet weights) must never pass silently.
        self.weights_info = {
            "arch": arch,
            "requested": str(weights),
            "weights": "random" if state is None else ("imagenet" if weights in ("imagenet", "auto") else str(weights)),
            "pretrained": state is not None,
        }
        # Only the layers up to the deepest one asked for (ESRGAN: features[:35], conv5_4).
        self.features = features[: last + 1]
        self._index = {names.index(n): n for n in layer_names}
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        # Always eval: a frozen loss network (there is no BN/dropout in features, but be explicit).
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._index:
                # Clone unless it is the last layer: the next ReLU is in place and would
                # otherwise turn a recorded pre-activation conv feature into its ReLU.
                out[self._index[i]] = x.clone() if i < len(self.features) - 1 else x
        return out
