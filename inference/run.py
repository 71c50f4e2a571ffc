"""Inference with the trained (or published) generators, and export: ``predict(cfg)``, what predict.py runs.

    python predict.py model=esrgan weights=PATH input=FILE_OR_DIR output=DIR [tile=256 tile_pad=auto] [precision=bf16]
    python predict.py model=scfegan weights=G.pth input=face.png mask=mask.png sketch=sketch.png color=color.png output=out.png
    python predict.py model=esrgan weights=PATH export=onnx|torchscript|safetensors export_path=G.onnx

``predict(cfg)`` is a plain function the tests call; predict.py is its ``@hydra.main`` wrapper (README
"Predict and export").

ESRGAN (x4, or whatever scale the weights have): PNG out with the input's name; RGB stays RGB, grayscale stays
grayscale (the gray image is replicated to RGB for the network and the result converted back with BT.601
weights, as Real-ESRGAN does), RGBA keeps an alpha channel upscaled separately (``alpha_upsampler``), 16-bit
inputs give 16-bit outputs (float inputs too).  Large images go through tiles; with ``tile_pad`` at least the
network's receptive margin (``tile_pad=auto``) the tiled result equals the untiled one up to float rounding.

SC-FEGAN: photos of any size go through ``inference.face_align.edit_photo``: the face is found (MTCNN) and
aligned as CelebA-HQ (``align=true``), or without a face (or with ``align=false``) a crop around the mask is
taken; that crop is edited at the network's size with the official demo's encodings (demo.py:58-186) and the
generated pixels are pasted back only where the mask is set: outside it the result equals the input, bit for bit.
"""

import functools
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.progress import track

from datamodules.image_io import IMG_EXTENSIONS, list_images
from inference.device import check_precision, pick_device
from inference.face_align import detect_faces, edit_photo
from inference.faces import bgr_of, resolve_noise, run_network, working_size
from inference.images import DEFAULT_MAX_PIXELS, quantize, read_color, read_image, read_mask, write_png
from inference.outputs import check_outputs, output_clashes
from inference.tiling import image_channels, upscale
from ops.imresize import imresize
from weights.io import build_generator
from weights.named import resolve_weights
from weights.registry_packages import RegistryPackageError

log = logging.getLogger(__name__)


def _collect_inputs(inp: str) -> tuple[list[Path], Path | None]:
    p = Path(os.path.expanduser(str(inp)))
    if p.is_dir():
        return list_images(p, recursive=True), p
    if p.is_file():
        return [p], None
    raise FileNotFoundError(
        f"input {str(p)!r} does not exist (give an image file or a folder of images; "
        f"extensions {', '.join(IMG_EXTENSIONS)})"
    )


def _max_pixels(cfg: DictConfig) -> int | None:
    v = cfg.get("max_pixels", DEFAULT_MAX_PIXELS)
    if v in (None, 0):
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = -1
    if n < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels or null (no limit), got {v!r}")
    return n


def _default_output(cfg: DictConfig) -> str:
    if cfg.get("output"):
        return os.path.expanduser(str(cfg.output))
    return os.path.join(str(cfg.paths.output_dir), "predictions")


def load_model(cfg: DictConfig, kind: str):
    """(generator in eval mode, GeneratorFile) from ``cfg.weights``: a file, or a name of
    ``weights.named.NAMED_MODELS`` (converted from the registry package's files and cached on first use).
    ESRGAN without ``weights=``: ``default_sr_weights`` (conf/predict.yaml: Real-ESRGAN x4plus)."""
    weights = cfg.get("weights") or (cfg.get("default_sr_weights") if kind == "esrgan" else None)
    if not weights:
        raise ValueError(f"weights=PATH is required for model={kind}")
    defaults = None
    if kind == "scfegan" and cfg.model.get("generator") is not None:
        defaults = OmegaConf.to_container(cfg.model.generator, resolve=True)
    return build_generator(
        resolve_weights(weights),
        kind=kind,
        prefer="params_ema" if cfg.get("use_ema", True) else "params",
        defaults=defaults,
    )


def predict_sr(cfg: DictConfig) -> list[str]:
    device = pick_device(cfg.device)
    precision = str(cfg.get("precision", "fp32"))
    check_precision(precision, device)
    files, root = _collect_inputs(cfg.input) if cfg.get("input") else (None, None)
    if files is None:
        raise ValueError("input=FILE_OR_DIR is required")
    if cfg.model.get("name") == "bicubic":
        scale = int(cfg.data.scale)
        net = lambda x: imresize(x, scale)  # noqa: E731
        name = f"bicubic x{scale}"
        outscale = None
    else:
        net, info = load_model(cfg, "esrgan")
        net.to(device)
        scale = net.scale
        name = f"{info.path} ({info.meta.get('layout', info.container)}, {info.generator})"
        channels = image_channels(net)
        if channels != (3, 3):
            raise ValueError(
                f"{cfg.weights}: predict.py runs 3-channel (RGB) networks; this one has "
                f"{channels[0]} in / {channels[1]} out"
            )
        outscale = info.meta.get("outscale")  # e.g. animevideov3-x2: the x4 network, then a bicubic resize
    out_dir = Path(_default_output(cfg))
    targets = [out_dir / ((f.relative_to(root) if root else Path(f.name)).with_suffix(".png")) for f in files]
    clashes = output_clashes(targets)
    if clashes:
        raise ValueError(
            f"several inputs would be written to the same output file(s) {sorted(clashes)[:3]} "
            "(same name, different extensions); rename them"
        )
    check_outputs(files, targets, root, out_dir, bool(cfg.get("overwrite", False)))
    log.info(f"x{scale} super-resolution with {name}, {len(files)} image(s) -> {out_dir}")
    max_pixels = _max_pixels(cfg)
    written = []
    for src, dst in track(list(zip(files, targets)), description="predict", transient=True, disable=len(files) < 2):
        img = read_image(src, max_pixels=max_pixels)
        pixels = upscale(
            net,
            img,
            scale,
            device,
            cfg.get("tile", "auto"),
            cfg.get("tile_pad", "auto"),
            precision,
            str(cfg.get("alpha_upsampler", "bicubic")),
            max_memory=cfg.get("max_memory", "auto"),
            outscale=outscale,
        )
        written.append(write_png(dst, pixels))
    log.info(f"wrote {len(written)} image(s) to {out_dir}")
    return written


