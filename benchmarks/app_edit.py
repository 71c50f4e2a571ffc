"""Time one face edit through the app, end to end (figures, not a test).

    python benchmarks/app_edit.py [--size 512] [--cnum 64] [--repeats 3] [--threads N] [--via handler,api,browser]
    python benchmarks/app_edit.py --paired [--repeats 5] [--json F]   # API and browser edits interleaved: the ratio

``--paired``: one server, one ``/edit_face`` call and one browser Generate in turn per repeat (so both see the same
load), and the browser / API ratio of the wall-time medians (issue 18 target: within 1.5x), with the requests the
page makes between the click and the result (uploads, layer posts, queue joins) and the time Generate waited for the
last stroke's layers to reach the server.  As a person edits, each browser Generate follows a new mask stroke:
clicked as soon as Playwright can after the release in even pairs, after a 1 s pause in odd ones; each edit's mask
must grow (an edit that missed the new stroke stops the run).  The browser time runs from the click to the result's
link changing, both taken in the page (a capture listener, a mutation observer): Playwright's default wait would
poll the page every frame, work the page itself does not do.

``--via``: ``handler`` calls the Generate button's handler in this process; ``api`` launches ``python app.py``
(the command users type, on a free local port) and calls ``/edit_face`` through ``gradio_client`` (upload of
the image, mask, sketch and colour files, the edit, the result's download); ``browser`` drives the same server's
page in Chromium (Playwright, the system's Chromium as in tests/test_app_server.py): the face uploaded once,
a mask stroke, then Generate clicked and the result link awaited, once per repeat.  For ``api`` and
``browser`` the CPU time is the server process's (from /proc), i.e. the app's own work per edit.

What is timed (wall clock, and process CPU time, which on a shared machine says more) is the Generate button's work: read the uploaded PNG, turn three editor layers into mask / sketch /
colour, run the SC-FEGAN generator (``inference.faces.edit_face``: resize to the working size, forward, composite) and
write the result PNG.  The generator has random weights (timing does not depend on them); the full-width official
generator (cnum 64, 92.9 M parameters) at 512x512 is the default.  The first run (warm-up) is reported apart.
"""

import os
import sys

