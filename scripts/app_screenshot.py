"""Screenshot of the app for the README (docs/app_screenshot.png), taken with Playwright + the system Chromium.

    python scripts/app_screenshot.py [--image data/demo/val/Set5/bird.png] [--out docs/app_screenshot.png]
        [--weights G.pth]

Without ``--weights`` a random-init narrow SC-FEGAN generator is used (the picture shows the page, not a trained
model's output).  The image must not be a CelebA face (research-only data never enters the repository).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import socket
import tempfile

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image as PILImage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=os.path.join(ROOT, "data/demo/val/Set5/bird.png"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/app_screenshot.png"))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from archs.scfegan_generator import SCFEGANGenerator
    from webui import page as app
    from weights.io import save_generator_file
    from weights.layouts import scfegan_config

    tmp = tempfile.mkdtemp()
    weights = args.weights
    if weights is None:
        net = SCFEGANGenerator(cnum=8).eval()
        weights = save_generator_file(
            os.path.join(tmp, "G.pth"), net, scfegan_config(net.state_dict()), {"input_size": 256}
        )
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="app", overrides=["device=cpu", f"weights={weights}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = ROOT
        cfg.paths.output_dir = tmp
        cfg.paths.log_dir = os.path.join(tmp, "logs")
    demo = app.build_app(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kw = app.launch_kwargs(cfg, demo)
    kw["server_port"] = port
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **kw)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"] if os.geteuid() == 0 else [])
            pg = b.new_page(viewport={"width": 1300, "height": 820})
            pg.set_default_timeout(120_000)
            pg.goto(f"http://127.0.0.1:{port}/")
            pg.locator("#face-file input[type=file]").set_input_files(args.image)
            pg.wait_for_function("document.querySelector('#face-status').innerText.includes('Loaded')")
            # the editor is covered until it shows the photo (webui.editor)
            pg.wait_for_function(
                "document.querySelector('#face-editor canvas') && !document.querySelector('#face-editor-busy')"
            )
            pg.wait_for_timeout(800)
            h, w = np.asarray(PILImage.open(args.image)).shape[:2]
            canvas = pg.locator("#face-editor canvas").first.bounding_box()
            zoom = float(pg.locator("#face-editor .zoom-number").inner_text().strip().rstrip("%")) / 100
            bx, by = canvas["x"] + (canvas["width"] - w * zoom) / 2, canvas["y"] + (canvas["height"] - h * zoom) / 2

            def stroke(pts):
                pg.mouse.move(bx + pts[0][0] * w * zoom, by + pts[0][1] * h * zoom)
                pg.mouse.down()
                for x, y in pts[1:]:
                    pg.mouse.move(bx + x * w * zoom, by + y * h * zoom)
                pg.mouse.up()

            for y in np.linspace(0.30, 0.55, 6):
                stroke([(0.30, y), (0.55, y)])
            pg.locator("#face-mode").get_by_text("Sketch", exact=True).click()
            pg.wait_for_timeout(800)
            stroke([(0.33, 0.35), (0.42, 0.45), (0.52, 0.50)])
            pg.click("#face-generate")
            pg.wait_for_function("document.querySelector('#face-status').innerText.includes('Edited')")
            pg.wait_for_timeout(800)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            raw = os.path.join(tmp, "shot.png")
            pg.evaluate("window.scrollTo(0, 0)")  # clicks below the editor may have scrolled the page
            pg.wait_for_timeout(300)
            pg.screenshot(path=raw, full_page=False)
            b.close()
    finally:
        demo.close()
    # A palette PNG keeps the README small (well under 300 KB).
    PILImage.open(raw).convert("RGB").quantize(colors=128, method=PILImage.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
