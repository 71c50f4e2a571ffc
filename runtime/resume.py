"""Resuming continues the same run: the run folder a ``ckpt_path`` lives in, and the same wandb run (issue 15 item 5).

``python train.py experiment=demo ckpt_path=logs/demo/runs/<time>/checkpoints/last.ckpt`` would otherwise get a
new timestamped folder from Hydra (and a new wandb run), and Lightning would warn that the checkpoint's dirpath
changed.  :func:`redirect_run_dir` runs in the Hydra callback (runtime/run_lock.py ``RunFolderLock``) before Hydra
creates the run folder: when ``ckpt_path`` is ``<run>/checkpoints/*.ckpt`` of a Hydra run folder (``<run>/.hydra``),
``hydra.run.dir`` becomes ``<run>``.  The resumed run's composed config goes to ``.hydra/resume_<time>/`` so the
first run's ``.hydra/config.yaml`` is kept; ``train.log`` is appended to.  An explicit ``hydra.run.dir=`` on the
command line wins.  Multirun jobs keep their own folders (the sweep decides them).

The wandb run id, group and name are written to ``<run>/wandb_run.json`` by the run that created them and passed
back to wandb (``id=``, ``resume="allow"``) when that folder is resumed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

WANDB_RUN_FILE = "wandb_run.json"


def run_folder_of(ckpt_path: str | os.PathLike | None) -> Path | None:
    """``<run>`` when ``ckpt_path`` is ``<run>/checkpoints/<name>.ckpt`` and ``<run>`` is a Hydra run folder."""
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path)).expanduser().resolve()
    if path.suffix != ".ckpt" or path.parent.name != "checkpoints":
        return None
    run = path.parent.parent
    return run if (run / ".hydra").is_dir() else None


def _explicit_run_dir(config: DictConfig) -> bool:
    overrides = OmegaConf.select(config, "hydra.overrides.hydra", default=None) or []
    return any(str(o).lstrip("+~").startswith("hydra.run.dir=") for o in overrides)


def redirect_run_dir(config: DictConfig) -> Path | None:
    """Point ``hydra.run.dir`` at the run folder being resumed (see the module docstring); returns it or None."""
    run = run_folder_of(config.get("ckpt_path"))
    if run is None or _explicit_run_dir(config):
        return None
    with read_write(config), open_dict(config):
        config.hydra.run.dir = str(run)
        # Keep the first run's .hydra/config.yaml (the app and evaluate read it); this run's config beside it.
        config.hydra.output_subdir = (
            f"{config.hydra.output_subdir or '.hydra'}/resume_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        )
    log.info(f"resuming into the run folder of ckpt_path: {run}")
    return run


def resumes_this_folder(cfg: DictConfig) -> bool:
    """Whether ``cfg.ckpt_path`` lies in this run's output folder (the resumed run continues there)."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return False
    folder = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    return Path(str(ckpt)).expanduser().resolve().is_relative_to(folder)


def read_wandb_run(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded wandb ``{id, group, name}`` of the run in ``output_dir``, or None (absent or unreadable)."""
    path = Path(str(output_dir)) / WANDB_RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning(f"{path}: not readable ({err}); the resumed run gets a new wandb run")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"].isalnum():
        log.warning(f"{path}: no valid wandb run id; the resumed run gets a new wandb run")
        return None
    return {k: data[k] for k in ("id", "group", "name") if isinstance(data.get(k), str)}


def write_wandb_run(output_dir: str | os.PathLike, run_id: str, group: str | None, name: str | None) -> None:
    path = Path(str(output_dir)) / WANDB_RUN_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"id": run_id, "group": group or "", "name": name or ""}, indent=1) + "\n")
    os.replace(tmp, path)
