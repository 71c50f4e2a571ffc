"""The app's page (Gradio): the two tabs, their controls and the API endpoints; app.py launches it.

``build_app(cfg)`` returns the ``gr.Blocks`` (the tests launch it on a free port).  The work is done by
``webui.handlers`` (plain functions around ``inference.face_align.edit_photo`` / ``inference.tiling.upscale``):

- ``/edit_face`` (image, mask, sketch, color, seed) -> (PNG file, summary): mask / sketch / colour files as
  ``predict.py`` takes them (same size as the image; sketch and colour optional).
- ``/upscale`` (image, alpha, tile) -> (PNG file, summary).

Face editing: the editor has three layers, one per mode of the official SC-FEGAN GUI (erase = mask, sketch
lines, colour strokes); the mode buttons select the layer and its brush.  Undo / redo / clear are the editor's
own.  The result is composited on the uploaded file itself (not on the editor's re-rendered canvas), so outside
the mask it equals the upload bit for bit.
"""

import logging
import os
import re
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no telemetry requests

import gradio as gr
from omegaconf import DictConfig, OmegaConf

from webui.editor import (
    COMMIT_JS,
    EDITOR_HEAD,
    LOADED_JS,
    LOADING_JS,
    WAIT_FOR_STROKES_JS,
    StrokeStore,
    send_strokes_to,
)
from webui.handlers import (
    InputError,
    Limits,
    edit_face_editor,
    edit_face_files,
    open_image,
    preview,
    preview_rgb8,
    upscale_file,
)
from webui.models import MissingWeights, ModelStore

log = logging.getLogger(__name__)

# Modes of the official GUI = layers of the editor, bottom to top (webui.handlers.LAYERS).  In the erase and
# sketch layers any stroke counts whatever its colour; in the colour layer the stroke's colour is the input.
MODES = {"Erase": "erase", "Sketch": "sketch", "Colour": "colour"}
LAYER_NAMES = list(MODES.values())
# One brush for all modes: changing the brush from the server re-renders the editor, and strokes drawn while it
# re-initialises are lost (observed with Gradio 6.31 on a loaded machine), so the mode buttons only switch layers
# (in the browser).  White / black first for erasing and sketching, then face colours; the picker gives any other.
BRUSH = gr.Brush(
    colors=["#ffffff", "#000000", "#e0ac8a", "#b5785a", "#6b3e26", "#2b1a12", "#c2185b", "#3f6fb5"],
    default_color="#ffffff",
    color_mode="defaults",
    default_size=6,
)

# Selects the mode's layer in the editor's layer menu (its buttons are labelled layer-1..3, bottom to top), then
# the mode's brush colour among the swatches, as clicks in the page (Gradio 6.31's editor DOM; the browser test
# checks both).
_SELECT_LAYER_JS = """(mode) => {
  const idx = {"Erase": 1, "Sketch": 2, "Colour": 3}[mode];
  const want = {"Erase": "rgb(255, 255, 255)", "Sketch": "rgb(0, 0, 0)", "Colour": "rgb(224, 172, 138)"}[mode];
  const root = document.querySelector('#face-editor');
  if (!root) return mode;
  const q = (sel) => root.querySelector(sel);
  const toggle = () => q('.layer-title-button');
  const isOpen = () => { const w = q('.layer-wrap'); return w && !w.classList.contains('closed'); };
  const later = (fn, tries) => { if (!fn() && tries > 0) setTimeout(() => later(fn, tries - 1), 30); };
  // 1. the layer (the menu renders asynchronously: slow machines need several tries)
  if (!isOpen() && toggle()) toggle().click();
  later(() => {
    const b = q('button[aria-label="layer-' + idx + '"]');
    if (!b) return false;
    b.click();
    setTimeout(() => {
      if (isOpen() && toggle()) toggle().click();
      // 2. the mode's default brush colour (white erase, black sketch, a skin tone for colour)
      const c = q('button[aria-label="Color"]');
      if (!c || c.style.color === want) return;
      c.click();
      later(() => {
        const sw = [...root.querySelectorAll('.swatch-container button.color')]
          .find((e) => e.style.backgroundColor === want);
        if (!sw) return false;
        sw.click();
        setTimeout(() => {  // the menu closes on a click outside it
          if (!q('.swatch-container')) return;
          for (const t of ['pointerdown', 'mousedown', 'pointerup', 'mouseup', 'click'])
            document.body.dispatchEvent(new MouseEvent(t, {bubbles: true}));
        }, 300);
        return true;
      }, 100);
    }, 100);
    return true;
  }, 100);
  return mode;
}"""


