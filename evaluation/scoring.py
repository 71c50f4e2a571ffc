"""Optional metrics (LPIPS, NIQE, FID) built from the config, and per-row means."""

import math
import os

import torch
from omegaconf import DictConfig, OmegaConf

from metrics.fid import INCEPTION_FILE

# ---------------------------------------------------------------------------------------------------------------
# Optional metrics: LPIPS, NIQE, FID
# ---------------------------------------------------------------------------------------------------------------


def _metrics_cfg(cfg: DictConfig, name: str) -> DictConfig:
    return (cfg.get("metrics") or {}).get(name) or OmegaConf.create({})


def build_lpips_metric(cfg: DictConfig, device: torch.device):
    """torchmetrics LPIPS when ``metrics.lpips.enabled`` (an error saying what to do when its weights are missing)."""
    c = _metrics_cfg(cfg, "lpips")
    if not c.get("enabled", False):
        return None
    from metrics.lpips import build_lpips

    return build_lpips(c.get("net_type", "alex"), c.get("backbone_weights", "imagenet"), device)


def lpips_scores(metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS of [0, 1] RGB batches."""
    value = metric(a.float().clamp(0, 1), b.float().clamp(0, 1))
    metric.reset()  # per-call values only; nothing accumulates across images
    return value.detach().reshape(-1).double().cpu()


def niqe_enabled(cfg: DictConfig, interpolation: bool) -> bool:
    flag = _metrics_cfg(cfg, "niqe").get("enabled", "auto")
    if isinstance(flag, str):
        if flag != "auto":
            raise ValueError(f"metrics.niqe.enabled must be true, false or auto, got {flag!r}")
        return interpolation
    return bool(flag)


def build_fid_metric(cfg: DictConfig, device: torch.device, notes: list[str]):
    """torchmetrics FID with the Inception weights from a local file, or ``None`` with the reason in ``notes``."""
    c = _metrics_cfg(cfg, "fid")
    if not c.get("enabled", True):
        return None
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        notes.append(
            "FID was not computed: torchmetrics' FrechetInceptionDistance needs the torch-fidelity package "
            "(pip install torch-fidelity, pinned in requirements.txt)."
        )
        return None
    path = c.get("inception_weights")
    if not path:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
        if not os.path.isfile(cached):
            notes.append(
                f"FID was not computed: no Inception weights (metrics.fid.inception_weights=PATH to "
                f"torch-fidelity's {INCEPTION_FILE}; {cached} does not exist either)."
            )
            return None
        path = cached
    from metrics.fid import build_fid

    # Read with weights_only=True here (torch-fidelity's own loader unpickles anything).  uint8 inputs
    # (normalize=False), so that one Inception can serve several FIDs (see new_fid).
    return build_fid(path, int(c.get("feature", 2048)), device)


def new_fid(template):
    """Another FID sharing ``template``'s Inception network (no second copy of its weights)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=template.inception, normalize=False).to(template.device)


class RowMeans:
    """Per-image values of one table row, averaged over the images where they are finite."""

    def __init__(self):
        self.images = 0
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, values) -> None:
        values = values.tolist() if torch.is_tensor(values) else list(values)
        self.values.setdefault(name, []).extend(float(v) if v is not None else math.nan for v in values)

    def result(self, columns) -> dict:
        row = {"images": self.images}
        for k in columns:
            vals = [v for v in self.values.get(k, []) if not math.isnan(v)]
            row[k] = sum(vals) / len(vals) if vals else None
        return row
