"""Face-editing (SC-FEGAN) rows: synthesised inputs, user masks, mask-coverage bins."""

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import track

from datamodules.sr_datamodule import folder_name
from evaluation.generators import load_generator, prefer_key
from evaluation.mask_sets import read_mask_sets
from evaluation.scoring import RowMeans, build_fid_metric, build_lpips_metric, lpips_scores, new_fid
from inference.device import pick_device
from metrics.sr_metrics import tensor_to_uint8
from synthesis.mask_presets import coverage_bin

FACE_COLUMNS = ("l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask")
# The mask-set rows' bins: 10 %-wide, (lo, hi] (the first also takes 0), as LaMa's evaluator groups masks by area
# (saicinpainting/evaluation/evaluator.py, 10 % bins) and as scripts/make_eval_masks.py counts them.
MASK_SET_BINS = [(k / 10, (k + 1) / 10) for k in range(10)]
EVAL_DATA_KEYS = ("test_dir", "test_label_dir", "user_mask_dir")  # conf/eval.yaml's additions to `data`
log = logging.getLogger(__name__)


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


def face_sketch_settings(cfg: DictConfig, notes: list[str]) -> dict:
    """The sketch detector G's inputs are drawn with, as ``synthesis.sketch`` overrides (issue 22).

    ``sketch_detector=auto`` (eval.yaml): the data config's ``synthesis.sketch.detector`` when it names one, else the
    detector the weights record (``meta.sketch_detector``: what the model was trained on; a model trained on HED
    sketches sees another input distribution with classic ones), else the data config's ``auto``.  An explicit
    ``sketch_detector=classic|hed|canny|dexined`` wins; a choice other than the recorded one warns.  HED weights:
    the data config's ``synthesis.sketch.hed_weights``, else the recorded named source (``hed-bsds500``; a path
    recorded in a file is never followed)."""
    from synthesis.sketch import DETECTORS
    from weights.hed_keras import HED_SOURCES
    from weights.io import read_generator_file

    meta = read_generator_file(cfg.ckpt_path, prefer=prefer_key(cfg)).meta
    recorded = meta.get("sketch_detector")
    if recorded is not None and recorded not in DETECTORS[1:]:
        raise ValueError(
            f"weights {cfg.ckpt_path}: meta.sketch_detector={recorded!r} is not one of {DETECTORS[1:]} "
            "(give sketch_detector=... to choose one)"
        )
    sketch_cfg = (face_data_config(cfg).get("synthesis") or {}).get("sketch") or {}
    configured = sketch_cfg.get("detector", "auto")
    requested = cfg.get("sketch_detector", "auto")
    if requested not in (None, "auto"):
        if requested not in DETECTORS[1:]:
            raise ValueError(f"sketch_detector={requested!r}: expected auto or one of {DETECTORS[1:]}")
        chosen, source = requested, f"sketch_detector={requested}"
    elif configured not in (None, "auto"):
        chosen, source = configured, f"the data config's synthesis.sketch.detector={configured}"
    elif recorded is not None:
        chosen, source = recorded, "recorded with the weights"
    else:
        notes.append("sketch: the data config's synthesis.sketch (the weights record no sketch_detector)")
        return {}
    if recorded is not None and chosen != recorded:
        warnings.warn(
            f"sketch detector {chosen!r} ({source}) but weights {cfg.ckpt_path} were trained on {recorded!r} "
            "sketches: the model sees another input distribution than in training",
            stacklevel=2,
        )
    out = {"detector": chosen}
    if chosen == "hed" and not sketch_cfg.get("hed_weights"):
        named = meta.get("sketch_hed_weights")
        if named not in HED_SOURCES:
            raise ValueError(
                f"sketch detector hed ({source}) needs HED weights: the data config sets no synthesis.sketch.hed_weights "
                f"and weights {cfg.ckpt_path} record {named!r}, not one of the named sources {sorted(HED_SOURCES)}; "
                "give face_data.synthesis.sketch.hed_weights=... (or data.synthesis.sketch.hed_weights=...)"
            )
        out["hed_weights"] = named
    notes.append(
        f"sketch: {chosen} ({source}; the weights record {recorded!r})"
        + (f", HED weights {out['hed_weights']} (recorded)" if "hed_weights" in out else "")
    )
    log.info(notes[-1])
    return out


