"""Resuming continues the same run: the run folder a ``ckpt_path`` lives in, and the same wandb run (issue 15 item 5).

``python train.py experiment=demo ckpt_path=logs/demo/runs/<time>/checkpoints/last.ckpt`` would otherwise get a
new timestamped folder from Hydra (and a new wandb run), and Lightning would warn that the checkpoint's dirpath
changed.  :func:`redirect_run_dir` runs in the Hydra callback (runtime/run_lock.py ``RunFolderLock``) before Hydra
creates the run folder: when ``ckpt_path`` is ``<run>/checkpoints/*.ckpt`` of a Hydra run folder (``<run>/.hydra``),
``hydra.run.dir`` becomes ``<run>``.  The resumed run's composed config goes to ``.hydra/resume_<time>/`` so the
first run's ``.hydra/config.yaml`` is kept; ``train.log`` is appended to.  An explicit ``hydra.run.dir=`` on the
command line wins.

A job of a sweep (``<sweep>/<job>/checkpoints/last.ckpt``, ``<sweep>/sweep_info.json``) continues its folder too:

* ``python train.py <overrides> ckpt_path=<sweep>/<job>/checkpoints/last.ckpt`` (no ``-m``): as above;
* with ``-m`` (or a ``+sweep=`` config), :func:`redirect_sweep_job` (run by runtime/sweeps.py ``SweepCallback``
  before the launcher starts) points ``hydra.sweep.dir`` / ``hydra.sweep.subdir`` at ``<sweep>`` / ``<job>``; the
  multirun must then be that one job (a list of values would start every job from the same checkpoint: refused).

Either way the job keeps its identity (``sweep_job.json``, written by the job: job number, swept values, wandb group
and name), so its ``result.json`` still carries its swept values and the sweep's ``summary.csv`` is rewritten with
it; a resumed job whose swept keys are given other values than the job ran with is refused, naming them.

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
#: A sweep job's identity (runtime.sweeps.job_identity), kept in its folder for a resume.
SWEEP_JOB_FILE = "sweep_job.json"


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


def _explicit_sweep_dir(config: DictConfig) -> bool:
    overrides = OmegaConf.select(config, "hydra.overrides.hydra", default=None) or []
    return any(str(o).lstrip("+~").startswith(("hydra.sweep.dir=", "hydra.sweep.subdir=")) for o in overrides)


def sweep_job_of(ckpt_path: str | os.PathLike | None) -> tuple[Path, str] | None:
    """``(<sweep>, <job>)`` when ``ckpt_path`` is ``<sweep>/<job>/checkpoints/<name>.ckpt`` of a sweep's job."""
    from runtime.sweeps import SWEEP_INFO

    run = run_folder_of(ckpt_path)
    if run is None or not (run.parent / SWEEP_INFO).is_file():
        return None
    return run.parent, run.name


def redirect_sweep_job(config: DictConfig) -> Path | None:
    """In a multirun whose ``ckpt_path`` is a sweep job's checkpoint: run that job again in its own folder (see the
    module docstring); returns the job folder or None.  Raises ValueError when the multirun would run several jobs."""
    from runtime.sweeps import swept_keys

    found = sweep_job_of(config.get("ckpt_path"))
    if found is None or _explicit_sweep_dir(config):
        return None
    sweep, job = found
    keys = swept_keys(config)
    if keys:
        recorded = read_sweep_job(sweep / job) or {}
        given = " ".join(f"{k}={v}" for k, v in (recorded.get("swept") or {}).items())
        raise ValueError(
            f"ckpt_path={config.ckpt_path} resumes job {job} of the sweep {sweep}, but this multirun still sweeps "
            f"{keys}: every job would start from that one checkpoint. Give the job's own values"
            f"{f' ({given})' if given else ''}, or resume without -m"
        )
    subdir = f"{config.hydra.output_subdir or '.hydra'}/resume_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    with read_write(config), read_write(config.hydra), open_dict(config):  # Hydra marks its node read-only
        config.hydra.sweep.dir = str(sweep)
        config.hydra.sweep.subdir = job
        config.hydra.output_subdir = subdir
        # Each job's config is composed again from these (Hydra's load_sweep_config): the same folder there too.
        config.hydra.overrides.hydra.extend(
            [f"hydra.sweep.dir='{sweep}'", f"hydra.sweep.subdir='{job}'", f"hydra.output_subdir='{subdir}'"]
        )
    log.info(f"resuming job {job} of the sweep {sweep} in its folder")
    return sweep / job


def read_sweep_job(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The identity a sweep job recorded in its folder (``sweep_job.json``), or None."""
    path = Path(str(output_dir)) / SWEEP_JOB_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning(f"{path}: not readable ({err}); the resumed job is not matched to its sweep")
        return None
    keys = ("group", "name", "swept", "overrides", "job_num", "sweep_dir")
    if not isinstance(data, dict) or not all(k in data for k in keys) or not isinstance(data["swept"], dict):
        log.warning(f"{path}: not a sweep job record; the resumed job is not matched to its sweep")
        return None
    return {k: data[k] for k in keys}


def write_sweep_job(output_dir: str | os.PathLike, identity: dict[str, Any]) -> None:
    path = Path(str(output_dir)) / SWEEP_JOB_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(identity, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def check_resumed_job_values(cfg: DictConfig, identity: dict[str, Any]) -> None:
    """A resumed sweep job trains with the values it was started with: a swept key given another value is refused."""
    wrong = []
    for key, recorded in identity["swept"].items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (DictConfig,)) or OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        same = value == recorded
        if not same:
            try:
                same = float(value) == float(recorded)
            except (TypeError, ValueError):
                same = str(value) == str(recorded)
        if not same:
            wrong.append(f"{key}={value!r} (the job ran with {recorded!r})")
    if wrong:
        raise ValueError(
            f"resuming job {identity['job_num']} of the sweep {identity['sweep_dir']} with other values of its swept "
            f"keys: {', '.join(wrong)}. Give the job's values: {' '.join(identity['overrides'])}"
        )


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
