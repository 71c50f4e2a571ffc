"""FID with torch-fidelity's Inception, its weights read safely.

torch-fidelity (0.4) reads a local Inception file with ``torch.load(weights_only=False)`` and its download cache
through ``torch.hub.load_state_dict_from_url`` (also ``weights_only=False``): unpickling a stranger's file runs
whatever it names.  Here the file is read with ``torch.load(weights_only=True)`` (tensors and plain containers
only; a pickle with a payload is refused, naming the file) and the state dict is handed to torchmetrics'
``NoTrainInceptionV3`` while it is built, so torch-fidelity never opens the file itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import torch

#: torch-fidelity's FID Inception (TF 2015-12-05 port), as its URL names it.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
FEATURES = (64, 192, 768, 2048)


def load_inception_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The Inception state dict in ``path``, read with ``weights_only=True``; an error naming the file otherwise."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"metrics.fid.inception_weights={path!r} does not exist (expected torch-fidelity's {INCEPTION_FILE})"
        )
    try:
        from weights.pretrained import load_pretrained

        state = load_pretrained(path, "FID Inception weights")
    except Exception as err:  # UnpicklingError for payloads, EOFError/zip errors for truncation
        raise ValueError(
            f"FID Inception weights {path!r} refused: not a plain tensor file readable with "
            f"torch.load(weights_only=True) (a pickle that runs code, or a damaged file): "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"FID Inception weights {path!r} hold a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


@contextlib.contextmanager
def _weights_given(state: Mapping[str, torch.Tensor]):
    """While building torch-fidelity's Inception, its 'download' returns ``state`` (no file or URL is opened)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original = fe.load_state_dict_from_url

    def given(*args, **kwargs):
        return state

    fe.load_state_dict_from_url = given
    try:
        yield
    finally:
        fe.load_state_dict_from_url = original


def build_inception(path: str | os.PathLike, feature: int = 2048) -> torch.nn.Module:
    """torchmetrics' ``NoTrainInceptionV3`` (the network its FID uses) with the weights of ``path``, read safely."""
    if int(feature) not in FEATURES:
        raise ValueError(f"metrics.fid.feature={feature!r} must be one of {FEATURES}")
    from torchmetrics.image.fid import NoTrainInceptionV3

    state = load_inception_state(path)
    try:
        with _weights_given(state):
            net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=[str(int(feature))], feature_extractor_weights_path=None
            )
    except RuntimeError as err:  # load_state_dict: missing / unexpected keys, wrong shapes
        raise ValueError(f"FID Inception weights {str(path)!r} do not fit torch-fidelity's InceptionV3: {err}") from err
    net.num_features = int(feature)  # torchmetrics reads this instead of running a dummy image
    return net


def build_fid(path: str | os.PathLike, feature: int = 2048, device: torch.device | str = "cpu"):
    """``FrechetInceptionDistance`` on uint8 images (``normalize=False``) with the safely read Inception."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=build_inception(path, feature), normalize=False).to(device)