def build_face_data(cfg: DictConfig, sketch: dict | None = None):
    """``(datamodule, dataset, row name)``: the images of ``data.test_dir``, or the face config's held-out split.
    ``sketch``: overrides of ``synthesis.sketch`` (:func:`face_sketch_settings`)."""
    fcfg = face_data_config(cfg)
    test_dir = cfg.data.get("test_dir")
    kwargs = dict(hflip=False, pin_memory=False, persistent_workers=False)
    if test_dir:
        kwargs.update(image_dir=str(test_dir), label_dir=cfg.data.get("test_label_dir"), split_file=None)
    fc = OmegaConf.to_container(fcfg, resolve=True)
    for key in EVAL_DATA_KEYS:  # eval.yaml adds these to every data config; the data module does not take them
        fc.pop(key, None)
    if sketch:
        if not isinstance(fc.get("synthesis"), dict):
            raise ValueError("the face data config has no synthesis settings to draw the sketches with")
        fc["synthesis"]["sketch"] = {**(fc["synthesis"].get("sketch") or {}), **sketch}
    dm = instantiate(fc, **kwargs)
    if test_dir:
        from datamodules.image_io import filter_images, list_images

        files = filter_images(list_images(test_dir), dm.min_size, dm.on_bad_image)
        return dm, dm._dataset(files, train=False), folder_name(str(test_dir))
    if cfg.data.get("task") != "faces":
        raise ValueError(
            "model=scfegan: give the test images with data.test_dir=DIR (or a face data config, e.g. "
            "data=celeba_hq, whose held-out split is then evaluated)"
        )
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
        raise FileNotFoundError(
            f"no mask in {str(root)!r} has the name of a test image (e.g. {files[0].stem}.png; white = erased)"
        )
    if len(found) < len(files):
        missing = [f.name for i, f in enumerate(files) if i not in found]
        warnings.warn(
            f"{len(missing)} of {len(files)} test images have no user mask in {str(root)!r} "
            f"(e.g. {missing[0]}); the user-mask row covers the other {len(found)}",
            stacklevel=2,
        )
    return found


def read_user_mask(path: Path, image_path: Path, resolution: int) -> torch.Tensor:
    """``[1, R, R]`` float mask, 1 = erased (white), from a user mask drawn on its image (same aspect ratio)."""
    import cv2

    from datamodules.image_io import image_size, read_image

    m = read_image(path).mean(axis=2)  # gray, RGB or RGBA files alike
    ih, iw = image_size(image_path)
    mh, mw = m.shape
    if mh * iw != mw * ih:
        raise ValueError(
            f"user mask {path} is {mw}x{mh} but its image {image_path.name} is {iw}x{ih} (the aspect ratios must match)"
        )
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


class SketchOncePerBatch(torch.nn.Module):
    """A sketch extractor that draws each batch's whole-image sketch once: the synthesised row, the user-stroke,
    user-mask and every mask-set row all ask for the sketch of the same image tensor (HED: ~1 s CPU per 128-px face).
    The last input is held (so its identity cannot be reused by a new tensor) and its version counter compared, so
    an image changed in place is drawn again."""

    def __init__(self, sketch: torch.nn.Module):
        super().__init__()
        self.inner = sketch
        self._last: tuple | None = None

    def __getattr__(self, name):  # detector, hed_weights, ... of the wrapped extractor
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        last = self._last
        if last is not None and last[0] is image and last[1] == image._version:
            return last[2]
        out = self.inner(image)
        self._last = (image, image._version, out)
        return out


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
    from inference.faces import resolve_noise
    from synthesis.pipeline import NOISE_TYPES as SYNTH_NOISE
    from weights.io import read_generator_file

    meta = read_generator_file(cfg.ckpt_path, prefer=prefer_key(cfg)).meta
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
    return FaceInputSynthesizer(
        mask=mask,
        sketch=base.sketch,
        color=base.color,
        noise_type=base.noise_type,
        eye_positions=base.eye_positions,
        eye_reference_size=base.eye_reference_size,
        l_eye_label=base.l_eye_label,
        r_eye_label=base.r_eye_label,
        seed=base.seed,
    )


