"""The face editor's strokes, sent once per stroke instead of once per click (issue 18 items 2 and 5).

Gradio 6.31's ImageEditor, when it is an input of an event, is read back through ``get_data`` several times per
click (once for the request and once per loading-status update of the editor), and each read PNG-encodes the
background, the composite and every layer in the browser and uploads them as five files: 10 to 35 uploads per
Generate were counted, 4 to 14 s on a busy machine.  With a ``change`` listener attached the editor instead sends
its layers after each stroke through its own ``accept_blobs`` server function, in the background while the user
draws.  :func:`send_strokes_to` keeps the newest complete set of layers per browser session (:class:`StrokeStore`), so
Generate takes no editor input: one request, no upload.

Ordering: the page script (``EDITOR_HEAD``) marks a stroke as pending from the pointer press on the editor until
the editor's ``change`` event that follows the upload of its layers, and Generate's ``js`` waits for that, so the
last stroke is never read before it is committed.  After a new photo is chosen the editor is covered by a
"Loading the photo" overlay (pointer events blocked) until the photo is in the canvas: strokes drawn on the
previous picture while the new one loads cannot be wiped silently.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import gradio as gr
import numpy as np
from gradio.components.image_editor import AcceptBlobs
from PIL import Image as PILImage

#: Sessions whose strokes are kept (the oldest are dropped first).
MAX_SESSIONS = 32


class StrokeStore:
    """The newest complete set of editor layers (PNG bytes, bottom to top) per browser session."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self._lock = threading.Lock()
        self._sets: OrderedDict[str, tuple[str, list]] = OrderedDict()  # session -> (blob id, layers being received)
        self._done: dict[str, list[bytes]] = {}  # session -> last complete layers

    def add(self, session: str, blob_id: str, index: int, data: bytes) -> None:
        with self._lock:
            cur = self._sets.get(session)
            if cur is None or cur[0] != blob_id:
                cur = (blob_id, [None] * self.n_layers)
                self._sets[session] = cur
            self._sets.move_to_end(session)
            if 0 <= index < self.n_layers:
                cur[1][index] = data
            if all(x is not None for x in cur[1]):
                self._done[session] = list(cur[1])
            while len(self._sets) > MAX_SESSIONS:
                old, _ = self._sets.popitem(last=False)
                self._done.pop(old, None)

    def put(self, session: str, layers: list[np.ndarray]) -> None:
        """Layers the server itself puts into the editor (e.g. an uploaded mask as the mask layer): the editor sends
        layers only after a stroke, so a handler that sets them registers them here too."""
        blobs = []
        for a in layers:
            buf = io.BytesIO()
            PILImage.fromarray(np.asarray(a, np.uint8)).convert("RGBA").save(buf, format="PNG")
            blobs.append(buf.getvalue())
        with self._lock:
            self._sets[session] = ("put", list(blobs))
            self._sets.move_to_end(session)
            self._done[session] = blobs

    def reset(self, session: str | None) -> None:
        """A new photo: the strokes drawn on the previous one no longer apply."""
        with self._lock:
            self._sets.pop(session, None)
            self._done.pop(session, None)

    def layers(self, session: str | None) -> list[np.ndarray]:
        """The session's newest complete layers as RGBA uint8 arrays ([] when nothing was drawn)."""
        with self._lock:
            blobs = self._done.get(session)
        out = []
        for b in blobs or []:
            with PILImage.open(io.BytesIO(b)) as im:
                out.append(np.asarray(im.convert("RGBA")))
        return out


def send_strokes_to(editor: gr.ImageEditor, strokes: StrokeStore) -> gr.ImageEditor:
    """Route ``editor``'s per-stroke layer uploads (its ``accept_blobs`` server function) into ``strokes`` too.

    An instance attribute rather than a subclass: Gradio writes a ``.pyi`` stub next to the source file of every
    Component subclass it sees defined."""
    own = editor.accept_blobs

    def accept_blobs(data: AcceptBlobs):
        own(data)  # the ImageEditor's own blob storage (read when the editor is an event input)
        if data.data["type"] == "layer" and data.data.get("session_hash"):
            idx = data.data.get("index")
            idx = int(idx) if idx not in (None, "null", "") else -1
            strokes.add(str(data.data["session_hash"]), str(data.data["id"]), idx, data.files[0][1])
        while len(editor.blob_storage) > MAX_SESSIONS:  # no event reads them back here: keep it bounded
            editor.blob_storage.pop(next(iter(editor.blob_storage)))

    accept_blobs._is_server_fn = True
    editor.accept_blobs = accept_blobs
    return editor


