"""The app live: ``build_app`` served on 127.0.0.1 (a free port), called through ``gradio_client`` (/edit_face,
/upscale) and driven in a real browser (Playwright + the system's Chromium from Debian's ``chromium`` package, no
downloaded browser build): upload, draw strokes with mouse events, generate, and check the downloaded PNG against
the upload outside the mask; upscale and move the interpolation slider.

The browser tests skip, saying why, when no Chromium executable is found (``CHROMIUM_PATH``,
/usr/lib/chromium/chromium, ``chromium`` on PATH); ``.ci/run`` installs it and sets ``APP_BROWSER_TESTS=required``,
which turns that skip into a failure.
"""

import os
import shutil
import socket
import urllib.request

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="gradio is in requirements.txt; install it to test the app")

from app_fixtures import app_overrides, random_rgb, write_weights  # noqa: E402
from conftest import compose_cfg, write_png  # noqa: E402

from inference.images import Image, read_image  # noqa: E402
from inference.tiling import upscale  # noqa: E402

pytestmark = pytest.mark.slow  # serves the app; the browser tests drive Chromium
TIMEOUT_S = 60  # every wait on the server or the page is bounded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from webui import page as app

    root = tmp_path_factory.mktemp("app")
    w = write_weights(root / "w")
    cfg = compose_cfg(root, app_overrides(w), config_name="app")
    demo = app.build_app(cfg)
    kw = app.launch_kwargs(cfg, demo)
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False and kw["max_file_size"] == "100mb"
    kw["server_port"] = _free_port()
    demo.queue(default_concurrency_limit=1).launch(prevent_thread_lock=True, quiet=True, **kw)
    try:
        yield {"url": f"http://127.0.0.1:{kw['server_port']}/", "root": root, "w": w}
    finally:
        demo.close()


