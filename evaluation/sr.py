"""Super-resolution rows (BasicSR psnr_ssim.py protocol) and network-interpolation rows."""

import torch
from omegaconf import DictConfig
from rich.progress import track

from datamodules.sr_datamodule import SRValDataset, folder_name, make_lr
from evaluation.generators import load_generator, read_generator
from evaluation.scoring import RowMeans, build_lpips_metric, lpips_scores, niqe_enabled
from inference.device import pick_device
from metrics.sr_metrics import sr_metrics, tensor_to_uint8
from ops.imresize import imresize
from weights.interpolate import interpolate_state_dicts
from weights.io import load_into

COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
PI_NOTE = (
    "Perceptual Index (PI = ((10 - Ma) + NIQE) / 2, PIRM 2018) is not reported: no implementation of the Ma et al. "
    "score is available in this project (BasicSR has none either; pyiqa provides one)."
)


def build_sr_model(cfg: DictConfig, device: torch.device):
    """A callable LR -> SR: bicubic, or the generator of ``cfg.ckpt_path``."""
    scale = int(cfg.data.scale)
    if cfg.model.get("name") == "bicubic":
        return lambda lq: imresize(lq, scale)
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=... is required for model=esrgan (model=bicubic needs none)")
    return load_generator(cfg, cfg.ckpt_path, device)


# ---------------------------------------------------------------------------------------------------------------
# Super-resolution
# ---------------------------------------------------------------------------------------------------------------


class SRScorer:
    """PSNR/SSIM (Y, RGB) and, when enabled, LPIPS and NIQE of one SR image against its HR."""

    def __init__(self, cfg: DictConfig, device: torch.device, interpolation: bool):
        self.lpips = build_lpips_metric(cfg, device)
        self.niqe = niqe_enabled(cfg, interpolation)
        self.niqe_skipped: dict[str, str] = {}
        self.columns = COLUMNS + (("lpips",) if self.lpips is not None else ()) + (("niqe",) if self.niqe else ())

    def score(self, sr: torch.Tensor, gt: torch.Tensor, crop: int, name: str, row: RowMeans) -> None:
        values = sr_metrics(sr, gt, crop_border=crop)
        for k in COLUMNS:
            row.add(k, values[k])
        if self.lpips is not None:
            q_sr, q_gt = (tensor_to_uint8(x).float() / 255.0 for x in (sr, gt))
            if crop > 0:
                q_sr, q_gt = (x[..., crop:-crop, crop:-crop] for x in (q_sr, q_gt))
            row.add("lpips", lpips_scores(self.lpips, q_sr, q_gt))
        if self.niqe:
            from metrics.niqe import calculate_niqe

            try:
                row.add("niqe", [calculate_niqe(sr[0], crop_border=crop)])
            except ValueError as err:  # fewer than two 96x96 blocks after the crop, or flat blocks
                self.niqe_skipped[name] = str(err)
                row.add("niqe", [None])

    def notes(self) -> list[str]:
        notes = []
        if self.niqe_skipped:
            first = sorted(self.niqe_skipped)[0]
            notes.append(
                f"NIQE undefined for {len(self.niqe_skipped)} image(s), left out of the means (n/a where "
                f"no image has one); e.g. {first}: {self.niqe_skipped[first]}"
            )
        if not self.niqe:
            notes.append("NIQE off (metrics.niqe.enabled=true adds it).")
        notes.append(PI_NOTE)
        return notes


@torch.no_grad()
def _sr_folder_rows(model, cfg: DictConfig, device: torch.device, scorer: SRScorer, prefix: str = "") -> dict:
    scale = int(cfg.data.scale)
    results = {}
    for folder in cfg.data.test_dirs:
        ds = SRValDataset(folder, scale, on_bad_image=cfg.data.on_bad_image, gt_mod=cfg.data.get("gt_mod"))
        from inference.images import check_pixels

        for f in ds.files:  # from the headers, before any decoding or inference (predict.py's rule)
            check_pixels(f, cfg.get("max_pixels"), "evaluation image")
        row = RowMeans()
        for i in track(range(len(ds)), description=f"{prefix}{folder_name(folder)}", transient=True):
            item = ds[i]
            if item is None:  # pixels that do not decode: skipped with a warning naming the file
                continue
            gt = item["gt"].unsqueeze(0).to(device)
            sr = model(make_lr(gt, scale, quantize=True))
            scorer.score(sr, gt, scale, f"{folder_name(folder)}/{item['name']}", row)
            row.images += 1
        results[f"{prefix}{folder_name(folder)}"] = row.result(scorer.columns)
    return results


def evaluate_sr(cfg: DictConfig) -> tuple[dict[str, dict], list[str]]:
    device = pick_device(cfg.device)
    model = build_sr_model(cfg, device)
    scorer = SRScorer(cfg, device, interpolation=False)
    return _sr_folder_rows(model, cfg, device, scorer), scorer.notes()


def interpolation_requested(cfg: DictConfig) -> bool:
    c = cfg.get("interp") or {}
    given = [bool(c.get("psnr_weights")), bool(c.get("gan_weights"))]
    if any(given) and not all(given):
        raise ValueError("network interpolation needs both interp.psnr_weights=PATH and interp.gan_weights=PATH")
    return all(given)


def alpha_key(alpha: float) -> str:
    return f"alpha={float(alpha):g}"


def evaluate_interpolation(cfg: DictConfig) -> tuple[dict[str, dict], list[str]]:
    """One row per alpha and folder: ``"alpha=<a>/<folder>"``."""
    if cfg.model.get("name") == "bicubic":
        raise ValueError("network interpolation needs model=esrgan (a generator), not model=bicubic")
    if cfg.get("ckpt_path"):
        raise ValueError("give either ckpt_path=... or interp.psnr_weights=... + interp.gan_weights=..., not both")
    c = cfg.interp
    alphas = [float(a) for a in c.alphas]
    if not alphas:
        raise ValueError("interp.alphas is empty")
    device = pick_device(cfg.device)
    psnr_path, gan_path = str(c.psnr_weights), str(c.gan_weights)
    # Both files through the allow-list (either may be hostile); the architecture is the PSNR file's.
    net, info_a = read_generator(cfg, psnr_path)
    _, info_b = read_generator(cfg, gan_path)
    a, b = info_a.state, info_b.state
    interpolate_state_dicts(a, b, 0.0, names=(psnr_path, gan_path))  # layout check before any evaluation
    scorer = SRScorer(cfg, device, interpolation=True)
    results = {}
    for alpha in alphas:
        state = interpolate_state_dicts(a, b, alpha, names=(psnr_path, gan_path))
        load_into(net, state, source=f"alpha={alpha:g} interpolation of {psnr_path!r} and {gan_path!r}")
        net.eval().to(device)
        results.update(_sr_folder_rows(net, cfg, device, scorer, prefix=f"{alpha_key(alpha)}/"))
    notes = [f"alpha=0: {psnr_path}; alpha=1: {gan_path}; theta = (1 - alpha) theta_PSNR + alpha theta_GAN."]
    return results, notes + scorer.notes()
