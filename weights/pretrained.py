"""Loading pretrained helper networks' files (VGG, LPIPS, Inception, HED, BiSeNet, DexiNed) without running code.

Imports no project package, so the networks (``archs/``), metrics and synthesis can load their weights through it."""

from __future__ import annotations

import os

import torch


def load_pretrained(path: str | os.PathLike, what: str = "pretrained weights file"):
    """THE loader of every pretrained file this project reads (VGG16/19 and the LPIPS backbone from the torch hub
    cache or a given path, FID's Inception, HED, BiSeNet, DexiNed): ``torch.load(weights_only=True)``, so a
    poisoned file (e.g. in ``$TORCH_HOME/hub/checkpoints``) cannot run code.  ValueError naming the file otherwise."""
    path = os.path.expanduser(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{what} {path!r} refused: not a plain tensor file readable with torch.load(weights_only="
            f"True) (a pickle that runs code, or a damaged file): {type(err).__name__}: {err}"
        ) from err


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
    state = {
        (rename or (lambda k: k))(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()
    }
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
