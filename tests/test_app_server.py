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
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False and kw["max_file_size"] == "20mb"
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
    cond = " || ".join(f"t.includes({t!r})" for t in texts)
    pg.wait_for_function(
        f"(() => {{ const e = document.querySelector({'#' + elem_id!r}); if (!e) return false; "
        f"const t = e.innerText; return {cond}; }})()"
    )
    return pg.locator(f"#{elem_id}").inner_text()


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
    _stroke(pg, img_box, 0.50, 0.25, 0.50, 0.45)  # Erase (the default mode)
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
