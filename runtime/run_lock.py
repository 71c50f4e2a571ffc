"""One run per run folder: an exclusive ``fcntl.flock`` on ``<run dir>/.run.lock`` held while the run lives.

Two ``python train.py hydra.run.dir=X`` started together would otherwise both succeed and interleave their
``.hydra/`` configs, logs, checkpoints and ``result.json``.  The second one now stops with an error naming the
folder and the holder's pid.  The lock is an advisory flock: it goes away with the process (crash, kill -9
included), so resuming into the same folder after the first run ended just works; the lock file itself stays.

Only the launching process takes it: DDP ranks started by Lightning (``LOCAL_RANK`` > 0), by torchrun (``RANK``)
or by srun (``SLURM_PROCID``) belong to the run that holds the lock and must not lock each other out.
It is taken twice in one process (the Hydra callback before Hydra writes ``.hydra/``, then ``train()``): the
same process re-enters its own lock (counted).

Note: flock is per host on some network filesystems (old NFS); two runs on different hosts into one folder are not
caught there.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

LOCK_NAME = ".run.lock"
_held: dict[str, list] = {}  # resolved folder -> [open file, count]


class RunFolderInUseError(RuntimeError):
    """Another process holds the run folder's lock; the message names the folder and the holder."""


def is_launching_process() -> bool:
    """False in a DDP rank other than the launcher (Lightning children, torchrun or srun ranks > 0)."""
    for var in ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True


def acquire(folder: str | os.PathLike) -> bool:
    """Lock ``folder`` for this process (re-entrant); raises :class:`RunFolderInUseError` when another process
    holds it.  Returns False (and does nothing) in a non-launching DDP rank."""
    if not is_launching_process():
        return False
    folder = Path(folder).expanduser().resolve()
    key = str(folder)
    if key in _held:
        _held[key][1] += 1
        return True
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown pid"
        fh.close()
        raise RunFolderInUseError(
            f"run folder {key} is in use by another run ({holder}); wait for it to end, or give this run its own "
            f"folder (hydra.run.dir=...; the default is timestamped). Lock file: {path}"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    _held[key] = [fh, 1]
    return True


def release(folder: str | os.PathLike) -> None:
    key = str(Path(folder).expanduser().resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        fh = entry[0]
        del _held[key]
        fh.seek(0)
        fh.truncate()  # the pid no longer holds it
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class RunFolderLock(HydraCallback):
    """Hydra callback: lock ``hydra.run.dir`` before Hydra writes anything into it (single runs; each multirun
    job is locked by ``train()`` in its own folder)."""

    def __init__(self) -> None:
        self._folder: str | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra sets HydraConfig only later, in run_job; the run dir's interpolations (paths.root_dir ->
        # ${hydra:runtime.cwd}, ${hydra:job.name}, ...) need it now.
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        folder = str(config.hydra.run.dir)
        try:
            locked = acquire(folder)
        except RunFolderInUseError as err:
            # Hydra turns a callback's Exception into a warning and goes on; SystemExit stops the run here.
            raise SystemExit(f"Error: {err}") from None
        if locked:
            self._folder = folder

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._folder is not None:
            release(self._folder)
            self._folder = None