# As app.py (benchmarks/omp_wait_policy.py): before torch loads libgomp, unless the environment has a value.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
import torch
from omegaconf import OmegaConf

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from inference.images import write_png
from webui.handlers import edit_face_editor
from webui.models import ModelStore
from weights.io import save_generator_file, save_generator_weights
from weights.layouts import scfegan_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inputs(tmp: str, s: int):
    """A random s x s face PNG, and the editor's three layers (mask / sketch / colour) as the page sends them."""
    rng = np.random.default_rng(0)
    face = write_png(os.path.join(tmp, "face.png"), rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
    layers = [np.zeros((s, s, 4), np.uint8) for _ in range(3)]
    layers[0][s // 4 : s // 2, s // 4 : 3 * s // 4] = 255
    layers[1][s // 3, s // 4 : 3 * s // 4] = (0, 0, 0, 255)
    layers[2][s // 3 + 8 : s // 3 + 16, s // 3 : s // 2] = (200, 120, 90, 255)
    return face, layers


def via_handler(args, tmp: str, weights: str) -> tuple[list, list, str]:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = OmegaConf.create(
        {
            "device": "cpu",
            "precision": "fp32",
            "use_ema": True,
            "weights": weights,
            "demo_runs": {"face": tmp, "sr": tmp},
            "face": {"size": "auto", "noise": "auto", "bgr": "auto", "generator": {"padding_mode": "tf_same"}},
        }
    )
    store = ModelStore(cfg)
    t0 = time.perf_counter()
    store.face()
    note = f"weights load {time.perf_counter() - t0:.2f} s, torch threads {torch.get_num_threads()}"
    face, layers = inputs(tmp, args.size)
    times, cpu = [], []
    for _ in range(args.repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        edit_face_editor(store, face, {"layers": layers}, seed=0, out_dir=tmp)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, note


def proc_cpu_s(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium_cpu_s() -> float:
    """CPU time of every Chromium process on the machine (the browser, its renderer and its GPU process, where the
    editor's canvas is drawn: in software on a machine without a GPU)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"chromium" not in f.read().split(b"\0")[0]:
                    continue
            total += proc_cpu_s(int(pid))
        except OSError:  # gone meanwhile
            pass
    return total


class Server:
    """``python app.py weights=... sr_weights=... port=P`` as a user launches it (logs under the temp folder)."""

    def __init__(self, args, tmp: str, weights: str, sr_weights: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        cmd = [sys.executable, "app.py", f"weights={weights}", f"sr_weights={sr_weights}", f"port={self.port}"]
        cmd.append(f"paths.log_dir={tmp}/logs")
        self.log = open(os.path.join(tmp, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close()
                    raise SystemExit(f"app.py did not start: see {self.log.name}") from None
                time.sleep(1)

    def cpu(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def via_api(args, tmp: str, server: Server) -> tuple[list, list, str]:
    from gradio_client import Client, handle_file

    s = args.size
    face, layers = inputs(tmp, s)
    mask = write_png(os.path.join(tmp, "mask.png"), (layers[0][..., 3] > 0).astype(np.uint8) * 255)
    sketch = write_png(os.path.join(tmp, "sketch.png"), (layers[1][..., 3] > 0).astype(np.uint8) * 255)
    color = write_png(os.path.join(tmp, "color.png"), layers[2][..., :3])
    client = Client(server.url, verbose=False)
    times, cpu = [], []
    for _ in range(args.repeats + 1):
        t0, c0 = time.perf_counter(), server.cpu()
        out, msg = client.predict(
            handle_file(face), handle_file(mask), handle_file(sketch), handle_file(color), 0, api_name="/edit_face"
        )
        times.append(time.perf_counter() - t0)
        cpu.append(server.cpu() - c0)
        assert msg.startswith(f"Edited {s}x{s}") and os.path.getsize(out) > 0, msg
    return times, cpu, "gradio_client: upload 4 files, /edit_face, download the PNG"


def find_chromium() -> str | None:
    for c in (os.environ.get("CHROMIUM_PATH"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def via_browser(args, tmp: str, server: Server) -> tuple[list, list, str]:
    from playwright.sync_api import sync_playwright

    face, _ = inputs(tmp, args.size)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=find_chromium(), headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(300_000)
            pg.goto(server.url)
            pg.locator("#face-file input[type=file]").set_input_files(face)
            pg.wait_for_function("document.querySelector('#face-status').innerText.includes('Loaded face.png')")
            pg.wait_for_function("() => !document.querySelector('#face-editor-busy')")  # the photo is in the editor
            pg.wait_for_timeout(500)
            box = pg.locator("#face-editor canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            pg.mouse.move(cx - 40, cy - 30)  # a mask stroke (the default mode) across the middle
            pg.mouse.down()
            for k in range(9):
                pg.mouse.move(cx - 40 + 10 * k, cy - 30 + 5 * k)
            pg.mouse.up()
            times, cpu = [], []
            for _ in range(args.repeats + 1):
                c0 = server.cpu()
                times.append(click_generate(pg)[0])
                cpu.append(server.cpu() - c0)
                msg = pg.locator("#face-status").inner_text()
                assert msg.startswith(f"Edited {args.size}x{args.size}"), msg
        finally:
            browser.close()
    return times, cpu, "Chromium: Generate clicked -> result link on the page"


# Times a Generate click in the page: from the click (capture listener) to the result's link changing (a mutation
# observer), so the measurement adds no per-frame polling to the page (Playwright's default wait polls every frame).
ARM_TIMER_JS = """(before) => {
  const T = window.__genTimer = {click: 0, done: 0, uploads: 0, posts: 0, joins: 0};
  if (!window.__genFetch) {  // counts the page's requests between the click and the result
    const f = window.__genFetch = window.fetch;
    window.fetch = function (u, o) {
      const T = window.__genTimer, url = String((u && u.url) || u);
      if (T && T.click && !T.done) {
        if (url.includes('/gradio_api/upload')) T.uploads++;
        if (url.includes('/component_server')) T.posts++;
        if (url.includes('/queue/join')) T.joins++;
      }
      return f.apply(this, arguments);
    };
  }
  const href = () => { const a = document.querySelector('#face-download a'); return (a && a.getAttribute('href')) || ''; };
  const ob = new MutationObserver(() => {
    const h = href();
    if (T.click && !T.done && h && h !== before) { T.done = performance.now(); ob.disconnect(); }
  });
  ob.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['href']});
  document.querySelector('#face-generate').addEventListener('click', () => { T.click = performance.now(); },
    {once: true, capture: true});
}"""


def click_generate(pg) -> tuple[float, float, tuple[int, int, int], float]:
    """Click Generate and wait for the new result link: seconds from the click to the link, seconds of that spent
    waiting for strokes to reach the server, the requests made meanwhile (uploads, layer posts, queue joins), and
    seconds from the last stroke's release to its layers on the server."""
    href = "document.querySelector('#face-download a')?.getAttribute('href') || ''"
    pg.evaluate(ARM_TIMER_JS, pg.evaluate(href))
    pg.click("#face-generate")
    pg.wait_for_function("() => window.__genTimer.done > 0", polling=250)
    T = pg.evaluate("window.__genTimer")
    S = pg.evaluate("(({waited, up, committedAt}) => ({waited, up, committedAt}))(window.__faceEditor)")
    # from the stroke's release to its layers on the server (the page renders and reads the canvas first)
    lag = (S["committedAt"] - S["up"]) / 1000 if S.get("committedAt") and S["committedAt"] > S["up"] else 0.0
    return (T["done"] - T["click"]) / 1000, S["waited"] / 1000, (T["uploads"], T["posts"], T["joins"]), lag


def paired(args, tmp: str, server: Server) -> None:
    """API edit and browser Generate interleaved on one server; prints per-pair times, medians and the ratio."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    s = args.size
    face, layers = inputs(tmp, s)
    mask = write_png(os.path.join(tmp, "mask.png"), (layers[0][..., 3] > 0).astype(np.uint8) * 255)
    client = Client(server.url, verbose=False)
    api_t, web_t, api_c, web_c, reqs, waits, covers, lags, web_b = [], [], [], [], [], [], [0.0], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=find_chromium(), headless=True, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(300_000)
            pg.goto(server.url)
            pg.locator("#face-file input[type=file]").set_input_files(face)
            pg.wait_for_function("document.querySelector('#face-status').innerText.includes('Loaded face.png')")
            pg.wait_for_function("() => !document.querySelector('#face-editor-busy')")  # the photo is in the editor
            pg.wait_for_timeout(500)
            box = pg.locator("#face-editor canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for i in range(args.repeats + 1):
                t0, c0 = time.perf_counter(), server.cpu()
                _, msg = client.predict(handle_file(face), handle_file(mask), None, None, 0, api_name="/edit_face")
                api_t.append(time.perf_counter() - t0)
                api_c.append(server.cpu() - c0)
                # A person draws, then clicks: every Generate follows a new mask stroke (the same as via_browser,
                # moved a little each time).  Even pairs click right after the stroke, odd pairs after a 1 s pause
                # (the stroke's layers have had time to reach the server while the hand moves to the button).
                dy = 4 * i
                b0 = chromium_cpu_s()
                pg.mouse.move(cx - 40, cy - 30 + dy)
                pg.mouse.down()
                for k in range(9):
                    pg.mouse.move(cx - 40 + 10 * k, cy - 30 + dy + 5 * k)
                pg.mouse.up()
                if i % 2:
                    pg.wait_for_timeout(1000)
                c0, b1 = server.cpu(), chromium_cpu_s()
                dt, waited, n, lag = click_generate(pg)
                b2 = chromium_cpu_s()
                web_b.append((b1 - b0, b2 - b1))
                lags.append(lag)
                web_t.append(dt)
                waits.append(waited)
                reqs.append(n)
                web_c.append(server.cpu() - c0)
                msg = pg.locator("#face-status").inner_text()
                assert msg.startswith(f"Edited {s}x{s}"), msg
                # each stroke adds pixels to the mask: an edit that missed the newest stroke shows here
                cover = float(re.search(r"([0-9.]+)% of the pixels regenerated", msg).group(1))
                assert cover > covers[-1], f"pair {i}: the mask did not grow with the new stroke ({msg})"
                covers.append(cover)
        finally:
            browser.close()
    print(
        f"\npaired: /edit_face (gradio_client: 2 files up, result down) then a browser Generate, {args.repeats} pairs"
    )
    print("  first pair (warm-up) apart; every browser Generate follows a new stroke (odd pairs: 1 s pause first):")
    print(f"    API {api_t[0]:.2f} s, browser {web_t[0]:.2f} s")
    for i in range(1, len(api_t)):
        when = "after a 1 s pause" if i % 2 else "right after the stroke"
        print(
            f"    pair {i} ({when}): API {api_t[i]:.2f} s ({api_c[i]:.2f} CPU-s), browser {web_t[i]:.2f} s "
            f"({web_c[i]:.2f} CPU-s server; {waits[i]:.2f} s waiting for the stroke, on the server {lags[i]:.2f} s after "
            f"its release; Chromium {web_b[i][0]:.2f} CPU-s for the stroke, {web_b[i][1]:.2f} for the Generate), "
            f"ratio {web_t[i] / api_t[i]:.2f}; "
            f"per click: {reqs[i][0]} uploads, {reqs[i][1]} layer posts, {reqs[i][2]} queue joins"
        )
    ma, mw = statistics.median(api_t[1:]), statistics.median(web_t[1:])
    print(f"  median wall: API {ma:.2f} s, browser {mw:.2f} s: browser / API = {mw / ma:.2f} (target <= 1.5)")
    for name, sel in (("right after the stroke", slice(2, None, 2)), ("after a 1 s pause", slice(1, None, 2))):
        if web_t[sel]:
            r = statistics.median(w / a for w, a in zip(web_t[sel], api_t[sel]))
            print(f"    {name}: browser median {statistics.median(web_t[sel]):.2f} s, ratio {r:.2f}")
    if args.json:  # for benchmarks/cpu_inference.py's table
        rows = {
            "/edit_face (API)": (api_t[1:], api_c[1:]),
            "browser Generate": (web_t[1:], web_c[1:]),
        }
        with open(args.json, "w") as f:
            json.dump({k: {"wall": w, "server_cpu": c} for k, (w, c) in rows.items()}, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cnum", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--via", default="handler,api,browser", help="comma-separated: handler, api, browser")
    ap.add_argument("--paired", action="store_true", help="interleave API and browser edits; print the ratio")
    ap.add_argument("--json", help="--paired: also write the per-pair times to this file")
    args = ap.parse_args()
    if args.paired:
        args.via = "api,browser"
    vias = args.via.split(",")
    if "browser" in vias and find_chromium() is None:
        print("no Chromium found (CHROMIUM_PATH, /usr/lib/chromium/chromium): the browser row is left out")
        vias.remove("browser")
    s = args.size
    load = lambda: ", ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731
    print(f"load average at the start: {load()} on {os.cpu_count()} CPUs")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        net = SCFEGANGenerator(cnum=args.cnum).eval()
        params = sum(p.numel() for p in net.parameters())
        weights = save_generator_file(
            os.path.join(tmp, "G.pth"), net, scfegan_config(net.state_dict()), {"input_size": s}
        )
        sr_weights = os.path.join(tmp, "sr.pth")
        save_generator_weights(sr_weights, RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval())
        if "handler" in vias:
            rows["handler (in process)"] = via_handler(args, tmp, weights)
        if "api" in vias or "browser" in vias:
            server = Server(args, tmp, weights, sr_weights)
            try:
                if args.paired:
                    paired(args, tmp, server)
                    print(f"load average (1, 5, 15 min) at the end: {load()}")
                    return
                if "api" in vias:
                    rows["API (gradio_client)"] = via_api(args, tmp, server)
                if "browser" in vias:
                    rows["browser (Chromium)"] = via_browser(args, tmp, server)
            finally:
                server.close()
    print(
        f"\nSC-FEGAN edit {s}x{s} end to end (decode, network, composite, encode), cnum {args.cnum} "
        f"({params / 1e6:.1f} M parameters), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} here; "
        f"first edit (warm-up) apart, medians of {args.repeats}"
    )
    print(f"  {'via':22s} {'wall s':>7s} {'CPU s':>6s} {'warm-up s':>9s}   wall runs (s); what")
    for name, (times, cpu, note) in rows.items():
        rest = times[1:]
        print(
            f"  {name:22s} {statistics.median(rest):7.2f} {statistics.median(cpu[1:]):6.2f} {times[0]:9.2f}   "
            + ", ".join(f"{t:.2f}" for t in rest)
            + f"; {note}"
        )
    print(f"load average (1, 5, 15 min) at the end: {load()}")


if __name__ == "__main__":
    main()
