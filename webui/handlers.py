"""What the app's buttons and API endpoints do, as plain functions (no Gradio): read and check the uploads, turn
the editor's layers into SC-FEGAN's mask / sketch / colour inputs, run ``inference.face_align.edit_photo`` (the
face found and aligned, or a crop around the mask; the network step ``inference.faces.run_network``, as predict.py)
/ ``inference.tiling.upscale``, and write the PNG result.

Every problem with what the user sent raises :class:`InputError` with a message meant for the page; the Gradio
layer (``app.py``) shows it there.  Reading goes through ``inference.images.read_image`` (alpha, gray and 16 bits kept), so
the editing result is composited on the file exactly as uploaded: outside the mask it equals it bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from inference.face_align import Face, detect_faces, edit_photo
from inference.faces import run_network
from inference.images import Image, read_color, read_image, read_mask, write_png
from inference.tiling import check_tile, upscale_tiles
from webui.models import ModelStore
from weights.registry_packages import RegistryPackageError

#: Editor layers, bottom to top: what each one means (webui/page.py names the layers in the same order).  "mask" is
#: the region to regenerate (the official GUI's "erase" mode; renamed so it is not taken for the editor's eraser,
#: which removes strokes).
LAYERS = ("mask", "sketch", "colour")


class InputError(ValueError):
    """A problem with what the user sent; the message is shown on the page."""


@dataclass
class Limits:
    max_upload_mb: float = 100.0  # also Gradio's ``max_file_size``; takes a max_pixels_sr PNG at 8 bits (RGBA: 64 MB)
    max_pixels_face: int = 4096 * 4096
    max_pixels_sr: int = 4096 * 4096  # input pixels; the x4 output has 16 times as many (upscaled tile by tile)
    sr_auto_tile: int = 512  # tile side (input pixels) when the page's tile is 0 and the image is larger


def _name(path: str) -> str:
    return os.path.basename(str(path))


def _short(msg: str, *paths) -> str:
    """``msg`` with the (server-side, temporary) paths replaced by the file names."""
    for p in paths:
        if p:
            msg = msg.replace(str(p), _name(p))
    return msg


def open_image(
    path: str | os.PathLike | None, what: str, max_pixels: int, limits: Limits | None = None, limit_key: str = ""
) -> Image:
    """Decode an upload with ``inference.images.read_image`` after checking its size; :class:`InputError` otherwise.

    The pixel count is read from the header first (PIL opens lazily), so a huge image is refused before it is
    decoded.
    """
    limits = limits or Limits()
    if path is None or str(path) == "":
        raise InputError(f"No {what}: upload an image first.")
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"The {what} {_name(path)!r} does not exist.")
    nbytes = os.path.getsize(path)
    if nbytes > limits.max_upload_mb * 1024 * 1024:
        raise InputError(
            f"The {what} {_name(path)!r} is {nbytes / 2**20:.1f} MB; the limit is "
            f"{limits.max_upload_mb:g} MB (app limits.max_upload_mb)."
        )
    try:
        with PILImage.open(path) as im:
            w, h = im.size
    except PILImage.DecompressionBombError:
        w, h = 1 << 16, 1 << 16  # over any sensible limit; refused below
    except Exception:  # noqa: BLE001  not for PIL; OpenCV may still read it (checked after decoding)
        w = h = None  # not for PIL; OpenCV may still read it (checked after decoding)
    if w is not None and w * h > max_pixels:
        raise InputError(
            f"The {what} {_name(path)!r} is {w}x{h} ({w * h / 1e6:.1f} megapixels); this app "
            f"accepts at most {max_pixels / 1e6:.1f} megapixels here (app {limit_key or 'limits'}). Crop or "
            "downscale it, or use predict.py."
        )
    try:
        img = read_image(path, what)
    except (ValueError, FileNotFoundError) as err:
        raise InputError(
            f"The {what} {_name(path)!r} is not an image this app can read (PNG, JPEG, BMP, WebP, "
            f"TIFF): {_short(str(err), path)}"
        ) from None
    h, w = img.size
    if h * w > max_pixels:
        raise InputError(
            f"The {what} {_name(path)!r} is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is "
            f"{max_pixels / 1e6:.1f}."
        )
    return img


def preview_rgb8(img: Image) -> np.ndarray:
    """uint8 HxWx3 for display (gray replicated, alpha dropped, 16 bits rounded): the editor's background."""
    return np.round(img.rgb01() * 255.0).astype(np.uint8)