@torch.no_grad()
def evaluate_faces(cfg: DictConfig) -> tuple[dict[str, dict], list[str]]:
    from torch.utils.data import DataLoader

    from archs.scfegan_generator import composite, make_generator_input
    from datamodules.samplers import collate_skipping_bad
    from metrics.inpainting_metrics import inpainting_metrics

    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=... is required for model=scfegan (a .ckpt of this project or generator weights)")
    device = pick_device(cfg.device)
    net = load_generator(cfg, cfg.ckpt_path, device)
    notes: list[str] = []
    dm, ds, name = build_face_data(cfg, sketch=face_sketch_settings(cfg, notes))
    user_masks = find_user_masks(cfg.data.user_mask_dir, ds.files) if cfg.data.get("user_mask_dir") else None
    dm.synthesis.noise_type = face_noise_type(cfg, dm, notes)
    dm.synthesis.sketch = SketchOncePerBatch(dm.synthesis.sketch)
    strokes = user_stroke_synthesizer(cfg, dm)
    bins = coverage_bins(cfg)
    lpips = build_lpips_metric(cfg, device)
    fid_main = build_fid_metric(cfg, device, notes)
    keys = (
        [name]
        + [bin_key(name, lo, hi) for lo, hi in bins]
        + ([f"{name}/user_strokes"] if strokes else [])
        + ([f"{name}/user_masks"] if user_masks else [])
    )
    mask_sets = read_mask_sets(cfg.get("eval_masks"), ds.resolution, len(ds))
    for ms in mask_sets:
        keys.append(f"{name}/{ms.preset}")
        keys += [bin_key(f"{name}/{ms.preset}", lo, hi) for lo, hi in MASK_SET_BINS]
    set_keys = {f"{name}/{ms.preset}" for ms in mask_sets}
    rows = {k: RowMeans() for k in keys}
    # Inception features per image of the mask-set rows (GT once, output per set): FID and KID per preset and per bin.
    feats: dict[str, dict[str, list]] = {ms.preset: {"real": [], "fake": [], "bin": []} for ms in mask_sets}
    set_rows = [k for k in keys if any(k == sk or k.startswith(sk + "/cov_") for sk in set_keys)]
    # Too few images per bin for FID; the mask-set rows get theirs from stored features (mask_set_scores).
    fid_keys = [k for k in keys if k == name or not (k.startswith(f"{name}/cov_") or k in set_rows)]
    fids = {k: (fid_main if i == 0 else new_fid(fid_main)) for i, k in enumerate(fid_keys)} if fid_main else {}
    columns = ("coverage",) + FACE_COLUMNS + (("lpips",) if lpips is not None else ()) + (("fid",) if fids else ())

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
        return values, out01, gt01

    loader = DataLoader(
        ds, batch_size=dm.val_batch_size, shuffle=False, num_workers=dm.num_workers, collate_fn=collate_skipping_bad
    )  # undecodable files: skipped, warned about by name
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
        real_feats = None
        for ms in mask_sets:
            idx = [int(i) for i in batch["index"].view(-1).tolist()]
            mask = torch.stack([ms.mask(i) for i in idx]).to(device)
            key = f"{name}/{ms.preset}"
            values, out01, gt01 = score(key, user_mask_inputs(dm, batch, mask))
            where = [coverage_bin(c) for c in values["coverage"]]
            for k, (lo, hi) in enumerate(MASK_SET_BINS):
                sel = [i for i in range(len(where)) if where[i] == k]
                if sel:
                    add(rows[bin_key(key, lo, hi)], values, sel)
            if fid_main is not None:
                if real_feats is None:
                    real_feats = fid_main.inception(tensor_to_uint8(gt01, as_uint8=True)).double().cpu()
                feats[ms.preset]["real"].append(real_feats)
                feats[ms.preset]["fake"].append(
                    fid_main.inception(tensor_to_uint8(out01, as_uint8=True)).double().cpu()
                )
                feats[ms.preset]["bin"] += where

    set_columns = columns[: -1 if fids else None] + (("fid", "kid", "kid_std") if fids else ())
    results = {
        k: rows[k].result(set_columns if k in set_rows else columns if k in fids or not fids else columns[:-1])
        for k in keys
        if rows[k].images or ("/cov_" not in k)
    }
    if mask_sets:
        notes += mask_set_scores(cfg, name, mask_sets, feats, results, fids)
    for k, fid in fids.items():
        if rows[k].images >= 2:
            results[k]["fid"] = float(fid.compute())
        else:
            results[k]["fid"] = None
            notes.append(f"FID of {k} is undefined with fewer than 2 images.")
    notes.append(
        f"masks: synthesised with seed {dm.seed} + val_seed_offset {dm.val_seed_offset}, epoch "
        f"{dm.val_epoch} (fixed); images at {ds.resolution}x{ds.resolution}; region metrics inside the mask."
    )
    if bins:
        notes.append(
            f"rows {name}/cov_<lo>-<hi>%: the same images grouped by mask coverage (Liu et al. 2018 "
            "categories, (lo, hi]); empty bins are left out; no FID per bin (too few images)."
        )
    if strokes is not None:
        notes.append(
            f"row {name}/user_strokes: user-stroke masks (a few strokes over one face part, colour only "
            "along thinner strokes inside; synthesis.masks.UserStrokeMask)."
        )
    if lpips is None:
        notes.append("LPIPS off (metrics.lpips.enabled=true adds it; it needs the backbone weights).")
    return results, notes


