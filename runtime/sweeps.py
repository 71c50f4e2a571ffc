"""Hydra sweeps: which keys a sweep varies, the multirun + DDP guard, and the end-of-sweep summary.

``SweepCallback`` is a *Hydra* callback (``hydra.callbacks`` in conf/hydra/default.yaml), run by the process that
starts the multirun:

* ``on_multirun_start``: stops a sweep up front when its jobs would make Lightning re-run the command line for
  DDP (see :func:`ddp_launch_problem`); writes ``<sweep dir>/sweep_info.json`` with the swept keys and the wandb
  group, which every job reads to name its wandb run after its own values of those keys;
* ``on_multirun_end``: reads the ``result.json`` each job's ``train()`` wrote and writes ``summary.csv`` plus a
  printed table: one row per job with its overrides and final validation metrics, best objective first.

After a sweep that stopped early (a failed job stops the basic sweeper), the summary of what finished is
``python -m scripts.sweep_summary <sweep dir>``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from runtime.results import RESULT_FILE

log = logging.getLogger(__name__)

SWEEP_INFO = "sweep_info.json"

SUMMARY_FILE = "summary.csv"


# --------------------------------------------------------------------------------------------- devices / launch
def devices_per_node(trainer_cfg) -> int:
    """How many processes Lightning will run on this node for ``trainer.accelerator`` / ``trainer.devices``."""
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto").lower()
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, (DictConfig, ListConfig)):
        devices = OmegaConf.to_container(devices, resolve=True)
    import torch

    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        from pytorch_lightning.accelerators import CUDAAccelerator

        if devices == "auto":
            return CUDAAccelerator.auto_device_count()
        try:
            ids = CUDAAccelerator.parse_devices(devices)
        except Exception:  # noqa: BLE001  (no such GPU here: Lightning's Trainer reports it with its own message)
            if isinstance(devices, list) or "," in str(devices):
                return len(devices) if isinstance(devices, list) else len([d for d in str(devices).split(",") if d])
            return max(1, int(devices))
        return len(ids) if ids else 0
    if accelerator == "cpu":
        from pytorch_lightning.accelerators import CPUAccelerator

        return int(CPUAccelerator.parse_devices(1 if devices == "auto" else devices))
    try:
        return len(devices) if isinstance(devices, list) else max(1, int(devices))
    except (TypeError, ValueError):
        return 1


def processes_started_externally() -> bool:
    """True when a cluster launcher (srun tasks, torchrun) or Lightning itself already started one process per
    device, so Lightning will not re-run the command line."""
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if "LOCAL_RANK" in os.environ:  # torchrun, or a process Lightning itself started
        return True
    return TorchElasticEnvironment.detect() or SLURMEnvironment.detect()


def spawns_processes(strategy) -> bool:
    """The strategy starts its processes from the calling process (spawn/fork), not by re-running argv."""
    if isinstance(strategy, (DictConfig, dict)):
        return str(strategy.get("start_method", "popen")) in ("spawn", "fork", "forkserver")
    name = str(strategy or "auto")
    return any(k in name for k in ("spawn", "fork", "notebook"))


def launcher_name(hydra_cfg) -> str:
    target = str((hydra_cfg.get("launcher") or {}).get("_target_", "") if hydra_cfg is not None else "")
    return target.rsplit(".", 1)[-1]


MULTIRUN_DDP_MESSAGE = """\
Hydra multirun (-m, or a +sweep config) with trainer.devices={n} (DDP started from inside the job) is stopped \
before any job runs: Lightning would start the other {m} process(es) by re-running this command line, -m and the \
sweep included, so every one of them would run its own copy of the whole sweep.  Run instead:
  * on a SLURM cluster: add  hydra/launcher=submitit_slurm_ddp  (one SLURM task per GPU; Lightning then starts
    no processes itself);
  * on one multi-GPU machine: add  trainer.strategy=ddp_gan_spawn  (each job spawns its {n} processes, one job
    after another);
  * single-GPU jobs side by side, one per GPU: set  trainer.devices=1 hydra/launcher=joblib_gpus ;
  * or no -m: run  python train.py <overrides> trainer.devices={n}  once per configuration (a shell loop)."""

JOBLIB_DDP_MESSAGE = """\
hydra/launcher=joblib runs jobs side by side on one machine, each on one device; trainer.devices={n} would start \
DDP inside every job.  Use trainer.devices=1 with joblib (each job gets its own GPU), or the basic launcher with \
trainer.strategy=ddp_gan_spawn, or hydra/launcher=submitit_slurm_ddp on a cluster."""


def ddp_launch_problem(trainer_cfg, hydra_cfg=None) -> str | None:
    """The error message when a multirun job would start DDP processes by re-running the command line
    (Lightning's subprocess launcher), else None."""
    n = devices_per_node(trainer_cfg)
    if n <= 1:
        return None
    if "Joblib" in launcher_name(hydra_cfg):
        return JOBLIB_DDP_MESSAGE.format(n=n)
    if processes_started_externally() or spawns_processes(trainer_cfg.get("strategy", "auto")):
        return None
    return MULTIRUN_DDP_MESSAGE.format(n=n, m=n - 1)


# --------------------------------------------------------------------------------------------- swept keys
def _parse(overrides: Iterable[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides=list(overrides))


def swept_keys(config: DictConfig) -> list[str]:
    """Keys a multirun varies: ``hydra.sweeper.params`` overridden by the command line, as the basic sweeper
    combines them (a command-line value replaces the config's list for that key)."""
    params = config.hydra.sweeper.get("params") if "sweeper" in config.hydra else None
    items = [f"{k}={v}" for k, v in (params or {}).items()]
    items += [str(o) for o in config.hydra.overrides.get("task", []) or []]
    final: dict[str, bool] = {}
    for item in items:
        try:
            o = _parse([item])[0]
        except Exception:  # noqa: BLE001  (a sweeper-specific syntax the basic grammar rejects: treat as searched)
            final[item.split("=", 1)[0].lstrip("+~")] = True
            continue
        final[o.key_or_group] = o.is_sweep_override()
    return [k for k, swept in final.items() if swept]


def read_sweep_info(sweep_dir: str | os.PathLike) -> dict:
    try:
        return json.loads((Path(sweep_dir) / SWEEP_INFO).read_text())
    except (OSError, ValueError):
        return {}


def job_identity(cfg: DictConfig) -> dict | None:
    """For a multirun job: ``{"group", "name", "swept", "overrides", "job_num", "sweep_dir"}``; None otherwise.

    ``name`` is the job's values of the swept keys (``model.gan.gan_weight=0.001,...``); when the sweep info is
    missing (a job started by hand), Hydra's ``override_dirname``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = str(hc.sweep.dir)
    info = read_sweep_info(sweep_dir)
    overrides = [str(o) for o in hc.overrides.task]
    keys = info.get("swept_keys") or []
    swept = {}
    for o in _parse(overrides):
        if o.key_or_group in keys:
            swept[o.key_or_group] = o.value() if not isinstance(o.value(), (list, dict)) else str(o.value())
    pairs = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys]
    name = ",".join(pairs) or str(hc.job.override_dirname) or f"job{hc.job.num}"
    group = info.get("group") or f"{cfg.get('sweep_name') or cfg.get('task_name', 'sweep')}-{Path(sweep_dir).name}"
    return {
        "group": group,
        "name": name,
        "swept": swept,
        "overrides": overrides,
        "job_num": int(hc.job.num),
        "sweep_dir": sweep_dir,
    }


# --------------------------------------------------------------------------------------------- summary
def _is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def collect_results(sweep_dir: str | os.PathLike) -> list[dict]:
    rows = []
    for path in sorted(Path(sweep_dir).glob(f"**/{RESULT_FILE}")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            log.warning(f"sweep summary: cannot read {path}: {err}")
    return rows


def summarize(sweep_dir: str | os.PathLike, direction: str | None = None) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the sweep's jobs, best objective first (NaN last).  ``direction``: maximize | minimize
    (default: what the jobs recorded, from the checkpoint monitor's mode)."""
    results = collect_results(sweep_dir)
    if not results:
        return [], []
    keys = read_sweep_info(sweep_dir).get("swept_keys") or sorted({k for r in results for k in r.get("swept", {})})
    direction = direction or results[0].get("direction", "maximize")
    monitor = results[0].get("monitor") or "objective"
    objective_key = results[0].get("objective_key") or monitor  # result.json of older runs: the monitor
    metric_keys = sorted(
        {k for r in results for k in r.get("metrics", {}) if k.startswith("val/") and k.count("/") == 1}
    )

    def sort_key(r):
        v = r.get("objective")
        if _is_nan(v):
            return (1, 0.0)
        return (0, -v if direction == "maximize" else v)

    results.sort(key=sort_key)
    columns = [
        "rank",
        "job",
        *keys,
        f"objective ({objective_key}, {direction})",
        "best " + monitor,
        *metric_keys,
        "iter",
        "status",
        "overrides",
        "output_dir",
    ]
    rows = []
    for i, r in enumerate(results, 1):
        swept = r.get("swept", {})
        rows.append(
            [
                i,
                r.get("job_num"),
                *[swept.get(k) for k in keys],
                r.get("objective"),
                r.get("best_score"),
                *[r.get("metrics", {}).get(k) for k in metric_keys],
                r.get("iteration"),
                r.get("status"),
                " ".join(r.get("overrides", [])),
                r.get("output_dir"),
            ]
        )
    return columns, rows


def write_summary(sweep_dir: str | os.PathLike, direction: str | None = None, echo: bool = True) -> Path | None:
    columns, rows = summarize(sweep_dir, direction)
    if not rows:
        log.warning(f"sweep summary: no {RESULT_FILE} under {sweep_dir}")
        return None
    out = Path(sweep_dir) / SUMMARY_FILE
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    if echo:
        print(format_table(columns, rows), flush=True)
        ranked = next(c for c in columns if c.startswith("objective ("))
        better = "lower" if ranked.endswith(", minimize)") else "higher"
        print(f"sweep ranked by {ranked[len('objective ') :]}: {better} is better, best first", flush=True)
        print(f"sweep summary: {out}", flush=True)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table (no overrides/output_dir columns: they are in the CSV)."""
    keep = [i for i, c in enumerate(columns) if c not in ("overrides", "output_dir")]
    cells = [[columns[i] for i in keep]] + [[_fmt(r[i]) for i in keep] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(keep))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- Hydra callback
try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepCallback(_HydraCallback):
    """See the module docstring."""

    def __init__(self, summary: bool = True, check_ddp: bool = True) -> None:
        self.summary = summary
        self.check_ddp = check_ddp
        self._resumed_job: Path | None = None
        self._kept_multirun: bytes | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra sets HydraConfig per job, after this callback: the default sweep dir (paths.log_dir, from
        # ${hydra:runtime.cwd}) would not resolve here, nor in the basic launcher that follows (issue 15).
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        if self.check_ddp and "trainer" in config:
            problem = ddp_launch_problem(config.trainer, config.hydra)
            if problem:
                # Hydra turns a callback's exceptions into warnings and carries on; SystemExit is not caught.
                log.error(problem)
                raise SystemExit(f"Error: {problem}")
        from runtime.resume import redirect_sweep_job

        try:
            # ckpt_path=<sweep>/<job>/checkpoints/last.ckpt: that job again, in its folder (runtime/resume.py).
            self._resumed_job = redirect_sweep_job(config)
        except ValueError as err:
            log.error(str(err))
            raise SystemExit(f"Error: {err}") from None
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self._resumed_job is not None:
            # The sweeper writes this multirun's config over the sweep's multirun.yaml: keep the sweep's.
            first = sweep_dir / "multirun.yaml"
            self._kept_multirun = first.read_bytes() if first.is_file() else None
            if self._kept_multirun is not None:
                (sweep_dir / "multirun.yaml.before_resume").write_bytes(self._kept_multirun)
            return  # the sweep's sweep_info.json (swept keys, wandb group) stays as it was
        sweep_dir.mkdir(parents=True, exist_ok=True)
        name = config.get("sweep_name") or config.get("task_name", "sweep")
        info = {
            "swept_keys": swept_keys(config),
            "sweep_name": name,
            "group": f"{name}-{sweep_dir.name}",
            "overrides": [str(o) for o in config.hydra.overrides.task],
        }
        (sweep_dir / SWEEP_INFO).write_text(json.dumps(info, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "_resumed_job", None) is not None and getattr(self, "_kept_multirun", None) is not None:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            (sweep_dir / "multirun.yaml").write_bytes(self._kept_multirun)
            (sweep_dir / "multirun.yaml.before_resume").unlink(missing_ok=True)
        if not self.summary:
            return
        direction = None
        sweeper = config.hydra.get("sweeper") or {}
        if "direction" in sweeper and isinstance(sweeper.get("direction"), str):
            direction = str(sweeper.direction)
        write_summary(str(config.hydra.sweep.dir), direction)
