"""Checkpoint files that are either the complete new state or the previous one, never a truncated mix.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction: the bytes go to a temporary file in
``$TMPDIR`` which is then *moved* onto the target.  When ``$TMPDIR`` and the run folder are on different
filesystems (node-local /tmp, run folders on NFS/Lustre: the usual cluster layout) that move is a copy into the
target itself, so a full disk or a kill during the copy leaves a truncated ``last.ckpt`` and the previous state is
gone, and the ``$TMPDIR`` file stays behind.

Here the temporary file is created in the target's own folder (same filesystem), written, flushed and fsync'ed,
then renamed over the target with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed so the rename
survives a power cut.  On any failure (``ENOSPC``, an exception, ``KeyboardInterrupt``) the temporary file is
removed and the previous file is untouched.  Temporary files left by a process killed with SIGKILL are named
``.<target>.tmp-<pid>-<random>`` and removed by :func:`remove_stale_temp_files` when the next run starts in that
folder (the run-folder lock, runtime/run_lock.py, guarantees no other writer is active there).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

_TEMP_RE = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened/fsync'ed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` only with a complete, fsync'ed file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        # O_EXCL: never follow or reuse an existing file of that name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, (OSError, RuntimeError)):
            raise _write_error(err, path) from err
        raise
    _fsync_dir(path.parent)


def _write_error(err: BaseException, path: Path) -> OSError:
    """A full disk surfaces from torch's zip writer as ``unexpected pos 625408 vs 625300``: say so, with the file
    (the previous file of that name is intact: the write went to a temporary file)."""
    import errno
    import shutil

    with contextlib.suppress(OSError):
        free = shutil.disk_usage(path.parent).free
        if getattr(err, "errno", None) == errno.ENOSPC or free < (64 << 20):
            return OSError(
                errno.ENOSPC,
                f"no space left on the device writing {path} ({free:,} bytes free); the "
                f"previous {path.name}, if any, is unchanged ({type(err).__name__}: {err})",
            )
    return OSError(getattr(err, "errno", None) or errno.EIO, f"cannot write {path}: {type(err).__name__}: {err}")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_torch_save` leaves when its process is killed (SIGKILL) mid-write.
    Call only while holding the run folder's lock (no other process may be writing there)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if _TEMP_RE.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go through :func:`atomic_torch_save` (remote URLs: Lightning's)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        protocol = get_filesystem(path).protocol
        if "file" not in ((protocol,) if isinstance(protocol, str) else tuple(protocol)):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options (got {storage_options!r})")
        atomic_torch_save(checkpoint, path)