HELP_FACE = """**Face editing (SC-FEGAN).** Upload a face or pick a sample, then draw:
**Erase** paints the region to regenerate (the mask), **Sketch** draws edge lines, **Colour** paints colour
strokes; each mode is a layer of the editor and picks a default brush colour (white, black, a skin tone).
Other colours and the brush size: the buttons left of the canvas. Sketch and colour only count inside the
erased region, as in the paper. Undo, redo and clear are at the editor's top right. **Generate** shows the result
next to the input and in the compare view; the PNG is outside the mask identical to your upload."""

HELP_SR = """**Super-resolution (ESRGAN).** Upload an image and press **Upscale**. With PSNR and GAN weights
loaded, the slider blends them (network interpolation, paper Eq. 4: (1 - alpha) * PSNR + alpha * GAN) and the
result is recomputed when you release it. Large photos (up to the app's `limits.max_pixels_sr`) are upscaled
tile by tile with a progress bar: the memory is bounded by the tile (plus the result itself); with the default
padding the tiled result equals the untiled one. Weights that end with their own resize (e.g.
`realesr-animevideov3-x2`) give results at that scale."""


# Absolute server-side paths (weights, temporary uploads, run folders): the page and its /config show only the file
# name (the server log has the whole path).  A path ends at whitespace, a quote or a backtick.
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s`'\"/]+/)+([^\s`'\"/]+)")


def public(msg: str) -> str:
    """``msg`` for the page: absolute paths replaced by their last component."""
    return _SERVER_PATH.sub(lambda m: m.group(1), str(msg))


def _fail(err: Exception, what: str) -> str:
    """A page message for ``err``: its text without Python class names or server paths (never a stack trace;
    unexpected errors are logged with theirs)."""
    if isinstance(err, (InputError, MissingWeights)):
        return public(str(err))
    log.exception(f"{what} failed")
    return public(f"{what} failed: {err} (details in the server log)")


