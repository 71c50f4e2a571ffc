"""LPIPS (Zhang et al. 2018) through torchmetrics, with the backbone weights under our control.

``torchmetrics.image.LearnedPerceptualImagePatchSimilarity`` ships the LPIPS linear heads but asks torchvision
for the ImageNet backbone (alexnet-owt-7be5be79, vgg16-397923af, squeezenet1_1-b8a52dc0), i.e. it downloads, and
fails offline (torchmetrics lpips.py).  :func:`build_lpips` builds the same torchmetrics metric with the backbone taken
from, in this order:

* ``backbone_weights="imagenet"``: torchvision's weight enum, which reads ``$TORCH_HOME/hub/checkpoints/<file>``
  and downloads only when the file is missing;
* a path: a local torchvision state dict of that network (``features.N.*`` keys, ``classifier.*`` ignored) or a
  bare ``features`` state dict (``N.*``);

and when neither works, a :class:`LPIPSWeightsError` that says both.  There is no silent fallback to a random
backbone: a random backbone makes LPIPS meaningless (the tests build random backbone files on purpose).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from unittest import mock

import torch
from torch import nn

from archs.vgg_features import features_state

__all__ = ["LPIPSWeightsError", "NETS", "load_backbone_features", "build_lpips", "build_validation_lpips"]

# net_type -> (torchvision builder, weight enum name)
NETS = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


class LPIPSWeightsError(FileNotFoundError):
    """LPIPS was asked for but its backbone weights cannot be had."""


def _features_only(state: dict, net_type: str, source: str) -> OrderedDict[str, torch.Tensor]:
    features = features_state(state)
    if not features:
        raise ValueError(
            f"LPIPS ({net_type}): {source} holds no '{NETS[net_type][0]}' feature keys "
            f"(expected 'features.0.weight', ...); found {sorted(state)[:6]}"
        )
    return features


def load_backbone_features(net_type: str, backbone_weights: str = "imagenet") -> OrderedDict[str, torch.Tensor]:
    """State dict of the torchvision ``<net>.features`` for LPIPS (see the module docstring)."""
    if net_type not in NETS:
        raise ValueError(f"LPIPS net_type must be one of {sorted(NETS)}, got {net_type!r}")
    arch, enum_name = NETS[net_type]
    if backbone_weights in (None, "", "imagenet"):
        from torchvision import models

        enum = getattr(models, enum_name).IMAGENET1K_V1
        hub = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
        from weights.pretrained import hub_cached_file, load_pretrained

        try:
            cached = hub_cached_file(enum)
        except Exception as err:  # URLError, HTTPError, socket errors: no network
            raise LPIPSWeightsError(
                f"LPIPS ({net_type}) needs the ImageNet {arch} backbone: torchvision's {enum_name}.IMAGENET1K_V1 "
                f"is not in the torch hub cache ({hub}) and could not be downloaded from {enum.url} "
                f"({type(err).__name__}: {err}). Either copy that file to {hub}, or give a local copy with "
                f"metrics.lpips.backbone_weights=/path/to/{os.path.basename(enum.url)} "
                f"(or turn LPIPS off: metrics.lpips.enabled=false)."
            ) from err
        # not enum.get_state_dict(): torchvision unpickles the cache with weights_only=False (code would run)
        state = load_pretrained(cached, f"LPIPS ({net_type}) backbone in the torch hub cache")
        if not isinstance(state, dict):
            raise ValueError(f"LPIPS ({net_type}): {cached!r} holds a {type(state).__name__}, not a state dict")
        return _features_only(state, net_type, f"torchvision's {enum_name}")
    path = os.path.expanduser(str(backbone_weights))
    if not os.path.isfile(path):
        raise LPIPSWeightsError(
            f"LPIPS ({net_type}): backbone weights file {path!r} does not exist (expected a torchvision {arch} state "
            f"dict; or metrics.lpips.backbone_weights=imagenet to use torchvision's {enum_name} enum, which reads "
            f"$TORCH_HOME/hub/checkpoints or downloads)."
        )
    from weights.pretrained import load_pretrained

    try:
        state = load_pretrained(path, f"LPIPS ({net_type}) backbone weights")
    except ValueError as err:
        raise ValueError(f"LPIPS ({net_type}): cannot read backbone weights {path!r}: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"LPIPS ({net_type}): {path!r} holds a {type(state).__name__}, not a state dict")
    return _features_only(state, net_type, repr(path))


def build_lpips(net_type: str = "alex", backbone_weights: str = "imagenet", device: str | torch.device = "cpu"):
    """``LearnedPerceptualImagePatchSimilarity(net_type, reduction='none', normalize=True)`` (inputs in [0, 1],
    one value per image) with the backbone from :func:`load_backbone_features` and torchmetrics' linear heads."""
    import torchmetrics.functional.image.lpips as tm_lpips
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    features = load_backbone_features(net_type, backbone_weights)
    arch = NETS[net_type][0]

    def local_features(net: str, pretrained: bool = False) -> nn.Sequential:
        from torchvision import models

        seq = getattr(models, net)(weights=None).features
        missing, unexpected = seq.load_state_dict(features, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"LPIPS ({net_type}): backbone weights do not fit torchvision {net}.features: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return seq

    # torchmetrics builds the backbone through this module-level helper (pretrained=True -> download); hand it
    # ours instead, for the duration of the constructor only.
    with mock.patch.object(tm_lpips, "_get_tv_model_features", local_features):
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net_type, reduction="none", normalize=True)
    # Guard against a torchmetrics change that would bypass the helper: the backbone must hold our weights.
    own = {k.split(".", 1)[1]: v for k, v in metric.net.net.state_dict().items()}
    if set(own) != set(features) or any(not torch.equal(own[k], features[k].to(own[k].dtype)) for k in own):
        raise RuntimeError(f"LPIPS ({net_type}): torchmetrics did not take the given {arch} backbone weights")
    return metric.to(device)


def build_validation_lpips(options: dict | None):
    """LPIPS for a recipe's validation (``model.val_lpips``: ``enabled``, ``net_type``, ``backbone_weights``), frozen
    and in eval mode; None when it is off (the default: its backbone needs ImageNet weights that offline machines do
    not have)."""
    options = dict(options or {})
    if not options.get("enabled", False):
        return None
    metric = build_lpips(options.get("net_type", "alex"), options.get("backbone_weights", "imagenet"))
    return metric.requires_grad_(False).eval()