def strokes_from_layers(layers, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(mask, sketch, colour) from the editor's RGBA layers in :data:`LAYERS` order.

    mask: any stroke coverage (alpha > 0), so the regenerated region is never smaller than drawn; sketch: alpha >= half
    (crisp lines); colour: the stroke's RGB in [0, 1] where alpha >= half, black elsewhere (SC-FEGAN's "no
    colour").  Missing layers count as empty.  Layers of another size than the image are an :class:`InputError`.
    """
    layers = list(layers or [])
    out = []
    for i, name in enumerate(LAYERS):
        layer = layers[i] if i < len(layers) else None
        if layer is None:
            out.append(None)
            continue
        a = np.asarray(layer)
        if a.shape[:2] != tuple(size):
            raise InputError(
                f"The {name} layer is {a.shape[1]}x{a.shape[0]} but the image is {size[1]}x{size[0]} "
                "(width x height): the strokes were not drawn on this image. Upload the image again (or pick it "
                "from the file box), then draw on it and Generate."
            )
        alpha = a[..., 3] if a.ndim == 3 and a.shape[2] == 4 else np.full(a.shape[:2], 255, np.uint8)
        if name == "mask":
            out.append(alpha > 0)
        elif name == "sketch":
            out.append(alpha >= 128)
        else:
            rgb = (a[..., :3].astype(np.float32) / 255.0) if a.ndim == 3 else np.repeat(a[..., None] / 255.0, 3, 2)
            out.append(np.where((alpha >= 128)[..., None], rgb, 0.0).astype(np.float32))
    mask, sketch, color = out
    if mask is None:
        mask = np.zeros(tuple(size), bool)
    if sketch is not None and not sketch.any():
        sketch = None
    if color is not None and not color.any():
        color = None
    return mask, sketch, color


#: Faces found in recent photos, keyed by their pixels' digest: detection (MTCNN, 0.1-0.2 s at 512x512) runs once per
#: photo, not per Generate, nor per ``/edit_face`` call on the same photo (each call uploads a new copy).
_FACES: dict[tuple, list[Face]] = {}
_FACES_LOCK = threading.Lock()
_FACES_KEPT = 16


def faces_in(image: Image) -> tuple[list[Face], str]:
    """The faces MTCNN finds in ``image`` (an upload), cached per pixel content; (faces, a note when detection is
    off)."""
    px = np.ascontiguousarray(image.pixels)
    key = (px.shape, px.dtype.str, image.full, hashlib.blake2b(px.data, digest_size=16).digest())
    with _FACES_LOCK:
        if key in _FACES:
            return _FACES[key], ""
    try:
        faces = detect_faces(image.pixels, full=image.full)
    except RegistryPackageError:  # the facenet-pytorch wheel neither installed nor cached, and no package index
        return [], " (face detector unavailable)"
    with _FACES_LOCK:
        while len(_FACES) >= _FACES_KEPT:
            _FACES.pop(next(iter(_FACES)))
        _FACES[key] = faces
    return faces, ""


def edit(
    store: ModelStore,
    image: Image,
    mask: np.ndarray,
    sketch=None,
    color=None,
    seed: int = 0,
    noise: str | None = None,
    faces: list[Face] | None = None,
) -> tuple[np.ndarray, str]:
    """``inference.face_align.edit_photo`` with the app's model, the network step ``inference.faces.run_network``
    (as predict.py); (pixels in the image's layout and dtype, a summary line naming the crop used).  ``faces``:
    detections to reuse (default: :func:`faces_in`, cached per upload; ``face.align: false`` in the config: none)."""
    if not mask.any():
        raise InputError(
            "Nothing to edit: the mask is empty. Draw over the part to regenerate in 'Mask' mode "
            "first (sketch and colour strokes only count inside it)."
        )
    fm = store.face()
    cfg = store.cfg
    align = bool(cfg.face.get("align", True))
    t0 = time.perf_counter()
    detector = ""
    if faces is None:
        faces, detector = faces_in(image) if align else ([], "")
    step = functools.partial(
        run_network,
        fm.net,
        bgr=fm.bgr,
        noise=str(noise or fm.noise),
        seed=int(seed),
        device=store.device,
        precision=str(cfg.precision),
    )
    try:
        res = edit_photo(image.pixels, mask, sketch, color, step, fm.size, full=image.full, faces=faces, align=align)
    except ValueError as err:  # e.g. the mask crop for a mask larger than the photo allows
        raise InputError(f"Cannot edit this image: {err}") from None
    dt = time.perf_counter() - t0
    h, w = image.size
    notes = []
    for name, strokes in (("sketch", sketch), ("colour", None if color is None else color.max(axis=2) > 0)):
        if strokes is not None and (strokes & ~mask).any():
            share = (strokes & ~mask).sum() / strokes.sum()
            notes.append(f"{share:.0%} of the {name} strokes lie outside the mask and were ignored")
    msg = (
        f"Edited {w}x{h} in {dt:.2f} s: {res.note}{detector}, network at {fm.size[1]}x{fm.size[0]}; "
        f"{mask.mean():.1%} of the pixels regenerated, the rest equal the input."
        + (" " + "; ".join(notes) + "." if notes else "")
    )
    return res.pixels, msg


def save_png(pixels: np.ndarray, out_dir: str | os.PathLike, stem: str, consume: bool = False) -> str:
    """``inference.images.write_png`` as ``<stem>.png`` in a fresh folder under ``out_dir`` (results of earlier
    requests are kept; the download keeps the plain name, not a time stamp); ``consume``: ``pixels`` may be
    reordered in place (no copy of a large result)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(stem).stem)[:80] or "image"
    folder = os.path.join(str(out_dir), f"{time.strftime('%H%M%S')}_{os.urandom(3).hex()}")
    os.makedirs(folder, exist_ok=True)
    return write_png(os.path.join(folder, f"{stem}.png"), pixels, in_place=consume)


def edited_stem(path) -> str:
    """The result's name for an edit of ``path``: face.png -> face_edited, face_edited.png -> face_edited2, then
    face_edited3 ... (an edit of an edit, "Use result as input")."""
    stem = Path(str(path)).stem
    m = re.fullmatch(r"(.+)_edited(\d*)", stem)
    if m is None:
        return f"{stem}_edited"
    return f"{m.group(1)}_edited{int(m.group(2) or 1) + 1}"


def edit_face_files(
    store: ModelStore,
    image_path,
    mask_path,
    sketch_path=None,
    color_path=None,
    seed: int = 0,
    out_dir: str = ".",
    limits: Limits | None = None,
) -> tuple[str, str]:
    """The ``/edit_face`` endpoint: image, mask, optional sketch and colour files (as ``predict.py`` takes them,
    same size as the image) -> (result PNG path, summary)."""
    limits = limits or Limits()
    image = open_image(image_path, "face image", limits.max_pixels_face, limits)
    if mask_path is None or str(mask_path) == "":
        raise InputError("No mask: give a mask image (white where the face is to be regenerated).")
    try:
        open_image(mask_path, "mask", limits.max_pixels_face, limits)  # readable and not huge
        mask = read_mask(str(mask_path), image.size, "mask")
        sketch = read_mask(str(sketch_path), image.size, "sketch") if sketch_path else None
        color = read_color(str(color_path), image.size) if color_path else None
    except (ValueError, FileNotFoundError) as err:
        raise InputError(_short(str(err), mask_path, sketch_path, color_path)) from None
    out, msg = edit(store, image, mask, sketch, color, seed)
    return save_png(out, out_dir, edited_stem(image_path)), msg


def edit_face_editor(
    store: ModelStore, image_path, editor_value, seed: int = 0, out_dir: str = ".", limits: Limits | None = None
) -> tuple[str, str]:
    """The Generate button: the uploaded file (kept as uploaded) and the editor's layers -> (PNG path, summary)."""
    limits = limits or Limits()
    image = open_image(image_path, "face image", limits.max_pixels_face, limits)
    layers = (editor_value or {}).get("layers") if isinstance(editor_value, dict) else None
    mask, sketch, color = strokes_from_layers(layers, image.size)
    out, msg = edit(store, image, mask, sketch, color, seed)
    return save_png(out, out_dir, edited_stem(image_path)), msg


#: Longest side of the images the page shows (the input, and the result when larger): a browser showing a
#: 256-megapixel PNG stalls; the download is the full result.
PREVIEW_SIDE = 2048


def preview(pixels: np.ndarray, max_side: int = PREVIEW_SIDE) -> np.ndarray:
    """``pixels`` shrunk (area average) so that its longest side is at most ``max_side`` (unchanged when it is)."""
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels
    f = max_side / max(h, w)
    import cv2

    return cv2.resize(pixels, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def upscale_file(
    store: ModelStore,
    image_path,
    alpha: float = 1.0,
    tile: int = 0,
    out_dir: str = ".",
    limits: Limits | None = None,
    progress=None,
    previews: list | None = None,
) -> tuple[str, str]:
    """The ``/upscale`` endpoint and the super-resolution tab: -> (PNG path, summary).  ``previews``: a list the
    page passes to receive the path of a :func:`preview` PNG of the result (the result's own path when small).  ``alpha``: network
    interpolation (0 = PSNR model, 1 = GAN model; ignored without PSNR weights); ``tile``: input tile side (0 =
    the whole image up to ``limits.sr_auto_tile`` pixels a side, tiles of that side above), with ``tile_pad`` from
    the config (``auto``: the exact receptive margin, so tiles do not change the result).

    Memory is bounded by the tile (``inference.tiling.upscale_tiles``; small tiles run a few at once on the CPU,
    within 1 GB: ``inference.tiling.plan_workers``): beside the network's work on the tile,
    the input as float32 and the output array itself (3 bytes per output pixel for 8-bit RGB).  The weights' own
    resize (``meta["outscale"]``, realesr-animevideov3-x2 / -x3) is applied, as by predict.py.
    ``progress(done, total)``: called after each tile."""
    limits = limits or Limits()
    alpha = float(alpha if alpha is not None else 1.0)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1] (0 = PSNR model, 1 = GAN model), got {alpha:g}.")
    tile = int(tile or 0)
    if tile < 0:
        raise InputError(f"tile must be >= 0 (0 = automatic), got {tile}.")
    image = open_image(image_path, "image", limits.max_pixels_sr, limits, limit_key="limits.max_pixels_sr")
    h, w = image.size
    side = tile or (0 if max(h, w) <= limits.sr_auto_tile else int(limits.sr_auto_tile))
    m = store.sr_at(alpha)
    t0 = time.perf_counter()
    try:
        check_tile(side, h, w, _name(image_path))
        out = upscale_tiles(
            m.net,
            image,
            m.scale,
            store.device,
            tile=side or max(h, w),
            tile_pad=store.cfg.sr.tile_pad,
            precision=str(store.cfg.precision),
            outscale=m.outscale,
            progress=progress,
        )
    except ValueError as err:  # e.g. odd sizes for x2 / x1 networks (pixel-unshuffle), tiles too small
        raise InputError(_short(str(err), image_path)) from None
    dt = time.perf_counter() - t0
    interp = f", alpha {alpha:g} (0 = PSNR, 1 = GAN)" if m.psnr_state is not None else ""
    s = m.out_scale
    how = f" (x{m.scale} network, then bicubic)" if s != m.scale else ""
    tiles = f", tiles of {side}" if side and max(h, w) > side else ""
    msg = f"x{s}{how}: {w}x{h} -> {w * s}x{h * s} in {dt:.2f} s{tiles}{interp}."
    stem = Path(str(image_path)).stem + f"_x{s}"
    small = preview(out) if previews is not None else out
    path = save_png(out, out_dir, stem, consume=True)
    if previews is not None:
        previews.append(path if small is out else save_png(small, out_dir, stem + "_preview"))
    return path, msg


# -- iterative editing: the mask as a PNG, grown or shrunk, put back into the editor ---------------------------------
#: Largest grow / shrink step in pixels (a disk of this radius; the distance transform's cost does not depend on it).
MAX_MASK_STEP = 1024


def resize_mask(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` grown (``n > 0``, dilation) or shrunk (``n < 0``, erosion) by ``|n|`` pixels with a disk.

    Grown: every pixel within Euclidean distance ``n`` of a mask pixel.  Shrunk: the mask pixels farther than ``|n|``
    from every pixel outside the mask; outside the photo counts as mask, so a mask reaching the border is not shrunk
    from it.  Exact: OpenCV's precise L2 distance transform (Felzenszwalb-Huttenlocher), not an approximate disk kernel.
    """
    mask = np.asarray(mask, bool)
    n = int(n)
    if n == 0 or not mask.any() or mask.all():
        return mask.copy()
    # distance from each nonzero pixel of ``src`` to the nearest zero one (zero pixels: 0)
    src = (~mask if n > 0 else mask).astype(np.uint8)
    d = cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return d <= n if n > 0 else d > -n


def mask_layer(mask: np.ndarray) -> np.ndarray:
    """The editor's mask layer for ``mask``: opaque white where True, transparent elsewhere (RGBA uint8)."""
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask] = 255
    return layer


def editor_with_mask(image: Image, editor_value, mask: np.ndarray) -> dict:
    """An editor value showing ``image`` with ``mask`` as its mask layer; the sketch and colour layers of
    ``editor_value`` are kept when they have the image's size (else they start empty)."""
    layers = (editor_value or {}).get("layers") if isinstance(editor_value, dict) else None
    layers = list(layers or [])
    kept = []
    for i in (1, 2):
        a = layers[i] if i < len(layers) else None
        a = None if a is None else np.asarray(a)
        ok = a is not None and a.ndim == 3 and a.shape[2] == 4 and a.shape[:2] == mask.shape
        kept.append(a if ok else np.zeros((*mask.shape, 4), np.uint8))
    return {"background": preview_rgb8(image), "layers": [mask_layer(mask), *kept], "composite": None}


def _editor_mask(image: Image, editor_value) -> np.ndarray:
    layers = (editor_value or {}).get("layers") if isinstance(editor_value, dict) else None
    return strokes_from_layers(layers, image.size)[0]


def mask_png(image_path, editor_value, out_dir: str = ".", limits: Limits | None = None) -> tuple[str, str]:
    """ "Download mask": the editor's mask layer as a PNG the size of the photo (uint8, 255 = regenerate, 0 = keep),
    the file ``predict.py mask=`` and ``/edit_face`` take -> (PNG path, summary)."""
    limits = limits or Limits()
    image = open_image(image_path, "face image", limits.max_pixels_face, limits)
    mask = _editor_mask(image, editor_value)
    h, w = image.size
    path = save_png(mask.astype(np.uint8) * 255, out_dir, Path(str(image_path)).stem + "_mask")
    return path, f"Mask of {_name(image_path)}: {w}x{h} PNG, {mask.mean():.1%} of the pixels white (regenerated)."


def load_mask_png(image_path, editor_value, mask_path, limits: Limits | None = None) -> tuple[dict, str]:
    """A mask file (white = regenerate: any channel at least half of full scale, as ``predict.py``) becomes the
    editor's mask layer; it must have the photo's size.  -> (editor value, summary)."""
    limits = limits or Limits()
    image = open_image(image_path, "face image", limits.max_pixels_face, limits)
    if mask_path is None or str(mask_path) == "":
        raise InputError("No mask file: upload a PNG the size of the photo (white = regenerate).")
    m = open_image(mask_path, "mask", limits.max_pixels_face, limits)
    h, w = image.size
    if m.size != image.size:
        raise InputError(
            f"The mask {_name(mask_path)!r} is {m.size[1]}x{m.size[0]} but the photo {_name(image_path)!r} is "
            f"{w}x{h} (width x height): upload a mask of the photo's size."
        )
    p = m.pixels if m.gray else m.pixels[..., :3].max(axis=2)
    mask = p.astype(np.float32) >= 0.5 * m.full  # as inference.images.read_mask (predict.py mask=)
    return editor_with_mask(image, editor_value, mask), (
        f"Mask {_name(mask_path)} loaded: {mask.mean():.1%} of the pixels (Mask layer; sketch and colour kept)."
    )


def resize_editor_mask(image_path, editor_value, n, limits: Limits | None = None) -> tuple[dict, str]:
    """ "Grow" (``n > 0``) / "Shrink" (``n < 0``) the editor's mask layer by ``|n|`` pixels (:func:`resize_mask`)
    -> (editor value, summary); the sketch and colour layers are kept."""
    limits = limits or Limits()
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InputError(f"The number of pixels must be a whole number, got {n!r}.") from None
    if n == 0 or abs(n) > MAX_MASK_STEP:
        raise InputError(f"The number of pixels must be between 1 and {MAX_MASK_STEP}, got {abs(n)}.")
    image = open_image(image_path, "face image", limits.max_pixels_face, limits)
    mask = _editor_mask(image, editor_value)
    if not mask.any():
        raise InputError("The mask is empty: draw it in 'Mask' mode or upload a mask PNG first.")
    out = resize_mask(mask, n)
    verb = "grown" if n > 0 else "shrunk"
    return editor_with_mask(image, editor_value, out), (
        f"Mask {verb} by {abs(n)} px: {mask.mean():.1%} -> {out.mean():.1%} of the pixels."
    )
