"""The app's page (Gradio): the two tabs, their controls and the API endpoints; app.py launches it.

``build_app(cfg)`` returns the ``gr.Blocks`` (the tests launch it on a free port).  The work is done by
``webui.handlers`` (plain functions around ``inference.face_align.edit_photo`` / ``inference.tiling.upscale``):

- ``/edit_face`` (image, mask, sketch, color, seed) -> (PNG file, summary): mask / sketch / colour files as
  ``predict.py`` takes them (same size as the image; sketch and colour optional).
- ``/upscale`` (image, alpha, tile) -> (PNG file, summary).

Face editing: the editor has three layers, one per mode of the official SC-FEGAN GUI (mask = its "erase" mode,
sketch lines, colour strokes); the mode buttons select the layer and its brush.  Undo / redo / clear, the eraser
(removes strokes), zoom and pan are the editor's own.  Iterative editing: "Use result as input", the mask as a
PNG (download / upload), grow / shrink the mask.  The result is composited on the uploaded file itself (not on the
editor's re-rendered canvas), so outside the mask it equals the upload bit for bit.
"""

import json
import logging
import os
import re
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no telemetry requests

import gradio as gr
from omegaconf import DictConfig, OmegaConf

from webui.editor import (
    EDITOR_HEAD,
    GENERATE_JS,
    GENERATED_JS,
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
    load_mask_png,
    mask_png,
    open_image,
    preview,
    preview_rgb8,
    resize_editor_mask,
    upscale_file,
)
from webui.models import MissingWeights, ModelStore

log = logging.getLogger(__name__)

# Modes of the official GUI = layers of the editor, bottom to top (webui.handlers.LAYERS).  In the mask and
# sketch layers any stroke counts whatever its colour; in the colour layer the stroke's colour is the input.  The
# official GUI calls the mask mode "erase"; here that name would be taken for the editor's eraser (removes strokes).
MODES = {"Mask": "mask", "Sketch": "sketch", "Colour": "colour"}
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
  const idx = {"Mask": 1, "Sketch": 2, "Colour": 3}[mode];
  const want = {"Mask": "rgb(255, 255, 255)", "Sketch": "rgb(0, 0, 0)", "Colour": "rgb(224, 172, 138)"}[mode];
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
      // 2. the mode's default brush colour (white mask, black sketch, a skin tone for colour)
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

# An editor value with layers (a mask set by the server: grow / shrink / upload) makes Gradio 6.31's editor replace
# its layers by unnamed ones, each called "Layer 1" (its add_layers_from_url); window.editor is the editor object (the
# page has one ImageEditor).
# This gives them the mode names back once they are there (they load asynchronously; up to 10 s).
_NAME_LAYERS_JS = """() => {
  const names = NAMES;
  const fix = (tries) => {
    const m = window.editor && window.editor.layer_manager;
    const ls = m ? m.layers : [];
    if (ls.length === names.length && ls.some((l) => l.name === 'Layer 1')) {
      ls.forEach((l, i) => { l.name = names[i]; l.user_created = false; });
      m.layer_store.update((s) => ({...s, layers: ls}));
      return;
    }
    if (tries > 0) setTimeout(() => fix(tries - 1), 50);
  };
  fix(200);
}""".replace("NAMES", json.dumps(LAYER_NAMES))


