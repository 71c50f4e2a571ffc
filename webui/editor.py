"""The face editor's strokes, sent once per stroke instead of once per click (issue 18 items 2 and 5).

Gradio 6.31's ImageEditor, when it is an input of an event, is read back through ``get_data`` several times per
click (once for the request and once per loading-status update of the editor), and each read PNG-encodes the
background, the composite and every layer in the browser and uploads them as five files: 10 to 35 uploads per
Generate were counted, 4 to 14 s on a busy machine.  With a ``change`` listener attached the editor instead sends
its layers after each stroke through its own ``accept_blobs`` server function, in the background while the user
draws.  :func:`send_strokes_to` keeps the newest complete set of layers per browser session (:class:`StrokeStore`), so
Generate takes no editor input: one request, no upload.

Ordering: the page script (``EDITOR_HEAD``) counts the editor's changes (every change makes the editor upload its
layers once, or once more after the upload in progress) and notes which count each upload read; Generate's ``js``
waits until a finished upload carried the newest count, so the last stroke is never read before it is on the server
and a Generate after it needs no upload at all (issue 18 item 5).  Uploads carry the three layers only, not the
background and composite the editor would PNG-encode with them.  After a new photo is chosen the editor is covered by
a "Loading the photo" overlay (pointer events blocked) until the photo is in the canvas: strokes drawn on the
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


# The page script: stroke bookkeeping, layers-only uploads and the loading overlay (see the module docstring).
# ``window.editor`` is Gradio 6.31's editor object (the page has one ImageEditor): every change it notifies (a
# stroke committed, undo, redo, clear, a layer switch, layers loaded) makes its Svelte wrapper upload the layers
# once, or once more after the upload in progress.  An upload reads them through ``layer_manager.get_blobs`` (all
# layers in one task, so no change lands between) and posts each layer to ``accept_blobs`` with the upload's id.
# ``changes`` counts the changes, each read notes the count it saw, and once every post of that upload has answered
# OK, ``committed`` takes that count: the server has the newest strokes when ``committed == changes``.  (Gradio's
# ``change`` event is not used for this: it is not dispatched after the editor's first upload, and a failed post
# still ends in it.)
EDITOR_HEAD = """<script>
(() => {
  if (window.__faceEditor) return;
  const S = window.__faceEditor = {pressed: false, up: 0, changes: 0, committed: 0, inflight: 0, failed: false,
    read: {n: 0, k: 0}, uploads: new Map(), loading: false, editor: null};
  const f = window.fetch;
  window.fetch = function (u, o) {
    const url = String((u && u.url) || u);
    if (!url.includes('/component_server')) return f.apply(this, arguments);
    S.inflight++;
    const b = o && o.body;
    const id = b instanceof FormData && b.get('fn_name') === 'accept_blobs' && b.get('type') === 'layer' ? b.get('id') : null;
    let up = null;
    if (id !== null) {
      up = S.uploads.get(id);
      if (!up) S.uploads.set(id, up = {n: S.read.n, k: S.read.k, done: 0, ok: true});
    }
    return f.apply(this, arguments)
      .then((r) => { if (up && !r.ok) up.ok = false; return r; }, (e) => { if (up) up.ok = false; throw e; })
      .finally(() => {
        S.inflight--;
        if (up && ++up.done === up.k) {
          S.uploads.delete(id);
          if (up.ok) {
            S.committed = Math.max(S.committed, up.n);
            S.failed = false;
            S.committedAt = performance.now();  // read by benchmarks/app_edit.py
          } else S.failed = true;
        }
      });
  };
  S.hook = () => {
    const ed = window.editor;
    if (!ed || ed === S.editor || !ed.layer_manager || typeof ed.on !== 'function') return;
    S.editor = ed;
    S.changes = S.committed = 0;
    ed.on('change', () => { S.changes++; });
    const lm = ed.layer_manager;
    const own = lm.get_blobs;
    // The editor's upload PNG-encodes the background and the composite with the layers (two photo-sized PNGs);
    // the server has the photo and composites itself, so read the layers only (the editor skips a missing
    // background or composite).
    lm.get_blobs = async function (w, h) {
      const n = S.changes;
      const blobs = await own.call(Object.create(this, {background_layer: {value: null}, image_container: {value: null}}), w, h);
      S.read = {n, k: blobs.layers.filter(Boolean).length};
      if (!S.read.k) S.committed = Math.max(S.committed, n);
      return blobs;
    };
  };
  setInterval(S.hook, 250);
  // presses that change the layers: on the canvas (strokes) and the editor's undo / redo / clear buttons
  const changes = (e) => e.target && e.target.closest && e.target.closest('#face-editor') &&
    (e.target.tagName === 'CANVAS' || e.target.closest('button[aria-label="Undo"], button[aria-label="Redo"], ' +
      'button[aria-label="Clear canvas"]'));
  document.addEventListener('pointerdown', (e) => { if (changes(e)) { S.hook(); S.pressed = true; } }, true);
  document.addEventListener('pointerup', () => {
    if (!S.pressed) return;
    S.pressed = false;
    S.up = performance.now();
  }, true);
  // Generate's progress: a static line under the button.  Gradio's own progress display redraws a timer every
  // animation frame (0.2-0.4 CPU-s of page work per edit on 2 software-rendered cores, taken from the network).
  S.busy = (on) => {
    const btn = document.querySelector('#face-generate');
    let b = document.querySelector('#face-busy');
    if (on && !b && btn) {
      b = document.createElement('div');
      b.id = 'face-busy';
      b.textContent = 'Generating...';
      b.style.cssText = 'font-weight:600;padding:4px 0;';
      btn.insertAdjacentElement('afterend', b);
    } else if (!on && b) b.remove();
  };
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

# Generate's js: wait (at most 30 s) until the server has the layers of every change so far: a press in progress, a
# change not yet carried by an upload that finished, a post on its way, a photo loading.  The editor notifies a
# change in the release's own event handlers; 50 ms after a release cover a slower one.  An upload whose post failed
# (the server restarted, a dropped connection) is not retried by the editor: notify a change, so it uploads again
# (twice at most).
WAIT_FOR_STROKES_JS = """async (...args) => {
  const S = window.__faceEditor;
  const t0 = performance.now();
  if (!S) return args;
  S.hook();
  const pending = () => S.loading || S.pressed || S.committed < S.changes || S.inflight > 0 ||
    performance.now() - S.up < 50;
  for (let retry = 0; ; retry++) {
    while (pending() && !(S.failed && S.inflight === 0) && performance.now() - t0 < 30000)
      await new Promise((r) => setTimeout(r, 10));
    if (!S.failed || retry === 2 || !S.editor) break;
    S.failed = false;
    S.editor.notify('change');
  }
  S.waited = performance.now() - t0;  // read by benchmarks/app_edit.py
  return args;
}"""

# Generate's js: the same wait, then the progress line (removed by GENERATED_JS when the event has finished, with a
# result or an error).
GENERATE_JS = WAIT_FOR_STROKES_JS.replace("  return args;\n}", "  S.busy(true);\n  return args;\n}")
GENERATED_JS = "() => { if (window.__faceEditor) window.__faceEditor.busy(false); }"

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
