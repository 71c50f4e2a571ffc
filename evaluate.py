"""Evaluate super-resolution and face-editing models.

    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[DIR,...] metrics_file=out.json
    python evaluate.py model=bicubic data.test_dirs=[DIR,...]
    python evaluate.py model=esrgan ckpt_path=PATH data.test_dirs=[...] metrics.lpips.enabled=true \\
        metrics.niqe.enabled=true
    python evaluate.py model=esrgan interp.psnr_weights=A interp.gan_weights=B interp.alphas=[0,0.2,0.4,0.6,0.8,1.0] \\
        data.test_dirs=[...]
    python evaluate.py model=scfegan ckpt_path=PATH data.test_dir=DIR [data.user_mask_dir=MASKS]

Super-resolution, per folder (BasicSR psnr_ssim.py): HR cropped to a multiple of scale, LR by MATLAB bicubic (8-bit),
SR by the model, both quantised to 8 bits, ``crop_border = scale``; PSNR/SSIM on the BT.601 Y channel and on RGB,
averaged over the images.  Optional: LPIPS (torchmetrics, same quantised and cropped images, lower is better) and
NIQE (MATLAB ``niqe_release`` port, of the SR image alone, Y channel, same crop; lower is better).  The Perceptual
Index needs a Ma score, which this project does not have: it is not reported, and every SR run says so.

Network interpolation: ``(1 - alpha) * theta_PSNR + alpha * theta_GAN`` for each alpha, rows keyed
``"alpha=<a>/<folder>"``; NIQE is on by default there (``metrics.niqe.enabled=auto``).

Face editing (SC-FEGAN): the images of ``data.test_dir`` (or, without it, the held-out split of a face ``data=``
config) with a fixed, seeded synthesised mask/sketch/colour/noise per image (``FaceDataModule.synthesize(...,
train=False)``), and with the user masks of ``data.user_mask_dir`` when given; L1, PSNR, SSIM on the whole image and
in the masked region, LPIPS, FID, and the mean mask coverage.  Rows ``"<folder>"``, ``"<folder>/cov_<lo>-<hi>%"``
(the same images grouped by mask coverage, ``coverage_bins``: 0-10 % ... 50-60 % as inpainting papers report),
``"<folder>/user_strokes"`` (user-stroke masks over one face part, ``user_strokes``) and ``"<folder>/user_masks"``.
The noise fed to G is the one the weights record (``noise=auto``).

Every run prints its table and, with ``metrics_file=PATH``, writes ``{"<row>": {"images": n, "<metric>": value}}``
(one key per metric; ``null`` where a metric is undefined for every image).  With ``logger=wandb`` the same table
goes to wandb.  ``evaluate(cfg)`` is a plain function the tests call.
"""

import tv_compat  # noqa: F401  (must precede anything that imports torchvision)

import json
import logging
import math
import os
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from rich.table import Table

from archs.interpolate import interpolate_state_dicts
from archs.weights_io import build_generator, load_into
from datamodules.sr_datamodule import SRValDataset, folder_name, make_lr
from metrics.fid import INCEPTION_FILE
from metrics.sr_metrics import sr_metrics, tensor_to_uint8
from ops.imresize import imresize

log = logging.getLogger(__name__)
COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
FACE_COLUMNS = ("l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask")
EVAL_DATA_KEYS = ("test_dir", "test_label_dir", "user_mask_dir")  # conf/eval.yaml's additions to `data`
PI_NOTE = (
    "Perceptual Index (PI = ((10 - Ma) + NIQE) / 2, PIRM 2018) is not reported: no implementation of the Ma et al. "
    "score is available in this project (BasicSR has none either; pyiqa provides one)."
)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------


def _prefer(cfg: DictConfig) -> str:
    return "params_ema" if cfg.get("use_ema", True) else "params"


def _kind(cfg: DictConfig) -> str:
    return {"sr": "esrgan", "faces": "scfegan"}.get(cfg.model.get("task"), "auto")


def read_generator(cfg: DictConfig, path: str):
    """``(generator on the CPU, GeneratorFile)`` of ``path`` through :func:`archs.weights_io.build_generator`: the
    architecture the file records (a ``.ckpt``'s ``hyper_parameters.generator``, an export's metadata) only if it
    is one of the project's (archs.weights_io.ARCHITECTURES, primitive arguments), else read off the tensors, with
    ``cfg.model.generator`` for what tensors cannot tell.  A file naming anything else is refused, unbuilt."""
    defaults = OmegaConf.to_container(cfg.model.generator, resolve=True) if cfg.model.get("generator") else None
    net, info = build_generator(os.path.expanduser(str(path)), kind=_kind(cfg), prefer=_prefer(cfg),
                                defaults=defaults)
    if _kind(cfg) == "esrgan" and cfg.get("data") is not None and cfg.data.get("scale") is not None:
        if int(net.scale) != int(cfg.data.scale):
            raise ValueError(f"{path!r} is an x{net.scale} generator but data.scale={cfg.data.scale}: give "
                             f"data.scale={net.scale} (or the x{cfg.data.scale} weights)")
    return net, info