def predict_faces(cfg: DictConfig) -> list[str]:
    if not cfg.get("input"):
        raise ValueError("input=FACE_IMAGE is required for model=scfegan")
    if not cfg.get("mask"):
        raise ValueError("mask=MASK_IMAGE is required for model=scfegan (white where the face is to be edited)")
    dst = _default_output(cfg)
    if os.path.isdir(dst) or not os.path.splitext(dst)[1]:
        dst = os.path.join(dst, Path(str(cfg.input)).stem + ".png")
    if not dst.lower().endswith(".png"):
        raise ValueError(f"output {dst!r}: predict.py writes PNG files (lossless, so unmasked pixels stay exact)")
    given = [os.path.expanduser(str(cfg[k])) for k in ("input", "mask", "sketch", "color") if cfg.get(k)]
    check_outputs(given, [dst], None, os.path.dirname(os.path.abspath(dst)), bool(cfg.get("overwrite", False)))
    max_pixels = _max_pixels(cfg)
    image = read_image(os.path.expanduser(str(cfg.input)), "input image", max_pixels)
    mask = read_mask(os.path.expanduser(str(cfg.mask)), image.size, "mask", max_pixels)
    sketch = (
        read_mask(os.path.expanduser(str(cfg.sketch)), image.size, "sketch", max_pixels) if cfg.get("sketch") else None
    )
    color = read_color(os.path.expanduser(str(cfg.color)), image.size, max_pixels) if cfg.get("color") else None
    device = pick_device(cfg.device)
    precision = str(cfg.get("precision", "fp32"))
    check_precision(precision, device)
    net, info = load_model(cfg, "scfegan")
    net.to(device)
    hw = working_size(cfg.get("size", "auto"), info.meta)
    bgr = bgr_of(cfg, info.meta)
    if not mask.any():
        log.warning(f"mask {cfg.mask!r} is empty (no pixel >= half scale): the output equals the input")
    noise = resolve_noise(cfg.get("noise", "auto"), info.meta, f"weights {info.path}")
    align = cfg.get("align", True)
    if not isinstance(align, bool):
        raise ValueError(f"align must be true or false, got {align!r}")
    step = functools.partial(
        run_network, net, bgr=bgr, noise=noise, seed=int(cfg.get("seed", 0)), device=device, precision=precision
    )
    if mask.any():
        faces = []
        if align:
            try:
                faces = detect_faces(image.pixels, full=image.full)
            except RegistryPackageError as err:  # the wheel neither installed nor in the cache, and no index
                log.warning(f"face detector unavailable ({err}); editing the crop around the mask")
        edited = edit_photo(image.pixels, mask, sketch, color, step, hw, full=image.full, faces=faces, align=align)
        out, note = edited.pixels, edited.note
    else:  # nothing to regenerate: the input as written (float files as 16-bit, as edit_photo would)
        out = image.pixels if image.full != 1.0 else quantize(image.pixels, 1.0)
        note = "empty mask"
    write_png(dst, out)
    log.info(
        f"edited {cfg.input} at {hw[1]}x{hw[0]}: {note} ({'BGR' if bgr else 'RGB'} weights {info.path}, "
        f"noise {noise}) -> {dst}"
    )
    return [dst]


# ---------------------------------------------------------------------------------------------------------------
def predict(cfg: DictConfig) -> list[str]:
    """Run the prediction (or the export) ``cfg`` describes; returns the files written."""
    task = cfg.model.get("task")
    if cfg.get("export"):
        from weights.export import export_file

        if cfg.model.get("name") == "bicubic":
            raise ValueError("model=bicubic has no network to export")
        kind = {"sr": "esrgan", "faces": "scfegan"}.get(task, "auto")
        defaults = OmegaConf.to_container(cfg.model.generator, resolve=True) if kind == "scfegan" else None
        path = export_file(
            resolve_weights(cfg.weights) if cfg.get("weights") else _missing_weights(),
            str(cfg.export),
            cfg.get("export_path"),
            kind=kind,
            prefer="params_ema" if cfg.get("use_ema", True) else "params",
            defaults=defaults,
            opset=int(cfg.get("opset", 17)),
            overwrite=bool(cfg.get("overwrite", False)),
        )
        log.info(f"exported {cfg.weights} as {cfg.export} -> {path}")
        return [path]
    if task == "sr":
        return predict_sr(cfg)
    if task == "faces":
        return predict_faces(cfg)
    raise ValueError(f"predict.py runs model=esrgan, model=bicubic or model=scfegan; got task={task!r}")


def _missing_weights():
    raise ValueError("export needs weights=PATH")
