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


# Per-row FID and KID from features computed once per image: a table with many rows (mask presets x coverage bins)
# runs the Inception once per image instead of once per row, and keeps [N, d] features instead of a d x d covariance
# sum per row (FrechetInceptionDistance's state is 2 x 2048^2 float64 = 64 MiB).


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID of two ``[N, d]`` feature sets, as torchmetrics' ``FrechetInceptionDistance.compute`` (float64 moments,
    unbiased covariance, its ``_compute_fid``)."""
    from torchmetrics.image.fid import _compute_fid

    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError("FID needs at least 2 images per set")
    real, fake = real.double(), fake.double()
    return float(_compute_fid(real.mean(0), torch.cov(real.t()), fake.mean(0), torch.cov(fake.t())))


def kid_from_features(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over subsets) as torchmetrics' ``KernelInceptionDistance.compute``: its unbiased MMD^2 estimator
    (``poly_mmd``: cubic polynomial kernel, gamma 1/d, coef 1; Binkowski et al. 2018, arXiv 1801.01401), subsets
    drawn without replacement, here from a seeded generator (torchmetrics draws from the global RNG) and with
    ``subset_size`` lowered to the row's image count when the row is smaller."""
    from torchmetrics.image.kid import poly_mmd

    m = min(int(subset_size), real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 images per set")
    g = torch.Generator().manual_seed(int(seed))
    scores = []
    for _ in range(int(subsets)):
        r = real[torch.randperm(real.shape[0], generator=g)[:m]]
        f = fake[torch.randperm(fake.shape[0], generator=g)[:m]]
        scores.append(poly_mmd(r.double(), f.double()))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


def inception_weights_path(path: str | os.PathLike | None, key: str = "model.val_fid.inception_weights") -> str:
    """``path``, or torch-fidelity's file in the torch hub cache when ``path`` is empty; an error naming ``key``."""
    if path:
        return os.path.expanduser(str(path))
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    if not os.path.isfile(cached):
        raise FileNotFoundError(
            f"{key}=null: no Inception weights for FID/KID ({cached} does not exist, and they cannot be downloaded "
            f"here); give {key}=/path/to/{INCEPTION_FILE}, or turn validation FID off"
        )
    return cached


class ValidationFID(torch.nn.Module):
    """FID and KID of a recipe's validation outputs against the real images (``model.val_fid``).

    Each validation image's Inception features (pool3, uint8 input, as evaluate.py) are kept, gathered from every
    rank at the end (the validation samplers do not pad: each image once), and FID (:func:`fid_from_features`) and KID
    (:func:`kid_from_features`, seeded subsets) are computed over the whole set, but only when it holds at least
    ``min_images`` images: FID is strongly biased on small sets, and a sweep ranked by it would rank noise.
    """

    def __init__(
        self,
        inception_weights: str | None = None,
        feature: int = 2048,
        min_images: int = 50,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
    ) -> None:
        super().__init__()
        self.net = build_inception(inception_weights_path(inception_weights), feature).requires_grad_(False).eval()
        self.min_images = max(2, int(min_images))
        self.kid_subsets, self.kid_subset_size = int(kid_subsets), int(kid_subset_size)
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def reset(self) -> None:
        self.real, self.fake = [], []

    @torch.no_grad()
    def update(self, fake01: torch.Tensor, real01: torch.Tensor) -> None:
        """One batch of [0, 1] RGB images and their real counterparts."""
        if fake01.shape[0] == 0:
            return
        for images, store in ((fake01, self.fake), (real01, self.real)):
            q = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            store.append(self.net(q).double().cpu())

    def compute(self) -> tuple[dict[str, float] | None, int]:
        """(``{"fid", "kid", "kid_std"}`` or None when the set is below ``min_images``, the set's image count).
        Collective under DDP: every rank calls it."""
        import torch.distributed as dist

        real = torch.cat(self.real) if self.real else torch.zeros(0, 1, dtype=torch.float64)
        fake = torch.cat(self.fake) if self.fake else torch.zeros(0, 1, dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (real, fake))
            real = torch.cat([p[0] for p in parts if p[0].shape[0]] or [real])
            fake = torch.cat([p[1] for p in parts if p[1].shape[0]] or [fake])
        n = int(real.shape[0])
        if n < self.min_images:
            return None, n
        kid, kid_std = kid_from_features(real, fake, self.kid_subsets, self.kid_subset_size)
        return {"fid": fid_from_features(real, fake), "kid": kid, "kid_std": kid_std}, n