def _download(url: str) -> np.ndarray:
    import cv2

    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
        data = np.frombuffer(r.read(), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return img[..., ::-1] if img.ndim == 3 else img


# -- gradio_client -----------------------------------------------------------------------------------------------------
def test_client_edit_face_and_upscale(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/edit_face", "/upscale"} <= set(api)
    face = random_rgb(72, 64, seed=1)
    mask = np.zeros((72, 64), np.uint8)
    mask[20:50, 10:40] = 255
    sketch = np.zeros((72, 64), np.uint8)
    sketch[25:45, 20] = 255
    fp, mp, sp = (str(write_png(tmp_path / n, a)) for n, a in (("f.png", face), ("m.png", mask), ("s.png", sketch)))
    out_path, msg = client.submit(
        handle_file(fp), handle_file(mp), handle_file(sp), None, 3, api_name="/edit_face"
    ).result(timeout=TIMEOUT_S)
    out = read_image(out_path).pixels
    assert np.array_equal(out[mask == 0], face[mask == 0])
    assert (out[mask > 0] != face[mask > 0]).any(axis=1).mean() > 0.9 and "Edited 64x72" in msg

    lr = random_rgb(16, 20, seed=2)
    lp = str(write_png(tmp_path / "lr.png", lr))
    out_path, msg = client.submit(handle_file(lp), 0.0, 0, api_name="/upscale").result(timeout=TIMEOUT_S)
    ref = upscale(server["w"]["psnr_net"], Image(lr, 255.0, lp), 4, torch.device("cpu"))  # alpha 0 = PSNR model
    assert np.array_equal(read_image(out_path).pixels, ref) and "alpha 0 " in msg

    # bad input: the message, not a stack trace
    bad_mask = str(write_png(tmp_path / "small.png", np.zeros((10, 10), np.uint8)))
    with pytest.raises(AppError, match=r"mask 'small.png' is 10x10 but the input image is 64x72"):
        client.submit(handle_file(fp), handle_file(bad_mask), None, None, 0, api_name="/edit_face").result(
            timeout=TIMEOUT_S
        )
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(AppError, match=r"'junk.png' is not an image this app can read") as err:
        client.submit(handle_file(str(tmp_path / "junk.png")), 1.0, 0, api_name="/upscale").result(timeout=TIMEOUT_S)
    assert "Traceback" not in str(err.value)


def _png_of_size(path, img: np.ndarray, nbytes: int):
    """A valid PNG of ``img`` followed by zeros up to ``nbytes`` (decoders stop at its end chunk): a large upload
    with few pixels."""
    data = write_png(path, img).read_bytes()
    path.write_bytes(data + bytes(max(nbytes - len(data), 0)))
    return path


def test_client_uploads_up_to_max_upload_mb(server, tmp_path):
    """A photo at the SR tab's pixel limit can be a PNG well over 20 MB (16 MP RGB: up to 48 MB): the upload limit
    takes it; over ``limits.max_upload_mb`` the server refuses the upload."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    lr = random_rgb(16, 20, seed=3)
    big = _png_of_size(tmp_path / "big.png", lr, 60 * 2**20)
    assert big.stat().st_size >= 60 * 2**20
    out_path, msg = client.submit(handle_file(str(big)), 0.0, 0, api_name="/upscale").result(timeout=TIMEOUT_S)
    ref = upscale(server["w"]["psnr_net"], Image(lr, 255.0, str(big)), 4, torch.device("cpu"))
    assert np.array_equal(read_image(out_path).pixels, ref), msg
    over = _png_of_size(tmp_path / "over.png", lr, 101 * 2**20)
    with pytest.raises(ValueError, match=r"over.png exceeds the maximum file size of 104857600 bytes"):
        client.submit(handle_file(str(over)), 0.0, 0, api_name="/upscale").result(timeout=TIMEOUT_S)


# -- browser ------------------------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """The system Chromium (Debian's ``chromium`` package puts the binary in /usr/lib/chromium/)."""
    for c in (
        os.environ.get("CHROMIUM_PATH"),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        reason = (
            "no Chromium executable found (CHROMIUM_PATH, /usr/lib/chromium/chromium, chromium on PATH); "
            "install Debian's package: apt-get install -y chromium"
        )
        if os.environ.get("APP_BROWSER_TESTS") == "required":
            pytest.fail(reason)
        print(f"\nSKIP browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses to run as root with its sandbox
        b = p.chromium.launch(executable_path=path, headless=True, args=args, timeout=TIMEOUT_S * 1000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(TIMEOUT_S * 1000)
    pg.goto(server["url"])
    pg.wait_for_selector("#face-editor")
    yield pg
    pg.close()


def _wait_text(pg, elem_id: str, *texts: str) -> str:
    """Wait until the element's text (a Markdown component's text alone, without the timer text of Gradio's progress
    tracker beside it) contains one of ``texts``; return that text."""
    text = (
        f"(() => {{ const e = document.querySelector({'#' + elem_id!r}); if (!e) return null; "
        "return (e.querySelector('[data-testid=\"markdown\"]') || e).innerText; })()"
    )
    cond = " || ".join(f"t.includes({t!r})" for t in texts)
    pg.wait_for_function(f"(() => {{ const t = {text}; return t !== null && ({cond}); }})()")
    return pg.evaluate(text)


def _upload(pg, elem_id: str, path: str) -> None:
    """Put ``path`` into the file component ``elem_id`` (clearing what it holds first, as a user would)."""
    clear = pg.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    pg.locator(f"#{elem_id} input[type=file]").set_input_files(path)


def _editor_ready(pg) -> None:
    """After an upload the editor is covered (drawing blocked) until it shows the new photo (issue 18 item 2)."""
    pg.wait_for_function(
        "() => document.querySelector('#face-editor canvas') && !document.querySelector('#face-editor-busy')"
    )


def _image_box(pg, elem_id: str, hw) -> dict:
    """Where the image lies on the page: the editor shows it centred in its canvas at the zoom it displays."""
    canvas = pg.locator(f"#{elem_id} canvas").first.bounding_box()
    zoom = float(pg.locator(f"#{elem_id} .zoom-number").inner_text().strip().rstrip("%")) / 100.0
    w, h = hw[1] * zoom, hw[0] * zoom
    return {
        "x": canvas["x"] + (canvas["width"] - w) / 2,
        "y": canvas["y"] + (canvas["height"] - h) / 2,
        "width": w,
        "height": h,
    }


def _mode(pg, mode: str, layer: str, colour: str) -> None:
    """Click a mode button and wait until the editor shows that mode's layer as the active one and its colour as
    the brush colour (menus closed)."""
    pg.locator("#face-mode").get_by_text(mode, exact=True).click()
    pg.wait_for_function(
        "([layer, colour]) => { const r = document.querySelector('#face-editor'); const w = r.querySelector('.layer-wrap'); "
        "const c = r.querySelector('button[aria-label=\"Color\"]'); "
        "return w && w.classList.contains('closed') && w.innerText.trim() === layer && c && c.style.color === colour "
        "&& !r.querySelector('.swatch-container'); }",
        arg=[layer, colour],
    )


def _stroke(pg, box, x0, y0, x1, y1, steps=3):
    """A mouse drag from (x0, y0) to (x1, y1), in fractions of ``box``."""
    pg.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    pg.mouse.down()
    for t in np.linspace(0, 1, steps):
        pg.mouse.move(box["x"] + box["width"] * (x0 + (x1 - x0) * t), box["y"] + box["height"] * (y0 + (y1 - y0) * t))
    pg.mouse.up()


def test_browser_face_edit(page, server, tmp_path, monkeypatch):
    import webui.handlers as handlers

    seen = {}
    real_edit = handlers.edit

    def spy(store, image, mask, sketch=None, color=None, seed=0, noise=None):
        seen.update(mask=mask, sketch=sketch, color=color)
        return real_edit(store, image, mask, sketch, color, seed, noise)

    monkeypatch.setattr(handlers, "edit", spy)  # the server runs in this process: see what the page sent
    pg = page
    # a sample loads
    pg.get_by_text("head.png", exact=True).click()
    assert "Loaded head.png (280x280)" in _wait_text(pg, "face-status", "Loaded", "Error")
    # upload, draw in the three modes, undo one stroke, generate
    face = random_rgb(120, 100, seed=5)
    fp = str(write_png(tmp_path / "face.png", face))
    _upload(pg, "face-file", fp)
    assert "Loaded face.png (100x120)" in _wait_text(pg, "face-status", "Loaded face.png", "Error")
    _editor_ready(pg)  # the canvas takes the new background
    img_box = _image_box(pg, "face-editor", face.shape[:2])
    _stroke(pg, img_box, 0.50, 0.25, 0.50, 0.45)  # Mask (the default mode)
    _stroke(pg, img_box, 0.10, 0.90, 0.12, 0.92)  # a stray stroke ...
    pg.locator("#face-editor button[aria-label='Undo']").click()  # ... undone
    _mode(pg, "Sketch", "sketch", "rgb(0, 0, 0)")
    _stroke(pg, img_box, 0.48, 0.28, 0.48, 0.42)
    _mode(pg, "Colour", "colour", "rgb(224, 172, 138)")
    _stroke(pg, img_box, 0.52, 0.30, 0.52, 0.40)
    pg.click("#face-generate")
    msg = _wait_text(pg, "face-status", "Edited", "Error")
    assert msg.startswith("Edited 100x120"), msg
    mask = seen["mask"]
    assert mask.shape == (120, 100) and 0.01 < mask.mean() < 0.9
    assert mask[int(0.35 * 120), 50] and not mask[int(0.91 * 120), 11]  # drawn where drawn; the undone one gone
    assert seen["sketch"] is not None and seen["sketch"].any()
    assert seen["color"] is not None and (seen["color"].max(axis=2) > 0).any()
    assert np.allclose(seen["color"][seen["color"].max(axis=2) > 0].mean(0), np.array([224, 172, 138]) / 255, atol=0.02)
    out = _download(pg.locator("#face-download a").first.get_attribute("href"))
    assert out.shape == face.shape
    assert np.array_equal(out[~mask], face[~mask])  # bit for bit outside the mask
    assert (out[mask] != face[mask]).any(axis=1).mean() > 0.9
    # result beside the input and in the compare view
    assert pg.locator("#face-result img").count() >= 1
    assert pg.locator("#face-compare img").count() == 2


def test_browser_upscale_and_live_interpolation(page, server, tmp_path):
    pg = page
    pg.get_by_role("tab", name="Super-resolution").click()
    (tmp_path / "notes.png").write_text("not an image")  # a non-image upload gets a message on the page
    _upload(pg, "sr-file", str(tmp_path / "notes.png"))
    assert "'notes.png' is not an image this app can read" in _wait_text(pg, "sr-status", "Error")
    lr = random_rgb(16, 20, seed=6)
    lp = str(write_png(tmp_path / "small.png", lr))
    _upload(pg, "sr-file", lp)
    _wait_text(pg, "sr-status", "Loaded small.png")
    pg.fill("#sr-tile input", "8")
    pg.click("#sr-run")
    msg = _wait_text(pg, "sr-status", "x4:", "Error")
    assert "alpha 0.8" in msg and "tiles of 8" in msg, msg
    w = server["w"]
    from app_fixtures import TINY_SR, RRDBNet

    from weights.interpolate import interpolate_state_dicts

    ref_net = RRDBNet(**TINY_SR).eval()
    ref_net.load_state_dict(interpolate_state_dicts(w["psnr_net"].state_dict(), w["gan_net"].state_dict(), 0.8))
    ref = upscale(ref_net, Image(lr, 255.0, lp), 4, torch.device("cpu"))
    got = _download(pg.locator("#sr-download a").first.get_attribute("href"))
    assert got.shape == (64, 80, 3) and np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    # the slider applies live: releasing it at the left end recomputes with the PSNR model
    box = pg.locator("#sr-alpha input[type=range]").bounding_box()
    pg.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
    msg = _wait_text(pg, "sr-status", "alpha 0 ", "Error")
    ref0 = upscale(w["psnr_net"], Image(lr, 255.0, lp), 4, torch.device("cpu"))
    got0 = _download(pg.locator("#sr-download a").first.get_attribute("href"))
    assert np.abs(got0.astype(int) - ref0.astype(int)).max() <= 1 and not np.array_equal(got0, got)


def _gone(pg, selector: str) -> None:
    pg.wait_for_function(f"() => !document.querySelector({selector!r})")


def test_browser_new_upload_then_failed_run_leaves_no_stale_result(page, server, tmp_path):
    """Issue 18 item 1: after a new upload, a Generate that fails (empty mask) must not leave the previous image's
    result in the compare view or the download; on the SR tab, a refused upload clears the previous result."""
    pg = page
    a = random_rgb(120, 100, seed=11)
    _upload(pg, "face-file", str(write_png(tmp_path / "a.png", a)))
    _wait_text(pg, "face-status", "Loaded a.png", "Error")
    _editor_ready(pg)  # the canvas takes the new background
    _stroke(pg, _image_box(pg, "face-editor", a.shape[:2]), 0.5, 0.3, 0.5, 0.6)
    pg.click("#face-generate")
    assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
    pg.wait_for_selector("#face-download a")
    assert pg.locator("#face-compare img").count() == 2
    b = random_rgb(90, 110, seed=12)
    _upload(pg, "face-file", str(write_png(tmp_path / "b.png", b)))
    _wait_text(pg, "face-status", "Loaded b.png", "Error")
    pg.click("#face-generate")  # nothing drawn on b
    assert "mask is empty" in _wait_text(pg, "face-status", "Error", "Edited")
    _gone(pg, "#face-download a")
    _gone(pg, "#face-compare img")
    _gone(pg, "#face-result img")
    # SR: a result, then a refused upload
    pg.get_by_role("tab", name="Super-resolution").click()
    _upload(pg, "sr-file", str(write_png(tmp_path / "small.png", random_rgb(16, 20, seed=13))))
    _wait_text(pg, "sr-status", "Loaded small.png")
    pg.click("#sr-run")
    _wait_text(pg, "sr-status", "x4:", "Error")
    pg.wait_for_selector("#sr-download a")
    (tmp_path / "notes.png").write_text("not an image")
    _upload(pg, "sr-file", str(tmp_path / "notes.png"))
    assert "is not an image this app can read" in _wait_text(pg, "sr-status", "Error")
    _gone(pg, "#sr-download a")
    _gone(pg, "#sr-result img")


def test_browser_messages_name_no_python_classes_and_no_server_paths(page, server, tmp_path):
    """Issue 18 item 7: a bad upload's message has no Python class names (``UnidentifiedImageError``), and neither the
    page nor ``/config`` shows where the server keeps the weights."""
    import re

    pg = page
    (tmp_path / "notes.png").write_text("not an image")
    _upload(pg, "face-file", str(tmp_path / "notes.png"))
    msg = _wait_text(pg, "face-status", "Error")
    assert "'notes.png' is not an image this app can read" in msg, msg
    classes = re.findall(r"\b(?:[A-Z][a-z]+)+(?:Error|Exception)\b|\bOSError\b", msg)
    assert not classes, msg
    w = server["w"]
    secrets = [str(w[k]) for k in ("face", "gan", "psnr")] + [str(w["face"].parent)]
    body = pg.content() + pg.locator("body").inner_text()
    assert "face.pth" in pg.locator("#face-weights").inner_text()  # the file is named, its folder is not
    with urllib.request.urlopen(server["url"] + "config", timeout=TIMEOUT_S) as r:
        config = r.read().decode()
    for s in secrets:
        assert s not in body and s not in config, s


def test_browser_editor_clear_keeps_the_photo(page, server, tmp_path):
    """Issue 18 item 3: the editor's Clear removes the strokes, not the photo: drawing and Generate still work on the
    uploaded image (no "layer is 800x800 but the image is ..." error)."""
    pg = page
    face = random_rgb(120, 100, seed=21)
    _upload(pg, "face-file", str(write_png(tmp_path / "c.png", face)))
    _wait_text(pg, "face-status", "Loaded c.png", "Error")
    _editor_ready(pg)  # the canvas takes the new background
    box = _image_box(pg, "face-editor", face.shape[:2])
    _stroke(pg, box, 0.2, 0.2, 0.3, 0.3)
    labels = pg.eval_on_selector_all("#face-editor button", "bs => bs.map(b => b.getAttribute('aria-label'))")
    assert "Clear canvas" in labels, labels
    pg.locator("#face-editor button[aria-label='Clear canvas']").first.click()
    assert "Strokes cleared; c.png is still loaded" in _wait_text(pg, "face-status", "Strokes cleared", "Error")
    pg.wait_for_timeout(500)
    box = _image_box(pg, "face-editor", face.shape[:2])
    _stroke(pg, box, 0.5, 0.3, 0.5, 0.6)
    pg.click("#face-generate")
    msg = _wait_text(pg, "face-status", "Edited", "Error")
    assert msg.startswith("Edited 100x120"), msg
    out = _download(pg.locator("#face-download a").first.get_attribute("href"))
    changed = (out != face).any(axis=2)
    assert changed.any() and not changed[: int(0.15 * 120), : int(0.4 * 100)].any()  # the cleared stroke is gone


# -- iterative editing (issue 18) -------------------------------------------------------------------------------------
def _href(pg, elem_id: str, old: str | None = None) -> str:
    """The download link of the file box ``elem_id`` once it is there (and differs from ``old``)."""
    pg.wait_for_function(
        "([sel, old]) => { const a = document.querySelector(sel); return a && a.href && a.href !== old; }",
        arg=[f"#{elem_id} a", old],
    )
    return pg.locator(f"#{elem_id} a").first.get_attribute("href")


def _editor_idle(pg, quiet_ms: int = 1000) -> None:
    """Wait until the editor's progress indicator (Gradio's status tracker: queued, processing) has been hidden for
    ``quiet_ms`` in a row: after the server sets a new photo it can start a moment later."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    pg.evaluate("() => { window.__editorQuietSince = undefined; }")
    try:
        _wait_quiet(pg, quiet_ms)
    except PlaywrightTimeout:
        pytest.fail(
            "the editor stayed busy (queued / processing) after the server set a new photo; strokes drawn now are "
            "lost. Also on main: upload, draw, Generate, upload another photo (issue 18 item 2)."
        )


def _wait_quiet(pg, quiet_ms: int) -> None:
    pg.wait_for_function(
        """(quiet) => {
          const t = document.querySelector('#face-editor [data-testid="status-tracker"]');
          const busy = t && !t.classList.contains('hide');
          const now = performance.now();
          if (busy || window.__editorQuietSince === undefined) window.__editorQuietSince = busy ? undefined : now;
          return !busy && now - window.__editorQuietSince >= quiet;
        }""",
        arg=quiet_ms,
        polling=100,
    )


def _box_at_top(pg, hw) -> dict:
    """The photo's box in the editor with the page scrolled back to the top (the iterative-editing buttons lie below
    the editor: clicking them scrolls it away), once the editor shows no progress any more: after a new photo the
    page uploads the editor's layers again (several round trips, issue 18 item 5), and strokes drawn meanwhile are
    lost (item 2); a person waits for the spinner to go too.  Also until the editor is uncovered (it is covered
    while a new photo loads, webui.editor)."""
    _editor_ready(pg)
    _editor_idle(pg)
    pg.evaluate("window.scrollTo(0, 0)")
    pg.wait_for_timeout(100)
    return _image_box(pg, "face-editor", hw)


def _spy_edit(monkeypatch) -> list:
    """Each Generate's (input image, mask, sketch, colour) as the server got them (the server runs in this
    process)."""
    import webui.handlers as handlers

    calls = []
    real_edit = handlers.edit

    def spy(store, image, mask, sketch=None, color=None, seed=0, noise=None):
        calls.append((image, mask, sketch, color))
        return real_edit(store, image, mask, sketch, color, seed, noise)

    monkeypatch.setattr(handlers, "edit", spy)
    return calls


def _layers_named(pg) -> None:
    """Wait until the editor's layers are the three named ones (after the server set a mask they load
    asynchronously and get their names back last).  Its progress indicator may stay on (issue 18 item 2, see
    :func:`_editor_idle`); the buttons below read the editor's layers, which are there."""
    pg.wait_for_function(
        "() => { const m = window.editor && window.editor.layer_manager; "
        "return m && m.layers.map((l) => l.name).join() === 'mask,sketch,colour'; }"
    )


def _name_shown(pg, elem_id: str) -> str:
    """The file name a file box shows, checking that none of it is cut off (stem and extension visible)."""
    stem = pg.locator(f"#{elem_id} .filename .stem").first
    w = stem.evaluate(
        "e => [e.getBoundingClientRect().width, e.scrollWidth, e.parentElement.clientWidth, "
        "e.parentElement.scrollWidth]"
    )
    assert w[0] > 0 and w[1] <= w[0] + 1 and w[3] <= w[2] + 1, w  # shown, and nothing overflows (hidden)
    # the blank between the stem and extension spans is drawn at font size 0 (see webui.page.APP_CSS)
    return "".join(pg.locator(f"#{elem_id} .filename").first.inner_text().split())


def test_browser_use_result_as_input_edits_the_result_again(page, server, tmp_path, monkeypatch):
    """Issue 18, iterative editing: "Use result as input" makes the composited full-resolution result the photo and
    clears the strokes; a second Generate edits it. Outside both masks the final download is the original upload
    bit for bit; inside the second mask it changed. The file boxes show whole names; the mode is called Mask."""
    calls = _spy_edit(monkeypatch)
    pg = page
    assert [t.strip() for t in pg.locator("#face-mode label").all_inner_texts()] == ["Mask", "Sketch", "Colour"]
    face = random_rgb(120, 100, seed=31)
    fp = str(write_png(tmp_path / "a_rather_long_photo_name.png", face))
    _upload(pg, "face-file", fp)
    _wait_text(pg, "face-status", "Loaded a_rather_long_photo_name.png", "Error")
    assert _name_shown(pg, "face-file") == "a_rather_long_photo_name.png"  # main showed ".png" only
    pg.wait_for_timeout(500)  # the canvas takes the new background
    _stroke(pg, _box_at_top(pg, face.shape[:2]), 0.25, 0.2, 0.25, 0.45)
    pg.click("#face-generate")
    assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
    out1 = _download(_href(pg, "face-download"))
    assert _name_shown(pg, "face-download").startswith("a_rather_long_photo_name_edited.png")
    pg.click("#face-use-result")
    msg = _wait_text(pg, "face-status", "now the input", "Error")
    assert "a_rather_long_photo_name_edited.png is now the input; the strokes are cleared" in msg, msg
    _gone(pg, "#face-download a")  # the result area belongs to the new input
    pg.wait_for_timeout(500)
    _stroke(pg, _box_at_top(pg, face.shape[:2]), 0.75, 0.55, 0.75, 0.8)
    pg.click("#face-generate")
    assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
    out2 = _download(_href(pg, "face-download"))
    assert _name_shown(pg, "face-download").startswith("a_rather_long_photo_name_edited2.png")
    (img1, m1, *_), (img2, m2, *_) = calls
    assert np.array_equal(img2.pixels, out1)  # the second edit's input is the first result file, full resolution
    assert m1[40, 25] and not m1[60:, 50:].any()
    assert m2[80, 75] and not m2[:, :50].any()  # the first strokes are cleared
    keep = ~(m1 | m2)
    assert np.array_equal(out2[keep], face[keep])  # bit for bit outside both masks
    assert np.array_equal(out2[m1 & ~m2], out1[m1 & ~m2])  # the first edit stays
    assert (out2[m2] != out1[m2]).any(axis=1).mean() > 0.9  # the second mask changed


def test_browser_mask_png_grow_shrink_and_upload(page, server, tmp_path, monkeypatch):
    """Issue 18: the mask downloads as a PNG of the photo's size (0 / 255), the mask Generate uses; grow / shrink
    by N pixels works on the mask server-side (a disk: one pixel grown by 2 is 13 pixels, shrunk by 2 one pixel
    again); an uploaded mask PNG becomes the mask layer, and one of another size gets a one-line message."""
    calls = _spy_edit(monkeypatch)
    pg = page
    face = random_rgb(120, 100, seed=32)
    fp = str(write_png(tmp_path / "m_face.png", face))
    _upload(pg, "face-file", fp)
    _wait_text(pg, "face-status", "Loaded m_face.png", "Error")
    pg.wait_for_timeout(500)
    _stroke(pg, _box_at_top(pg, face.shape[:2]), 0.3, 0.3, 0.6, 0.5)
    pg.click("#face-mask-save")
    href = _href(pg, "face-mask-download")
    drawn = _download(href)
    assert drawn.shape == (120, 100) and drawn.dtype == np.uint8 and set(np.unique(drawn)) == {0, 255}
    assert drawn[int(0.4 * 120), int(0.45 * 100)] == 255 and not drawn[100:, :].any()  # where drawn
    assert _name_shown(pg, "face-mask-download").startswith("m_face_mask.png")

    # a mask of another size: a one-line message, the strokes stay
    small = str(write_png(tmp_path / "small_mask.png", np.zeros((50, 100), np.uint8)))
    _upload(pg, "face-mask-file", small)
    msg = _wait_text(pg, "face-status", "Error")
    assert "The mask 'small_mask.png' is 100x50 but the photo 'm_face.png' is 100x120" in msg and "\n" not in msg
    # a one-pixel mask, grown by 2 then shrunk by 2 (hand-computed: the 13-pixel disk, then the pixel)
    one = np.zeros((120, 100), np.uint8)
    one[70, 40] = 255
    _upload(pg, "face-mask-file", str(write_png(tmp_path / "one.png", one)))
    assert "Mask one.png loaded" in _wait_text(pg, "face-status", "one.png")
    _layers_named(pg)
    pg.fill("#face-grow-n input", "2")
    pg.click("#face-grow")
    assert "Mask grown by 2 px" in _wait_text(pg, "face-status", "grown", "Error")
    _layers_named(pg)
    pg.click("#face-mask-save")
    href = _href(pg, "face-mask-download", href)
    grown = _download(href) == 255
    disk = np.zeros((120, 100), bool)
    disk[69:72, 39:42] = True
    disk[68, 40] = disk[72, 40] = disk[70, 38] = disk[70, 42] = True
    assert grown.sum() == 13 and np.array_equal(grown, disk)
    assert [n.strip() for n in pg.locator("#face-editor .layer-wrap").all_inner_texts()] == ["mask"]
    pg.click("#face-shrink")
    assert "Mask shrunk by 2 px" in _wait_text(pg, "face-status", "shrunk", "Error")
    _layers_named(pg)
    pg.click("#face-mask-save")
    href = _href(pg, "face-mask-download", href)
    assert np.array_equal(_download(href), one)
    # an uploaded mask is what Generate uses; outside it the result is the upload
    rect = np.zeros((120, 100), np.uint8)
    rect[20:50, 30:70] = 255
    _upload(pg, "face-mask-file", str(write_png(tmp_path / "rect.png", rect)))
    assert "Mask rect.png loaded" in _wait_text(pg, "face-status", "rect.png")
    _layers_named(pg)
    pg.click("#face-mask-save")
    href = _href(pg, "face-mask-download", href)
    assert np.array_equal(_download(href), rect)
    pg.click("#face-generate")
    assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
    out = _download(_href(pg, "face-download"))
    assert len(calls) == 1 and np.array_equal(calls[0][1], rect == 255)  # = the mask downloaded before
    assert (
        np.array_equal(out[rect == 0], face[rect == 0]) and (out[rect > 0] != face[rect > 0]).any(axis=1).mean() > 0.9
    )


def _marker_on_screen(pg, colour=(255, 0, 0)) -> tuple[float, float, float, float]:
    """Where the photo's marker square appears in the editor's canvas now: (x, y, width, height) in page pixels,
    from a screenshot of the canvas (what the user sees)."""
    import cv2

    canvas = pg.locator("#face-editor canvas").first
    box = canvas.bounding_box()
    shot = cv2.imdecode(np.frombuffer(canvas.screenshot(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    hit = (np.abs(shot - np.array(colour)) < 60).all(axis=2)
    ys, xs = np.nonzero(hit)
    assert len(xs), "the marker is not on screen"
    return box["x"] + xs.min(), box["y"] + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_browser_zoom_and_pan_then_strokes_land_at_image_coordinates(page, server, tmp_path):
    """Issue 18: on a large photo the editor zooms (its % menu) and pans (its hand tool, the mouse wheel); a stroke
    drawn afterwards over what the user sees lands at those image pixels in the mask."""
    pg = page
    h, w = 1200, 1600
    photo = np.full((h, w, 3), 128, np.uint8)
    photo[560:600, 780:820] = (255, 0, 0)  # a 40x40 marker, centre (800, 580)
    _upload(pg, "face-file", str(write_png(tmp_path / "large.png", photo)))
    _wait_text(pg, "face-status", "Loaded large.png (1600x1200)", "Error")
    _editor_ready(pg)  # uncovered: it shows the photo
    _, _, fit_w, _ = _marker_on_screen(pg)
    pg.locator("#face-editor .zoom-number span").first.click()
    pg.locator("#face-editor .zoom-controls").get_by_text("200%", exact=True).click()
    pg.wait_for_function("() => document.querySelector('#face-editor .zoom-number').innerText.trim() === '200%'")
    pg.wait_for_timeout(500)  # the zoom animates
    x0, y0, mw, mh = _marker_on_screen(pg)
    assert abs(mw - 80) <= 2 and abs(mh - 80) <= 2 and mw > 3 * fit_w  # 40 image pixels at 200%
    # pan: drag with the hand tool, then the wheel
    pg.locator("#face-editor button[aria-label='Pan']").click()
    canvas = pg.locator("#face-editor canvas").first.bounding_box()
    cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
    pg.mouse.move(cx, cy)
    pg.mouse.down()
    pg.mouse.move(cx - 70, cy - 50, steps=8)
    pg.mouse.up()
    pg.wait_for_timeout(300)
    x1, y1, _, _ = _marker_on_screen(pg)
    assert abs(x1 - (x0 - 70)) <= 2 and abs(y1 - (y0 - 50)) <= 2
    pg.mouse.wheel(0, 100)
    pg.wait_for_timeout(300)
    x2, y2, _, _ = _marker_on_screen(pg)
    assert abs(x2 - x1) <= 2 and y2 < y1 - 5  # scrolled
    pg.locator("#face-editor button[aria-label='Brush']").click()
    # a stroke from the marker's centre 40 screen pixels right: image (800, 580) -> (820, 580) at 200%
    sx, sy = x2 + mw / 2, y2 + mh / 2
    pg.mouse.move(sx, sy)
    pg.mouse.down()
    pg.mouse.move(sx + 40, sy, steps=6)
    pg.mouse.up()
    pg.click("#face-mask-save")
    mask = _download(_href(pg, "face-mask-download")) == 255
    assert mask.shape == (h, w)
    ys, xs = np.nonzero(mask)
    r = (ys.max() - ys.min() + 1) / 2  # the brush radius in image pixels
    assert 1 <= r <= 10 and abs((ys.max() + ys.min()) / 2 - 580) <= 1.5
    assert abs(xs.min() + r - 800) <= 2 and abs(xs.max() - r - 820) <= 2


def test_browser_slow_upload_strokes_reach_generate_without_uploads(page, server, tmp_path, monkeypatch):
    """Issue 18 items 2 and 5, with a slow upload and a slow stroke channel simulated (Playwright route delays): the
    editor is covered while the photo loads (a press there draws nothing); a stroke drawn once it shows the photo
    and Generate clicked at once both reach the edit; a Generate click uploads nothing (the strokes went to the
    server as they were drawn) and sends one request."""
    import time

    import webui.handlers as handlers

    seen = []
    real_edit = handlers.edit

    def spy(store, image, mask, sketch=None, color=None, seed=0, noise=None):
        seen.append(mask)
        return real_edit(store, image, mask, sketch, color, seed, noise)

    monkeypatch.setattr(handlers, "edit", spy)
    pg = page

    def slow(route):
        time.sleep(1.0)
        route.continue_()

    for pattern in ("**/gradio_api/upload**", "**/gradio_api/file=**", "**/gradio_api/component_server**"):
        pg.route(pattern, slow)
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    face = random_rgb(120, 100, seed=31)
    _upload(pg, "face-file", str(write_png(tmp_path / "slow.png", face)))
    pg.wait_for_selector("#face-editor-busy")  # covered while the photo travels
    _wait_text(pg, "face-status", "Loaded slow.png", "Error")
    _editor_ready(pg)
    box = _image_box(pg, "face-editor", face.shape[:2])
    _stroke(pg, box, 0.5, 0.25, 0.5, 0.6)
    requests.clear()
    pg.click("#face-generate")  # at once: the stroke's layers are still on their way
    msg = _wait_text(pg, "face-status", "Edited", "Error")
    assert msg.startswith("Edited 100x120"), msg
    assert seen and seen[-1][int(0.4 * 120), 50], "the stroke drawn just before Generate is missing"
    uploads = [u for u in requests if "/gradio_api/upload" in u]
    assert uploads == [], uploads  # main: 10 to 35 uploads of the editor's layers per click
    # a second click, nothing drawn in between: one request, no upload, no layer traffic
    pg.wait_for_selector("#face-download a")
    requests.clear()
    pg.click("#face-generate")
    _wait_text(pg, "face-status", "Edited")
    pg.wait_for_timeout(300)
    assert [u for u in requests if "/gradio_api/upload" in u or "component_server" in u] == []
    assert sum("/queue/join" in u for u in requests) == 1
    out = _download(pg.locator("#face-download a").first.get_attribute("href"))
    assert np.array_equal(out[~seen[-1]], face[~seen[-1]])


def _committed(pg) -> None:
    """Wait until the server has the layers of every change in the editor (the page's own bookkeeping, which
    Generate waits on: webui.editor)."""
    pg.wait_for_function("() => { const S = window.__faceEditor; return S.changes > 0 && S.committed === S.changes; }")


# Records (fn_name, type) of every post the page makes to the component server (the editor's layer uploads are
# multipart forms with blobs, whose bodies Playwright's request events do not carry).
_RECORD_POSTS_JS = """() => {
  window.__posts = [];
  const f = window.fetch;
  window.fetch = function (u, o) {
    const url = String((u && u.url) || u), b = o && o.body;
    if (url.includes('/component_server'))
      window.__posts.push(b instanceof FormData ? [b.get('fn_name'), b.get('type')] : ['json', '']);
    return f.apply(this, arguments);
  };
}"""


def test_browser_strokes_send_layers_only_and_generate_after_them_sends_nothing(page, server, tmp_path, monkeypatch):
    """Issue 18 item 5: each stroke uploads the three layers and nothing else (not the photo-sized background and
    composite the editor would encode with them), and a Generate after the stroke's layers reached the server
    sends no layer data: one request.  Progress shows as a static line while it runs, gone after."""
    calls = _spy_edit(monkeypatch)
    pg = page
    requests = []
    pg.on("request", lambda r: requests.append(r))
    face = random_rgb(120, 100, seed=51)
    _upload(pg, "face-file", str(write_png(tmp_path / "layers.png", face)))
    _wait_text(pg, "face-status", "Loaded layers.png", "Error")
    _editor_ready(pg)
    box = _image_box(pg, "face-editor", face.shape[:2])
    pg.evaluate(_RECORD_POSTS_JS)
    for k, x in enumerate((0.3, 0.6)):
        pg.evaluate("window.__posts = []")
        _stroke(pg, box, x, 0.3, x, 0.7)
        _committed(pg)
        posts = pg.evaluate("window.__posts")
        assert posts and all(p == ["accept_blobs", "layer"] for p in posts) and len(posts) % 3 == 0, posts  # main: 5
        requests.clear()
        pg.evaluate(
            "() => { window.__sawBusy = false; new MutationObserver((m, ob) => { if (document.querySelector("
            "'#face-busy')) { window.__sawBusy = true; ob.disconnect(); } }).observe(document.body, "
            "{subtree: true, childList: true}); }"
        )
        pg.click("#face-generate")
        assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
        _gone(pg, "#face-busy")
        assert pg.evaluate("window.__sawBusy")
        pg.wait_for_timeout(300)
        urls = [r.url for r in requests]
        assert [u for u in urls if "component_server" in u or "/gradio_api/upload" in u] == [], urls  # main: 3-10
        assert sum("/queue/join" in u for u in urls) == 1
        mask = calls[-1][1]
        assert mask[60, int(x * 100)] and (k == 0 or mask[60, 30]), "a stroke is missing from the edit"


def test_browser_stroke_during_an_upload_in_flight_reaches_generate(page, server, tmp_path, monkeypatch):
    """A stroke released while the editor's previous upload (here a layer switch's) is still on its way, Generate
    clicked at once: the edit must wait for the upload that carries the stroke, not take the end of the one in
    flight for it."""
    import threading

    calls = _spy_edit(monkeypatch)
    pg = page
    # The server holds the editor's layer posts once ``held`` is on, until the test releases them (a wait in the
    # server's thread: a Playwright route that waited would stall the test's own browser calls too).  A fixed delay
    # instead raced the stroke below on a loaded machine (CI saw the switch's upload answered before the check).
    from webui.editor import StrokeStore

    held, release = {"on": False}, threading.Event()
    real_add = StrokeStore.add

    def held_add(self, *args):
        if held["on"]:
            release.wait(TIMEOUT_S)
        return real_add(self, *args)

    monkeypatch.setattr(StrokeStore, "add", held_add)
    face = random_rgb(120, 100, seed=52)
    _upload(pg, "face-file", str(write_png(tmp_path / "inflight.png", face)))
    _wait_text(pg, "face-status", "Loaded inflight.png", "Error")
    _editor_ready(pg)
    box = _image_box(pg, "face-editor", face.shape[:2])
    _stroke(pg, box, 0.5, 0.2, 0.5, 0.8)  # the mask
    _committed(pg)
    held["on"] = True
    try:
        _mode(pg, "Sketch", "sketch", "rgb(0, 0, 0)")  # a layer switch: an upload of its own, held
        _stroke(pg, box, 0.3, 0.5, 0.7, 0.5)  # released while that upload is on its way ...
        # the layer switch's upload has not finished: the server has the first stroke only
        state = pg.evaluate("(() => { const S = window.__faceEditor; return [S.changes, S.committed]; })()")
        assert state == [3, 1], state
        pg.click("#face-generate")  # ... and Generate at once
    finally:
        release.set()  # the held uploads go through now (and never stay held past a failure)
    assert _wait_text(pg, "face-status", "Edited", "Error").startswith("Edited 100x120")
    sketch = calls[-1][2]
    assert sketch is not None and sketch[60, 35:65].all(), "the stroke drawn during the upload is missing"


def test_browser_upscale_shows_tile_progress(page, server, tmp_path):
    """Issue 18: the SR tab upscales tile by tile with a progress bar that counts the tiles."""
    pg = page
    pg.get_by_role("tab", name="Super-resolution").click()
    lr = random_rgb(96, 96, seed=41)
    _upload(pg, "sr-file", str(write_png(tmp_path / "tiles.png", lr)))
    _wait_text(pg, "sr-status", "Loaded tiles.png")
    pg.fill("#sr-tile input", "8")  # 144 tiles of the tiny network
    pg.click("#sr-run")
    pg.wait_for_function("() => /tile \\d+ of 144/.test(document.body.innerText)")
    msg = _wait_text(pg, "sr-status", "x4:", "Error")
    assert "96x96 -> 384x384" in msg and "tiles of 8" in msg, msg
    got = _download(pg.locator("#sr-download a").first.get_attribute("href"))
    assert got.shape == (384, 384, 3)