def mask_set_scores(cfg: DictConfig, name: str, mask_sets, feats: dict, results: dict, fids: dict) -> list[str]:
    """FID and KID of every mask-set row (a preset, and each of its 10 % bins) from the stored Inception features;
    returns the notes that say how."""
    from metrics.fid import fid_from_features, kid_from_features

    fid_cfg = (cfg.get("metrics") or {}).get("fid") or {}
    kid_cfg = (cfg.get("metrics") or {}).get("kid") or {}
    min_fid = int(fid_cfg.get("min_images", 50))
    subsets, subset_size = int(kid_cfg.get("subsets", 100)), int(kid_cfg.get("subset_size", 1000))
    notes = []
    for ms in mask_sets:
        key = f"{name}/{ms.preset}"
        if fids:
            f = feats[ms.preset]
            real, fake, where = torch.cat(f["real"]), torch.cat(f["fake"]), torch.tensor(f["bin"])
            groups = [(key, torch.ones_like(where, dtype=torch.bool))]
            groups += [(bin_key(key, lo, hi), where == k) for k, (lo, hi) in enumerate(MASK_SET_BINS)]
            for row_key, sel in groups:
                if row_key not in results:
                    continue
                n = int(sel.sum())
                row = results[row_key]
                row["fid"] = fid_from_features(real[sel], fake[sel]) if n >= max(min_fid, 2) else None
                if n >= 2:
                    row["kid"], row["kid_std"] = kid_from_features(real[sel], fake[sel], subsets, subset_size)
                else:
                    row["kid"] = row["kid_std"] = None
        notes.append(
            f"rows {key} and {key}/cov_<lo>-<hi>%: the {ms.preset} masks of {ms.folder} (seed {ms.seed}, "
            f"{ms.generator_version}, SHA-256 checked), mask k on test image k (sorted names); bins 10 %-wide, (lo, hi]."
        )
    if fids and mask_sets:
        notes.append(
            f"mask-set rows: FID only for rows of at least {max(min_fid, 2)} images (metrics.fid.min_images; the "
            "2048-d FID is strongly biased on small sets), else n/a; KID for every row of >= 2 images: torchmetrics' "
            f"unbiased MMD^2 estimator, {subsets} subsets of min({subset_size}, images) (metrics.kid)."
        )
    return notes