HELP_FACE = """**Face editing (SC-FEGAN).** Upload a face or pick a sample, then draw:
**Mask** paints the region to regenerate, **Sketch** draws edge lines, **Colour** paints colour
strokes; each mode is a layer of the editor and picks a default brush colour (white, black, a skin tone).
Other colours and the brush size: the buttons left of the canvas; the editor's **eraser** (below the brush) removes
strokes from the current layer, it does not paint the mask. Sketch and colour only count inside the
mask, as in the paper. Undo, redo and clear are at the editor's top right; **zoom** with its magnifiers, its %
menu or Alt + mouse wheel, **pan** with the hand tool (then the brush again) or the mouse wheel.
**Generate** shows the result next to the input and in the compare view; the PNG is outside the mask identical to
your upload. **Use result as input** edits the result again (strokes cleared); the mask can be grown or shrunk,
downloaded and uploaded as a PNG of the photo's size (white = regenerate)."""

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
            return None, None, None, None, None, "", "Mask"
        try:
            img = open_image(path, "face image", limits.max_pixels_face, limits)
        except InputError as err:
            return None, None, None, None, None, f"**Error:** {public(str(err))}", "Mask"
        h, w = img.size
        editor = {"background": preview_rgb8(img), "layers": [], "composite": None}  # a new editor starts on mask
        return (
            path,
            editor,
            None,
            None,
            None,
            f"Loaded {os.path.basename(path)} ({w}x{h}). Draw in Mask mode, then Generate.",
            "Mask",
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
        return editor, f"Strokes cleared; {os.path.basename(path)} is still loaded. Draw in Mask mode, then Generate."

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
                    mode = gr.Radio(list(MODES), value="Mask", label="Mode", elem_id="face-mode")
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
            # A change listener makes the editor send its layers after each change (its "realtime" mode, webui.editor)
            editor.change(None, None, None, js="() => {}")
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
                js=GENERATE_JS,  # the last stroke's layers first, then a static progress line
                # Gradio's progress display (even "hidden") runs a timer redrawn every frame on each output: page
                # work on the cores the network needs.  On the button, which has none, nothing runs.
                show_progress="hidden",
                show_progress_on=[gen_btn],
            ).then(None, None, None, js=GENERATED_JS)
            _iterative_editing(
                dict(
                    face_file=face_file,
                    face_path=face_path,
                    editor=editor,
                    face_out=face_out,
                    face_compare=face_compare,
                    face_download=face_download,
                    face_status=face_status,
                    mode=mode,
                ),
                load_face,
                strokes,
                out_dir,
                limits,
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


def _iterative_editing(c: dict, load_face, strokes: StrokeStore, out_dir: str, limits: Limits) -> None:
    """Issue 18, iterative editing: "Use result as input", grow / shrink the mask, the mask as a PNG (download /
    upload).  ``c``: the face tab's components by name; ``load_face``: what a new upload does (its outputs are
    face_path, editor, face_out, face_compare, face_download, face_status, mode); ``strokes``: the editor's layers
    per session (webui.editor), read by these buttons and replaced when they set the mask."""
    loaded = [c[k] for k in ("face_path", "editor", "face_out", "face_compare", "face_download", "face_status")]
    with gr.Row(elem_id="face-iterate"):
        with gr.Column(scale=1, min_width=220):
            use_btn = gr.Button("Use result as input", elem_id="face-use-result")
            grow_n = gr.Number(
                value=8, precision=0, minimum=1, label="Grow / shrink by (pixels)", elem_id="face-grow-n"
            )
            with gr.Row():
                grow_btn = gr.Button("Grow mask", size="sm", elem_id="face-grow")
                shrink_btn = gr.Button("Shrink mask", size="sm", elem_id="face-shrink")
        with gr.Column(scale=2):
            mask_upload = gr.File(
                label="Upload a mask (PNG of the photo's size, white = regenerate)",
                file_types=["image"],
                type="filepath",
                elem_id="face-mask-file",
            )
        with gr.Column(scale=2):
            mask_btn = gr.Button("Download mask", elem_id="face-mask-save")
            mask_download = gr.File(label="Mask PNG", interactive=False, elem_id="face-mask-download")

    def layers_of(request: gr.Request) -> dict:
        """The editor's layers as the server has them (sent after each stroke, or put by a handler below)."""
        return {"layers": strokes.layers(request.session_hash)}

    def use_result(result, request: gr.Request):
        """The composited full-resolution result PNG (the download, not the editor's canvas) becomes the photo."""
        if not result:
            return (*(gr.skip(),) * 5, "**Error:** No result yet: Generate first.", gr.skip(), gr.skip())
        *out, status, mode = load_face(result)
        if out[0] is not None:
            strokes.reset(request.session_hash)  # the strokes drawn on the previous photo no longer apply
            status = (
                f"The result {os.path.basename(result)} is now the input; the strokes are cleared. Draw in Mask "
                "mode, then Generate to edit it again."
            )
        return (*out, status, mode, None)

    # The compare view is emptied first, in its own step: with it changing in the same update as the editor's new
    # photo, the strokes drawn next were lost more often (2 of 2 runs vs 1 of 4 in Chromium here).  As after a new
    # upload, the editor is covered until it shows the new photo (webui.editor) and the progress is shown on the
    # status line, never on the editor (its loading status re-uploads all its layers).
    use_btn.click(lambda: None, None, c["face_compare"], api_visibility="private", js=LOADING_JS).then(
        use_result,
        c["face_download"],
        [*loaded, c["mode"], mask_download],
        api_visibility="private",
        concurrency_id="face",
        show_progress_on=[c["face_status"]],
    ).then(None, None, None, js=LOADED_JS)

    def run(fn, *args, request=None):
        """``fn(*args)`` -> (value, message); an editor value it returns is registered as the session's layers:
        Generate reads the layers from the server's StrokeStore, and the editor sends them only after a stroke."""
        try:
            value, msg = fn(*args)
        except Exception as err:  # noqa: BLE001  (shown on the page)
            return gr.skip(), f"**Error:** {_fail(err, 'The mask')}"
        if request is not None and isinstance(value, dict):
            strokes.put(request.session_hash, value["layers"])
        return value, msg

    def resize(sign):
        def fn(path, n, request: gr.Request):
            return (
                *run(resize_editor_mask, path, layers_of(request), sign * int(n or 0), limits, request=request),
                "Mask",
            )

        return fn

    def upload_mask(path, m, request: gr.Request):
        return (*run(load_mask_png, path, layers_of(request), m, limits, request=request), "Mask")

    def download_mask(path, request: gr.Request):
        return run(mask_png, path, layers_of(request), out_dir, limits)

    # These read the layers the server has: Generate's wait for the last stroke's layers first (webui.editor).
    for btn, sign in ((grow_btn, 1), (shrink_btn, -1)):
        btn.click(
            resize(sign),
            [c["face_path"], grow_n],
            [c["editor"], c["face_status"], c["mode"]],
            api_visibility="private",
            js=WAIT_FOR_STROKES_JS,
            show_progress_on=[c["face_status"]],
        ).then(None, None, None, js=_NAME_LAYERS_JS)
    mask_upload.upload(
        upload_mask,
        [c["face_path"], mask_upload],
        [c["editor"], c["face_status"], c["mode"]],
        api_visibility="private",
        js=WAIT_FOR_STROKES_JS,
        show_progress_on=[c["face_status"]],
    ).then(None, None, None, js=_NAME_LAYERS_JS)
    mask_btn.click(
        download_mask,
        c["face_path"],
        [mask_download, c["face_status"]],
        api_visibility="private",
        js=WAIT_FOR_STROKES_JS,
    )
    # a new photo: the mask file of the previous one goes (in the browser, no round trip)
    c["face_file"].change(None, None, [mask_download, mask_upload], js="() => [null, null]")


# gr.File shows a name as stem + extension and cuts the stem with an ellipsis: in the narrow upload column only
# ".png" was left (issue 18).  The whole name wraps instead (font-size 0 on the cell drops the blank between the two
# spans), with the size link below it when the row is too narrow.
APP_CSS = """
.file-preview tr.file { display: flex; flex-wrap: wrap; }
.file-preview td.filename { display: block; flex: 1 1 auto; min-width: 0; overflow-wrap: anywhere; font-size: 0; }
.file-preview td.filename > span { font-size: var(--body-text-size); white-space: normal; overflow: visible; }
"""


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
        css=APP_CSS,
        head=EDITOR_HEAD,  # the face editor's page script (webui.editor)
    )
