"""Fixed evaluation mask sets (``eval_masks=DIR``): folders written by ``python -m scripts.make_eval_masks``.

A set is read only when its ``manifest.json`` says this project's tool wrote it, at the model's resolution, and
every listed PNG has the SHA-256 the manifest records (a changed or truncated file is an error naming it), so that
two tables made from the same folder are made from the same masks.  Mask ``k`` (manifest order, by ``index``) goes
with test image ``k`` (the sorted file list): a set needs at least as many masks as there are test images.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthesis.mask_presets import GENERATOR_VERSION, MANIFEST, MANIFEST_TOOL, PRESETS


@dataclass
class MaskSet:
    folder: Path
    preset: str
    size: int
    seed: int
    generator_version: str
    files: list[Path]  # in manifest index order
    sha256: list[str]

    def mask(self, k: int) -> torch.Tensor:
        """``[1, S, S]`` float {0, 1} mask ``k`` (1 = erased), its bytes checked against the manifest."""
        from PIL import Image

        path = self.files[k]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256[k]:
            raise ValueError(
                f"mask file {path} does not match the SHA-256 in {self.folder / MANIFEST} (changed or damaged; "
                f"rewrite the set with: python -m scripts.make_eval_masks ... --overwrite)"
            )
        import io

        with Image.open(io.BytesIO(data)) as im:
            if im.size != (self.size, self.size):
                raise ValueError(f"mask file {path} is {im.size[0]}x{im.size[1]}, its manifest says {self.size}")
            m = np.asarray(im.convert("L"))
        return torch.from_numpy((m > 127).astype(np.float32))[None]


def _field(manifest: dict, key: str, kind, path: Path):
    value = manifest.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{path}: field {key!r} is missing or not a {getattr(kind, '__name__', kind)} ({value!r})")
    return value


def read_mask_set(folder: str | Path, resolution: int) -> MaskSet:
    """The set in ``folder``, checked (see the module docstring); errors name the file and the field."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"eval_masks: {str(folder)!r} holds no {MANIFEST}; write a mask set with "
            f"python -m scripts.make_eval_masks --preset thin --num N --size {resolution} --out {folder}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("tool") != MANIFEST_TOOL:
        raise ValueError(f"{path}: not written by {MANIFEST_TOOL} (field 'tool' is {manifest.get('tool')!r})")
    preset = _field(manifest, "preset", str, path)
    if preset not in PRESETS:
        raise ValueError(f"{path}: unknown preset {preset!r} (expected one of {PRESETS})")
    version = _field(manifest, "generator_version", str, path)
    if version != GENERATOR_VERSION:
        # The files are what their hashes say, so the set stays usable; the table says which generator made it.
        warnings.warn(
            f"{path}: generator_version {version!r}, this code writes {GENERATOR_VERSION!r}: the masks are read "
            "as they are (their hashes are checked), but this command would not write the same set today",
            stacklevel=2,
        )
    size = _field(manifest, "size", list, path)
    if len(size) != 2 or size[0] != size[1] or not isinstance(size[0], int):
        raise ValueError(f"{path}: field 'size' must be [S, S], got {size!r}")
    if size[0] != resolution:
        raise ValueError(
            f"{path}: masks are {size[0]}x{size[0]} but the model evaluates at {resolution}x{resolution} "
            f"(face_data.resolution / data.resolution); write a set with --size {resolution}"
        )
    entries = _field(manifest, "files", list, path)
    rows = []
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("index"), int)):
            raise ValueError(f"{path}: a 'files' entry lacks file/index/sha256: {e!r}")
        name = e["file"]
        if Path(name).name != name or not name.endswith(".png"):
            raise ValueError(f"{path}: file entry {name!r} must be a PNG name inside the set's folder")
        if not isinstance(e.get("sha256"), str):
            raise ValueError(f"{path}: file entry {name!r} has no sha256")
        rows.append((e["index"], folder / name, e["sha256"]))
    rows.sort()
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: the 'index' fields must be 0 .. {len(rows) - 1}, each once")
    for _, p, _ in rows:
        if not p.is_file():
            raise FileNotFoundError(f"mask file {p} listed in {path} does not exist")
    return MaskSet(
        folder=folder,
        preset=preset,
        size=size[0],
        seed=int(manifest.get("seed", -1)),
        generator_version=version,
        files=[r[1] for r in rows],
        sha256=[r[2] for r in rows],
    )


def mask_set_folders(value) -> list[str]:
    """``eval_masks``: null, one folder, or a list of folders."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def read_mask_sets(value, resolution: int, num_images: int) -> list[MaskSet]:
    sets = [read_mask_set(f, resolution) for f in mask_set_folders(value)]
    seen: dict[str, Path] = {}
    for s in sets:
        if s.preset in seen:
            raise ValueError(
                f"eval_masks: two sets of preset {s.preset!r} ({seen[s.preset]} and {s.folder}); the rows are named "
                "by preset: evaluate them in separate runs"
            )
        seen[s.preset] = s.folder
        if len(s.files) < num_images:
            raise ValueError(
                f"eval_masks: {s.folder} holds {len(s.files)} masks for {num_images} test images (mask k goes with "
                f"image k); write at least {num_images} (--num {num_images})"
            )
    return sets