def load_generator(cfg: DictConfig, path: str, device: torch.device) -> torch.nn.Module:
    return read_generator(cfg, path)[0].eval().to(device)


def build_sr_model(cfg: DictConfig, device: torch.device):
    """A callable LR -> SR: bicubic, or the generator of ``cfg.ckpt_path``."""
    scale = int(cfg.data.scale)
    if cfg.model.get("name") == "bicubic":
        return lambda lq: imresize(lq, scale)
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=... is required for model=esrgan (model=bicubic needs none)")
    return load_generator(cfg, cfg.ckpt_path, device)


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
        notes.append("FID was not computed: torchmetrics' FrechetInceptionDistance needs the torch-fidelity package "
                     "(pip install torch-fidelity, pinned in requirements.txt).")
        return None
    path = c.get("inception_weights")
    if not path:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
        if not os.path.isfile(cached):
            notes.append(f"FID was not computed: no Inception weights (metrics.fid.inception_weights=PATH to "
                         f"torch-fidelity's {INCEPTION_FILE}; {cached} does not exist either).")
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
            notes.append(f"NIQE undefined for {len(self.niqe_skipped)} image(s), left out of the means (n/a where "
                         f"no image has one); e.g. {first}: {self.niqe_skipped[first]}")
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
        from predict import check_pixels

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


# ---------------------------------------------------------------------------------------------------------------
# Face editing (SC-FEGAN)
# ---------------------------------------------------------------------------------------------------------------


def face_data_config(cfg: DictConfig) -> DictConfig:
    """Face settings (resolution, synthesis, seeds): ``data`` when it is a face config, else ``face_data``."""
    if cfg.data.get("task") == "faces":
        return cfg.data
    fcfg = cfg.get("face_data")
    if fcfg is None or fcfg.get("task") != "faces":
        raise ValueError("model=scfegan needs face data settings: data=celeba_hq (or celebamask_mini, faces_demo)")
    return fcfg


def build_face_data(cfg: DictConfig):
    """``(datamodule, dataset, row name)``: the images of ``data.test_dir``, or the face config's held-out split."""
    fcfg = face_data_config(cfg)
    test_dir = cfg.data.get("test_dir")
    kwargs = dict(hflip=False, pin_memory=False, persistent_workers=False)
    if test_dir:
        kwargs.update(image_dir=str(test_dir), label_dir=cfg.data.get("test_label_dir"), split_file=None)
    fc = OmegaConf.to_container(fcfg, resolve=True)
    for key in EVAL_DATA_KEYS:  # eval.yaml adds these to every data config; the data module does not take them
        fc.pop(key, None)
    dm = instantiate(fc, **kwargs)
    if test_dir:
        from datamodules.image_io import filter_images, list_images

        files = filter_images(list_images(test_dir), dm.min_size, dm.on_bad_image)
        return dm, dm._dataset(files, train=False), folder_name(str(test_dir))
    if cfg.data.get("task") != "faces":
        raise ValueError("model=scfegan: give the test images with data.test_dir=DIR (or a face data config, e.g. "
                         "data=celeba_hq, whose held-out split is then evaluated)")
    dm.setup("test")
    if dm.val_set is None:
        raise ValueError(f"the face data config has no held-out images (num_val={dm.num_val}); give data.test_dir=DIR")
    return dm, dm.val_set, "val"