# The page script: pending-stroke bookkeeping and the loading overlay (see the module docstring).
EDITOR_HEAD = """<script>
(() => {
  if (window.__faceEditor) return;
  const S = window.__faceEditor = {pressed: false, up: 0, commit: 0, inflight: 0, loading: false, active: false,
    runStart: 0};
  const f = window.fetch;
  window.fetch = function (u, o) {
    const url = String((u && u.url) || u);
    if (!url.includes('/component_server')) return f.apply(this, arguments);
    S.inflight++;
    return f.apply(this, arguments).finally(() => { S.inflight--; });
  };
  // presses that change the layers: on the canvas (strokes) and the editor's undo / redo / clear buttons
  const changes = (e) => e.target && e.target.closest && e.target.closest('#face-editor') &&
    (e.target.tagName === 'CANVAS' || e.target.closest('button[aria-label="Undo"], button[aria-label="Redo"], ' +
      'button[aria-label="Clear canvas"]'));
  document.addEventListener('pointerdown', (e) => { if (changes(e)) { S.pressed = true; S.up = performance.now(); } }, true);
  // The editor uploads the layers after a change, one upload at a time; a change during an upload queues exactly
  // one more upload after it.  ``active``: an upload is due or running for the last change.
  document.addEventListener('pointerup', () => {
    if (!S.pressed) return;
    S.pressed = false;
    S.up = performance.now();
    if (!S.active) { S.active = true; S.runStart = S.up; }
  }, true);
  S.overlay = (on) => {
    const root = document.querySelector('#face-editor');
    if (!root) return;
    let o = root.querySelector('#face-editor-busy');
    if (on && !o) {
      o = document.createElement('div');
      o.id = 'face-editor-busy';
      o.textContent = 'Loading the photo into the editor...';
      o.style.cssText = 'position:absolute;inset:0;z-index:1000;display:flex;align-items:center;' +
        'justify-content:center;background:rgba(255,255,255,0.6);font-weight:600;cursor:wait;';
      root.style.position = root.style.position || 'relative';
      root.appendChild(o);
    } else if (!on && o) o.remove();
  };
})();
</script>"""

# Generate's js: wait (at most 30 s in all) until the last stroke's layers have reached the server: pressed, or an
# upload due or running for the last change (the editor PNG-encodes the layers first: 3 s were seen on a busy machine;
# capped at 10 s after the last release, for a press that changes nothing, e.g. with the pan tool).
WAIT_FOR_STROKES_JS = """async (...args) => {
  const S = window.__faceEditor;
  const t0 = performance.now();
  if (!S) return args;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const pending = () => S.loading || S.pressed || S.inflight > 0 || (S.active && performance.now() - S.up < 10000);
  while (pending() && performance.now() - t0 < 30000) await sleep(25);
  // The upload that follows a stroke can miss that stroke: the editor records it asynchronously and reads its
  // layers 30 ms after the release (seen on a busy machine).  Once per new stroke, re-select the active layer
  // (the editor then uploads its layers again) and wait for that upload.
  if (S.up > (S.nudged || 0)) {
    await sleep(150);
    const root = document.querySelector('#face-editor');
    const wrap = root && root.querySelector('.layer-wrap');
    const title = root && root.querySelector('.layer-title-button');
    const idx = wrap && {mask: 1, sketch: 2, colour: 3}[wrap.innerText.trim()];
    if (idx && title) {
      const open = () => !wrap.classList.contains('closed');
      if (!open()) title.click();
      let b = null;
      for (let i = 0; i < 80 && !(b = root.querySelector('button[aria-label="layer-' + idx + '"]')); i++) await sleep(25);
      if (b) {
        S.up = performance.now();
        if (!S.active) { S.active = true; S.runStart = S.up; }
        b.click();
      }
      await sleep(50);
      if (open()) title.click();
      S.nudged = performance.now();
      while (pending() && performance.now() - t0 < 30000) await sleep(25);
    }
  }
  return args;
}"""

# The editor's change event, dispatched once its layers are uploaded: done, unless a change came during the upload.
COMMIT_JS = """() => {
  const S = window.__faceEditor;
  if (!S) return;
  S.commit = performance.now();
  if (S.active) { if (S.up > S.runStart) S.runStart = S.commit; else S.active = false; }
}"""

# A new photo was chosen: cover the editor until it shows it.
LOADING_JS = """(...args) => {
  const S = window.__faceEditor;
  if (S) { S.loading = true; S.loadStart = performance.now(); S.overlay(true); }
  return args;
}"""

# The upload's (or "Use result as input"'s) answer is on the page: wait until the editor has fetched the new
# background (resource timing) and drawn a few frames, then uncover it (at most 15 s; at once when the upload was
# refused or cleared).
LOADED_JS = """async (...args) => {
  const S = window.__faceEditor;
  if (!S) return args;
  const t0 = performance.now();
  const status = document.querySelector('#face-status');
  const fetched = () => !(status && /Loaded|is now the input/.test(status.innerText)) ||
    performance.getEntriesByType('resource').some(
      (e) => e.startTime >= S.loadStart && e.name.includes('/gradio_api/file=') && e.responseEnd > 0);
  while (!fetched() && performance.now() - t0 < 15000) await new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(() => r()));
  await new Promise((r) => setTimeout(r, 150));
  S.loading = false;
  S.overlay(false);
  return args;
}"""
