"""Face-editing (SC-FEGAN) rows: synthesised inputs, user masks, mask-coverage bins."""

import warnings
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import track

from datamodules.sr_datamodule import folder_name
from evaluation.generators import load_generator, prefer_key
from evaluation.scoring import RowMeans, build_fid_metric, build_lpips_metric, lpips_scores, new_fid
from inference.device import pick_device
from metrics.sr_metrics import tensor_to_uint8

FACE_COLUMNS = ("l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask")
EVAL_DATA_KEYS = ("test_dir", "test_label_dir", "user_mask_dir")  # conf/eval.yaml's additions to `data`


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
    dm, ds, name = build_face_data(cfg)
    user_masks = find_user_masks(cfg.data.user_mask_dir, ds.files) if cfg.data.get("user_mask_dir") else None
    notes: list[str] = []
    dm.synthesis.noise_type = face_noise_type(cfg, dm, notes)
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
    rows = {k: RowMeans() for k in keys}
    fid_keys = [k for k in keys if k == name or not k.startswith(f"{name}/cov_")]  # too few images per bin for FID
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

    results = {
        k: rows[k].result(columns if k in fids or not fids else columns[:-1])
        for k in keys
        if rows[k].images or not k.startswith(f"{name}/cov_")
    }
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