def find_user_masks(mask_dir: str, files: list[Path]) -> dict[int, Path]:
    """Dataset index -> mask file with the same stem in ``mask_dir`` (png preferred)."""
    from datamodules.image_io import IMG_EXTENSIONS

    root = Path(mask_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.user_mask_dir={str(root)!r} does not exist or is not a folder")
    by_stem: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in IMG_EXTENSIONS and p.is_file():
            if p.stem not in by_stem or p.suffix.lower() == ".png":
                by_stem[p.stem] = p
    found = {i: by_stem[f.stem] for i, f in enumerate(files) if f.stem in by_stem}
    if not found:
        raise FileNotFoundError(f"no mask in {str(root)!r} has the name of a test image (e.g. {files[0].stem}.png; "
                                "white = erased)")
    if len(found) < len(files):
        missing = [f.name for i, f in enumerate(files) if i not in found]
        warnings.warn(f"{len(missing)} of {len(files)} test images have no user mask in {str(root)!r} "
                      f"(e.g. {missing[0]}); the user-mask row covers the other {len(found)}", stacklevel=2)
    return found


def read_user_mask(path: Path, image_path: Path, resolution: int) -> torch.Tensor:
    """``[1, R, R]`` float mask, 1 = erased (white), from a user mask drawn on its image (same aspect ratio)."""
    import cv2

    from datamodules.image_io import image_size, read_image

    m = read_image(path).mean(axis=2)  # gray, RGB or RGBA files alike
    ih, iw = image_size(image_path)
    mh, mw = m.shape
    if mh * iw != mw * ih:
        raise ValueError(f"user mask {path} is {mw}x{mh} but its image {image_path.name} is {iw}x{ih} "
                         "(the aspect ratios must match)")
    if (mh, mw) != (resolution, resolution):
        m = cv2.resize(m, (resolution, resolution), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy((m > 0.5).astype(np.float32))[None]


def user_mask_inputs(dm, batch: dict, mask: torch.Tensor) -> dict:
    """The generator inputs for user masks: sketch and colour of the image, and noise, inside ``mask`` (the same
    parts and validation seed as the synthesised masks)."""
    synth = dm.synthesis.to(batch["image"].device)
    image = batch["image"]
    mask = mask.to(image)
    seg = batch.get("seg")
    seg = seg if seg is not None and bool((seg >= 0).any()) else None
    indices = [int(i) for i in batch["index"].view(-1).tolist()]
    with torch.no_grad():
        sketch = synth.sketch(image).to(image.dtype) * mask
        color = synth.color(image, seg).to(image.dtype) * mask
        noise = synth.make_noise(image, indices, dm.val_epoch, dm.seed + dm.val_seed_offset).to(image.dtype) * mask
    return {"image": image, "mask": mask, "sketch": sketch, "color": color, "noise": noise}


def coverage_bins(cfg: DictConfig) -> list[tuple[float, float]]:
    """The mask-coverage bins of the per-bin rows (fractions), as configured (``coverage_bins``)."""
    bins = [(float(lo), float(hi)) for lo, hi in (cfg.get("coverage_bins") or [])]
    if any(not 0.0 <= lo < hi <= 1.0 for lo, hi in bins):
        raise ValueError(f"coverage_bins must be [lo, hi] fractions with 0 <= lo < hi <= 1, got {bins}")
    return bins


def bin_key(row: str, lo: float, hi: float) -> str:
    return f"{row}/cov_{100 * lo:g}-{100 * hi:g}%"


def bin_index(coverage: float, bins: list[tuple[float, float]]) -> int | None:
    """The bin holding ``coverage`` (intervals (lo, hi]; the first one also takes lo itself), or None."""
    for k, (lo, hi) in enumerate(bins):
        if (lo < coverage or (k == 0 and coverage >= lo and coverage > 0)) and coverage <= hi:
            return k
    return None


def face_noise_type(cfg: DictConfig, dm, notes: list[str]) -> str:
    """The noise kind G gets: ``noise=auto`` -> the one the weights record (what the model was trained with),
    else ``data.synthesis.noise_type``; an explicit ``noise=`` that differs from the recorded one warns."""
    from archs.weights_io import read_generator_file
    from predict import resolve_noise
    from synthesis.pipeline import NOISE_TYPES as SYNTH_NOISE

    meta = read_generator_file(cfg.ckpt_path, prefer=_prefer(cfg)).meta
    requested = cfg.get("noise", "auto")
    if requested in (None, "auto") and meta.get("noise_type") is None:
        noise = dm.synthesis.noise_type
        notes.append(f"noise: {noise} (data.synthesis.noise_type; the weights record no noise_type)")
        return noise
    noise = resolve_noise(requested, meta, f"weights {cfg.ckpt_path}")
    if noise not in SYNTH_NOISE:
        raise ValueError(f"noise={noise!r}: evaluation synthesises {SYNTH_NOISE} noise only")
    source = "recorded with the weights" if requested in (None, "auto") else "noise=" + str(requested)
    notes.append(f"noise: {noise} ({source}; the weights record {meta.get('noise_type')!r})")
    return noise


def user_stroke_synthesizer(cfg: DictConfig, dm):
    """A synthesizer like ``dm.synthesis`` (same sketch, colour, noise) with user-stroke masks, or None."""
    c = cfg.get("user_strokes") or {}
    if not c.get("enabled", False):
        return None
    from synthesis.pipeline import FaceInputSynthesizer

    base = dm.synthesis
    mask = instantiate(c.mask)
    return FaceInputSynthesizer(mask=mask, sketch=base.sketch, color=base.color, noise_type=base.noise_type,
                                eye_positions=base.eye_positions, eye_reference_size=base.eye_reference_size,
                                l_eye_label=base.l_eye_label, r_eye_label=base.r_eye_label, seed=base.seed)


@torch.no_grad()
def evaluate_faces(cfg: DictConfig) -> tuple[dict[str, dict], list[str]]:
    from torch.utils.data import DataLoader

    from datamodules.samplers import collate_skipping_bad
    from archs.scfegan_generator import composite, make_generator_input
    from metrics.inpainting_metrics import inpainting_metrics

    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=... is required for model=scfegan (a .ckpt of this project or generator weights)")
    device = pick_device(cfg.device)
    net = load_generator(cfg, cfg.ckpt_path, device)
    dm, ds, name = build_face_data(cfg)
    user_masks = find_user_masks(cfg.data.user_mask_dir, ds.files) if cfg.data.get("user_mask_dir") else None
    notes: list[str] = []
    dm.synthesis.noise_type = face_noise_type(cfg, dm, notes)
    strokes = user_stroke_synthesizer(cfg, dm)
    bins = coverage_bins(cfg)
    lpips = build_lpips_metric(cfg, device)
    fid_main = build_fid_metric(cfg, device, notes)
    keys = ([name] + [bin_key(name, lo, hi) for lo, hi in bins] + ([f"{name}/user_strokes"] if strokes else [])
            + ([f"{name}/user_masks"] if user_masks else []))
    rows = {k: RowMeans() for k in keys}
    fid_keys = [k for k in keys if k == name or not k.startswith(f"{name}/cov_")]  # too few images per bin for FID
    fids = {k: (fid_main if i == 0 else new_fid(fid_main)) for i, k in enumerate(fid_keys)} if fid_main else {}
    columns = (("coverage",) + FACE_COLUMNS + (("lpips",) if lpips is not None else ()) + (("fid",) if fids else ()))

    def add(row: RowMeans, values: dict, sel: list[int]) -> None:
        for k, v in values.items():
            row.add(k, [v[i] for i in sel])
        row.images += len(sel)

    def score(key: str, inputs: dict, per_bin: bool = False) -> None:
        x = make_generator_input(inputs["image"], inputs["sketch"], inputs["color"], inputs["mask"], inputs["noise"])
        comp = composite(net(x), inputs["image"], inputs["mask"])
        out01, gt01 = (comp + 1) / 2, (inputs["image"] + 1) / 2
        metrics = inpainting_metrics(out01, gt01, inputs["mask"])
        values = {"coverage": inputs["mask"].flatten(1).double().mean(1).cpu().tolist()}
        values.update({k: metrics[k].reshape(-1).tolist() for k in FACE_COLUMNS})
        if lpips is not None:
            values["lpips"] = lpips_scores(lpips, out01, gt01).tolist()
        n = out01.shape[0]
        add(rows[key], values, list(range(n)))
        if per_bin:  # the same images, grouped by the coverage of their mask (Liu et al. 2018 categories)
            where = [bin_index(c, bins) for c in values["coverage"]]
            for k, (lo, hi) in enumerate(bins):
                sel = [i for i in range(n) if where[i] == k]
                if sel:
                    add(rows[bin_key(key, lo, hi)], values, sel)
        if key in fids:
            fids[key].update(tensor_to_uint8(gt01, as_uint8=True), real=True)
            fids[key].update(tensor_to_uint8(out01, as_uint8=True), real=False)

    loader = DataLoader(ds, batch_size=dm.val_batch_size, shuffle=False, num_workers=dm.num_workers,
                        collate_fn=collate_skipping_bad)  # undecodable files: skipped, warned about by name
    for batch in track(loader, total=len(loader), description=name, transient=True):
        if batch is None:
            continue
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        score(name, dm.synthesize(batch, train=False), per_bin=bool(bins))
        if strokes is not None:
            strokes.to(device)
            score(f"{name}/user_strokes", strokes(batch, epoch=dm.val_epoch, seed=dm.seed + dm.val_seed_offset))
        if user_masks:
            idx = [int(i) for i in batch["index"].tolist()]
            keep = [j for j, i in enumerate(idx) if i in user_masks]
            if keep:
                sub = {k: v[keep] for k, v in batch.items() if torch.is_tensor(v)}
                mask = torch.stack([read_user_mask(user_masks[idx[j]], ds.files[idx[j]], ds.resolution) for j in keep])
                score(f"{name}/user_masks", user_mask_inputs(dm, sub, mask.to(device)))

    results = {k: rows[k].result(columns if k in fids or not fids else columns[:-1]) for k in keys
               if rows[k].images or not k.startswith(f"{name}/cov_")}
    for k, fid in fids.items():
        if rows[k].images >= 2:
            results[k]["fid"] = float(fid.compute())
        else:
            results[k]["fid"] = None
            notes.append(f"FID of {k} is undefined with fewer than 2 images.")
    notes.append(f"masks: synthesised with seed {dm.seed} + val_seed_offset {dm.val_seed_offset}, epoch "
                 f"{dm.val_epoch} (fixed); images at {ds.resolution}x{ds.resolution}; region metrics inside the mask.")
    if bins:
        notes.append(f"rows {name}/cov_<lo>-<hi>%: the same images grouped by mask coverage (Liu et al. 2018 "
                     "categories, (lo, hi]); empty bins are left out; no FID per bin (too few images).")
    if strokes is not None:
        notes.append(f"row {name}/user_strokes: user-stroke masks (a few strokes over one face part, colour only "
                     "along thinner strokes inside; synthesis.masks.UserStrokeMask).")
    if lpips is None:
        notes.append("LPIPS off (metrics.lpips.enabled=true adds it; it needs the backbone weights).")
    return results, notes


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def _columns(results: dict[str, dict]) -> list[str]:
    cols: list[str] = []
    for row in results.values():
        cols += [k for k in row if k != "images" and k not in cols]
    return cols


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_table(results: dict[str, dict], title: str, notes: list[str] = ()) -> None:
    table = Table(title=title)
    table.add_column("row", no_wrap=True)
    table.add_column("images", justify="right")
    cols = _columns(results)
    headers = [k.replace("_", "-").upper() for k in cols]
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True)
    for name, row in results.items():
        table.add_row(name, str(row["images"]), *(_fmt(row.get(k)) for k in cols))
    # Wide enough for every column even when stdout is not a terminal (rich assumes 80 columns there).
    needed = max([len("row"), *map(len, results)]) + 10 + sum(max(len(h), 10) + 3 for h in headers)
    console = Console()
    if console.width < needed:
        console = Console(width=needed)
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")


def log_to_loggers(cfg: DictConfig, results: dict[str, dict], title: str) -> None:
    """Send the table to the configured experiment loggers (``logger=wandb``: a wandb.Table ``eval/metrics``)."""
    if not cfg.get("logger"):
        return
    from pytorch_lightning.loggers import WandbLogger

    from train import instantiate_loggers

    loggers = instantiate_loggers(cfg.logger)
    if not loggers:
        return
    cols = _columns(results)
    data = [[name, row["images"], *(row.get(k) for k in cols)] for name, row in results.items()]
    flat = {f"eval/{name}/{k}": v for name, row in results.items() for k, v in row.items() if v is not None}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key="eval/metrics", columns=["row", "images", *cols], data=data)
            lg.experiment.summary["eval/title"] = title
        else:
            lg.log_metrics(flat)
        lg.finalize("success")
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    task = cfg.model.get("task")
    if cfg.get("metrics_file"):  # predict.py's rules, checked before any work
        from archs.weights_io import check_output_file

        interp = cfg.get("interp") or {}
        check_output_file(cfg.metrics_file, (cfg.get("ckpt_path"), interp.get("psnr_weights"),
                                             interp.get("gan_weights")), bool(cfg.get("overwrite", False)),
                          "metrics_file")
    if task == "sr":
        if interpolation_requested(cfg):
            results, notes = evaluate_interpolation(cfg)
            title = f"x{cfg.data.scale} network interpolation"
        else:
            results, notes = evaluate_sr(cfg)
            title = f"x{cfg.data.scale} {'bicubic' if cfg.model.get('name') == 'bicubic' else cfg.ckpt_path}"
    elif task == "faces":
        results, notes = evaluate_faces(cfg)
        title = f"face editing {cfg.ckpt_path}"
    else:
        raise ValueError(f"evaluate.py evaluates model=esrgan, model=bicubic or model=scfegan; got a model with "
                         f"task={task!r}")
    print_table(results, title, notes)
    if cfg.get("metrics_file"):
        os.makedirs(os.path.dirname(os.path.abspath(cfg.metrics_file)), exist_ok=True)
        tmp = f"{cfg.metrics_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, cfg.metrics_file)
        log.info(f"metrics written to {cfg.metrics_file}")
    log_to_loggers(cfg, results, title)
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