def build_app(cfg: DictConfig) -> gr.Blocks:
    store = ModelStore(cfg)
    status = store.preload()
    limits = Limits(**OmegaConf.to_container(cfg.limits, resolve=True))
    out_dir = tempfile.mkdtemp(prefix="app_results_")
    samples = [str(p) for p in cfg.face.samples if os.path.isfile(str(p))]

    # -- face editing ------------------------------------------------------------------------------------------------
    # A new upload and a failed Generate clear the result, the compare view and the download: what is left there
    # must never be the result of another image (or of other strokes) than the one on the page.
    def load_face(path):
        if not path:
            return None, None, None, None, None, "", "Erase"
        try:
            img = open_image(path, "face image", limits.max_pixels_face, limits)
        except InputError as err:
            return None, None, None, None, None, f"**Error:** {public(str(err))}", "Erase"
        h, w = img.size
        editor = {"background": preview_rgb8(img), "layers": [], "composite": None}  # a new editor starts on erase
        return (
            path,
            editor,
            None,
            None,
            None,
            f"Loaded {os.path.basename(path)} ({w}x{h}). Draw in Erase mode, then Generate.",
            "Erase",
        )

    def restore_photo(path):
        """The editor's own Clear removes the photo with the strokes: put the uploaded photo back (strokes stay
        cleared), so drawing goes on at the image's size."""
        if not path:
            return gr.skip(), gr.skip()
        try:
            img = open_image(path, "face image", limits.max_pixels_face, limits)
        except InputError as err:
            return gr.skip(), f"**Error:** {public(str(err))}"
        editor = {"background": preview_rgb8(img), "layers": [], "composite": None}
        return editor, f"Strokes cleared; {os.path.basename(path)} is still loaded. Draw in Erase mode, then Generate."

    # The editor's layers reach the server after each stroke (webui.editor): Generate sends no image data.
    strokes = StrokeStore(len(LAYER_NAMES))

    def reset_strokes(request: gr.Request):
        strokes.reset(request.session_hash)

    def generate(path, seed, request: gr.Request):
        try:
            layers = strokes.layers(request.session_hash)
            out, msg = edit_face_editor(store, path, {"layers": layers}, int(seed or 0), out_dir, limits)
        except Exception as err:  # noqa: BLE001  (shown on the page)
            return None, None, None, f"**Error:** {_fail(err, 'Editing')}"
        return out, (path, out), out, msg

    def api_edit_face(image, mask, sketch, color, seed):
        try:
            return edit_face_files(store, image, mask, sketch or None, color or None, int(seed or 0), out_dir, limits)
        except Exception as err:  # noqa: BLE001
            raise gr.Error(_fail(err, "edit_face"), print_exception=False) from None

    # -- super-resolution --------------------------------------------------------------------------------------------
    def load_sr(path):  # clears the result and download, as load_face
        if not path:
            return None, None, None, ""
        try:
            img = open_image(path, "image", limits.max_pixels_sr, limits)
        except InputError as err:
            return None, None, None, f"**Error:** {public(str(err))}"
        h, w = img.size
        shown = preview(preview_rgb8(img))  # shrunk for the page when large
        return shown, None, None, f"Loaded {os.path.basename(path)} ({w}x{h}). Press Upscale."

    def run_sr(path, alpha, tile, progress=gr.Progress()):  # noqa: B008  (Gradio's progress bar, one step a tile)
        if not path:
            return None, None, "**Error:** No image: upload one first."

        def tiles_done(done, total):
            progress((done, total), desc=f"tile {done} of {total}", unit="tiles")

        shown = []  # a large result is shown shrunk (webui.handlers.PREVIEW_SIDE); the download is the full one
        try:
            out, msg = upscale_file(store, path, alpha, tile, out_dir, limits, progress=tiles_done, previews=shown)
        except Exception as err:  # noqa: BLE001
            return None, None, f"**Error:** {_fail(err, 'Upscaling')}"
        return shown[0], out, msg

    def api_upscale(image, alpha, tile):
        try:
            return upscale_file(store, image, 1.0 if alpha is None else alpha, int(tile or 0), out_dir, limits)
        except Exception as err:  # noqa: BLE001
            raise gr.Error(_fail(err, "upscale"), print_exception=False) from None

    interp = False
    try:
        interp = store.sr().psnr_state is not None
    except Exception:  # noqa: BLE001  (already reported in status["sr"])
        pass

    with gr.Blocks(title="SC-FEGAN face editing + ESRGAN super-resolution", analytics_enabled=False) as demo:
        gr.Markdown("# Face editing (SC-FEGAN) and super-resolution (ESRGAN)")
        with gr.Tab("Face editing", id="face"):
            gr.Markdown(HELP_FACE)
            gr.Markdown(public(status["face"]), elem_id="face-weights")
            face_path = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=220):
                    face_file = gr.File(label="Face image", file_types=["image"], type="filepath", elem_id="face-file")
                    if samples:
                        gr.Examples([[s] for s in samples], inputs=[face_file], label="Samples")
                    mode = gr.Radio(list(MODES), value="Erase", label="Mode", elem_id="face-mode")
                    seed = gr.Number(value=int(cfg.face.seed), precision=0, label="Noise seed")
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="face-generate")
                    face_status = gr.Markdown(elem_id="face-status")
                with gr.Column(scale=3):
                    editor = gr.ImageEditor(
                        label="Input (draw here)",
                        interactive=True,  # no event takes it as an input any more (webui.editor)
                        type="numpy",
                        image_mode="RGBA",
                        sources=(),
                        transforms=(),
                        layers=gr.LayerOptions(allow_additional_layers=False, layers=LAYER_NAMES),
                        brush=BRUSH,
                        eraser=gr.Eraser(default_size="auto"),
                        elem_id="face-editor",
                        height=520,
                    )
                    send_strokes_to(editor, strokes)
                with gr.Column(scale=3):
                    face_out = gr.Image(
                        label="Result",
                        type="filepath",
                        format="png",
                        interactive=False,
                        elem_id="face-result",
                        height=520,
                    )
            with gr.Row():
                face_compare = gr.ImageSlider(
                    label="Compare: input | result",
                    type="filepath",
                    format="png",
                    interactive=False,
                    elem_id="face-compare",
                )
                face_download = gr.File(label="Download PNG", interactive=False, elem_id="face-download")

            face_file.change(
                load_face,
                face_file,
                [face_path, editor, face_out, face_compare, face_download, face_status, mode],
                api_visibility="private",
                show_progress_on=[face_status],  # never the editor (webui.editor: uploads)
            ).then(None, None, None, js=LOADED_JS)  # the editor stays covered until it shows the photo
            face_file.change(reset_strokes, None, None, js=LOADING_JS, api_visibility="private", queue=False)
            editor.clear(reset_strokes, None, None, api_visibility="private", queue=False)
            editor.change(None, None, None, js=COMMIT_JS)  # makes the editor send its layers after each stroke
            editor.clear(
                restore_photo,
                face_path,
                [editor, face_status],
                api_visibility="private",
                show_progress_on=[face_status],
            )
            mode.change(None, mode, None, js=_SELECT_LAYER_JS, api_visibility="private")
            gen_btn.click(
                generate,
                [face_path, seed],
                [face_out, face_compare, face_download, face_status],
                api_visibility="private",
                concurrency_id="face",
                js=WAIT_FOR_STROKES_JS,  # the last stroke's layers first
            )

        with gr.Tab("Super-resolution", id="sr"):
            gr.Markdown(HELP_SR)
            gr.Markdown(public(status["sr"]), elem_id="sr-weights")
            with gr.Row():
                with gr.Column(scale=1, min_width=220):
                    sr_file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="sr-file")
                    alpha = gr.Slider(
                        0.0,
                        1.0,
                        value=float(cfg.sr.alpha) if interp else 1.0,
                        step=0.05,
                        label="Network interpolation alpha (0 = PSNR model, 1 = GAN model)"
                        + ("" if interp else ": needs sr_psnr_weights"),
                        interactive=interp,
                        elem_id="sr-alpha",
                    )
                    tile = gr.Number(
                        value=int(cfg.sr.tile),
                        precision=0,
                        minimum=0,
                        label=f"Tile side in input pixels (0 = automatic: tiles of {limits.sr_auto_tile} above that)",
                        elem_id="sr-tile",
                    )
                    sr_btn = gr.Button("Upscale", variant="primary", elem_id="sr-run")
                    sr_status = gr.Markdown(elem_id="sr-status")
                with gr.Column(scale=2):
                    sr_in = gr.Image(label="Input", type="numpy", interactive=False, elem_id="sr-input")
                with gr.Column(scale=3):
                    sr_out = gr.Image(
                        label="Result", type="filepath", format="png", interactive=False, elem_id="sr-result"
                    )
                    sr_download = gr.File(label="Download PNG", interactive=False, elem_id="sr-download")
            sr_file.change(load_sr, sr_file, [sr_in, sr_out, sr_download, sr_status], api_visibility="private")
            sr_btn.click(
                run_sr,
                [sr_file, alpha, tile],
                [sr_out, sr_download, sr_status],
                api_visibility="private",
                concurrency_id="sr",
            )
            alpha.release(
                run_sr,
                [sr_file, alpha, tile],
                [sr_out, sr_download, sr_status],
                api_visibility="private",
                concurrency_id="sr",
                trigger_mode="always_last",
            )

        # Scripted use (gradio_client): plain files in, PNG file + summary out.
        with gr.Row(visible=False):
            a_img, a_mask, a_sketch, a_color = (gr.File(label=n) for n in ("image", "mask", "sketch", "color"))
            a_seed = gr.Number(value=int(cfg.face.seed), precision=0, label="seed")
            a_sr_img = gr.File(label="image")
            a_alpha = gr.Number(value=1.0, label="alpha")
            a_tile = gr.Number(value=0, precision=0, label="tile")
            a_out, a_msg = gr.File(label="result"), gr.Textbox(label="summary")
            a_face_btn, a_sr_btn = gr.Button(), gr.Button()
        a_face_btn.click(
            api_edit_face,
            [a_img, a_mask, a_sketch, a_color, a_seed],
            [a_out, a_msg],
            api_name="edit_face",
            concurrency_id="face",
            api_description="SC-FEGAN edit: face image, mask (white = regenerate), optional sketch "
            "(white lines) and colour (strokes on black), all at the image's size; "
            "noise seed.  Returns the PNG and a summary.",
        )
        a_sr_btn.click(
            api_upscale,
            [a_sr_img, a_alpha, a_tile],
            [a_out, a_msg],
            api_name="upscale",
            concurrency_id="sr",
            api_description="ESRGAN super-resolution: image, interpolation alpha (0 = PSNR, 1 = GAN), "
            "tile side (0 = automatic).  Returns the PNG and a summary.",
        )
    demo.out_dir = out_dir  # the results folder (tests, and allowed_paths below)
    return demo


def launch_kwargs(cfg: DictConfig, demo: gr.Blocks) -> dict:
    """Arguments of ``demo.launch``: local address, no public link unless asked, upload size limit."""
    allowed = [demo.out_dir, str(cfg.paths.demo_data_dir)]
    return dict(
        server_name=str(cfg.host),
        server_port=None if cfg.port is None else int(cfg.port),
        share=bool(cfg.share),
        max_file_size=f"{float(cfg.limits.max_upload_mb):g}mb",
        allowed_paths=allowed,
        show_error=False,
        head=EDITOR_HEAD,  # the face editor's page script (webui.editor)
    )
