"""Face detection and alignment on real-photo-sized inputs: CPU time and landmark error (figures, not a test).

    python benchmarks/face_align.py [--faces 24] [--repeats 5] [--threads N]

1. Time: a CelebAMask-HQ face turned 20 degrees and enlarged into a 2000 x 1500 photo; timed are MTCNN detection
   (pyramid at 1024 on the long side, three stages) with and without the eyes-level O-Net passes, the CelebA-HQ crop
   (transform + warp of the photo to 512 x 512), and ``edit_photo`` end to end with a stub network (so the figure is
   what the photo path adds to the generator's own time).  Process CPU time (the 2 cores are shared; wall time is
   printed too), median of ``--repeats`` runs after one warm-up, the variants interleaved.
2. Landmark error: ``--faces`` training faces, each turned / scaled / placed into a 1400 x 1000 photo (the scenes
   of tests/face_scenes.py); the detected eyes, mapped back through the known transform, against the centroids of the
   labelled eyes, as a fraction of the eye distance; the five landmarks against those found on the original face
   (consistency); and where the labelled eyes land in the aligned 512 x 512 crop against where they are in the
   (CelebA-HQ-aligned) original.

Needs ../shared/data/faces/celebamask_mini and the facenet-pytorch wheel (fetched without deps when absent).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project root
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the test scenes

import tv_compat  # noqa: E402  (must precede anything that imports torchvision)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from face_scenes import apply, background, eye_centres, face_to_photo, invert, labelled_faces, place, scene  # noqa: E402

from inference.face_align import celebahq_transform, detect_faces, edit_photo, warp_to_crop  # noqa: E402
from weights.facenet_mtcnn import load_mtcnn  # noqa: E402

SIZE = (512, 512)


def _cpu(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def timing(nets, face: np.ndarray, repeats: int) -> None:
    hw = (1500, 2000)
    m = face_to_photo(face.shape[:2], 20.0, 1.5, (1150, 700))
    photo = place(face, m, background(hw, 1))
    mask = np.zeros(hw, bool)
    mouth = apply(m, [[256, 380]])[0]
    mask[int(mouth[1]) - 60 : int(mouth[1]) + 60, int(mouth[0]) - 100 : int(mouth[0]) + 100] = True

    def stub(image, mask_c, sketch, color):
        return image[::-1].copy()

    variants = {
        "detect (MTCNN only)": lambda: detect_faces(photo, nets, upright_passes=0),
        "detect + 2 eyes-level O-Net passes": lambda: detect_faces(photo, nets),
        "align (transform + warp to 512)": lambda: warp_to_crop(
            photo, celebahq_transform(faces[0].landmarks, SIZE), SIZE
        ),
        "edit_photo, stub network (all of it)": lambda: edit_photo(photo, mask, None, None, stub, SIZE, nets=nets),
    }
    faces = detect_faces(photo, nets)
    assert faces, "no face found in the timing photo"
    for fn in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():  # interleaved
            times[name].append(_cpu(fn)[1:])
    res = edit_photo(photo, mask, None, None, stub, SIZE, nets=nets)
    print(
        f"2000x1500 photo, face {faces[0].box[2] - faces[0].box[0]:.0f} px wide, {len(faces)} face(s) found, "
        f"edit mode {res.mode!r}, crop scale {res.scale:.2f} photo px per crop px"
    )
    for name, t in times.items():
        cpu = statistics.median(x[0] for x in t)
        wall = statistics.median(x[1] for x in t)
        print(f"  {name:40s} CPU {cpu * 1000:7.0f} ms   wall {wall * 1000:7.0f} ms")


def errors(nets, faces, passes: int) -> dict:
    out = {"eye": [], "consistency": [], "crop_angle": [], "crop_shift": [], "crop_scale": [], "missed": 0}
    for k, (_stem, rgb, labels) in enumerate(faces):
        photo, m = scene(rgb, k)
        found = detect_faces(photo, nets, upright_passes=passes)
        orig = detect_faces(rgb, nets, upright_passes=passes)
        if not found or not orig:
            out["missed"] += 1
            continue
        eyes = eye_centres(labels)
        io = float(np.linalg.norm(eyes[1] - eyes[0]))
        back = apply(invert(m), found[0].landmarks)
        out["eye"].append(np.linalg.norm(back[:2] - eyes, axis=1).max() / io)
        out["consistency"].append(np.linalg.norm(back - orig[0].landmarks, axis=1).max() / io)
        in_crop = apply(invert(celebahq_transform(found[0].landmarks, SIZE)), apply(m, eyes))
        d = in_crop[1] - in_crop[0]
        out["crop_angle"].append(abs(math.degrees(math.atan2(d[1], d[0]))))
        out["crop_shift"].append(float(np.linalg.norm(in_crop.mean(0) - eyes.mean(0))))
        out["crop_scale"].append(abs(np.linalg.norm(d) / io - 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(ROOT).parent / "shared" / "data" / "faces" / "celebamask_mini"
    if not root.is_dir():
        sys.exit(f"{root} not present")
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    nets = load_mtcnn()
    faces = labelled_faces(root, args.faces)
    timing(nets, faces[0][1], args.repeats)
    print(f"\nlandmarks on {len(faces)} faces turned 15-30 degrees, scaled 0.6-2.2x, placed in 1400x1000 photos:")
    units = {
        "eye": "x eye distance",
        "consistency": "x eye distance",
        "crop_angle": "degrees",
        "crop_shift": "px (of 512)",
        "crop_scale": "(relative)",
    }
    for passes in (0, 2):
        e = errors(nets, faces, passes)
        print(f"  eyes-level O-Net passes: {passes}  (faces missed: {e['missed']})")
        for key, unit in units.items():
            v = e[key]
            print(
                f"    {key:12s} median {np.median(v):6.3f}  p90 {np.percentile(v, 90):6.3f}  max {np.max(v):6.3f}  {unit}"
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
