"""What the GAN recipes share: iteration counting in batches, named optimizers, freezing a network for
the other network's step, and checkpoints without the frozen loss networks.

It is also the written contract between a recipe and the runner (runtime/training.py, runtime/results.py) and the
callbacks: :class:`RecipeContract` lists what they call; :class:`IterationGANModule` implements every member, with a
default where a recipe may have nothing to say.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_only

from lightning_modules import speed as speed_lib

log = logging.getLogger(__name__)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def to_primitive(x):
    """OmegaConf containers -> plain dicts/lists, so checkpoints load with weights_only=True."""
    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def check_positive_int(value, key: str, hint: str = "") -> int:
    """An integer >= 1 (numbers given as strings on the command line included); an error naming ``key``."""
    try:
        number = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ValueError(f"{key}={value!r} must be a whole number >= 1{f' ({hint})' if hint else ''}")
    return number


def rng_states() -> dict:
    """The global RNG states (torch, CUDA, numpy, random) in types ``torch.load(weights_only=True)`` accepts.

    Saved in checkpoints so that a resumed run draws what the uninterrupted one would (SC-FEGAN's gradient
    penalty interpolates with ``torch.rand``); the data order and augmentations do not use them
    (datamodules/samplers.py)."""
    import random

    import numpy as np

    _, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict) -> None:
    import random

    import numpy as np

    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "python" in states:
        random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in states["python"]))
    if "numpy" in states:
        n = states["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class NonFiniteTrainingError(RuntimeError):
    """A loss or a weight became NaN/Inf: training stops (train.py exits non-zero, result.json status non_finite)."""


@runtime_checkable
class RecipeContract(Protocol):
    """What the runner and the callbacks use of a training recipe (all implemented by IterationGANModule)."""

    #: Training batches done (Lightning's global_step counts optimizer steps: 2+ per GAN batch); saved in checkpoints.
    iteration: int
    #: Validation sample rows by grid name (the first ``max_sample_rows`` validation images of the whole set, each a
    #: list of uint8 HxWx3 images, one per ``sample_labels`` column; under DDP gathered from every rank at the end of
    #: validation); callbacks/sample_images.py writes them as one labelled grid per name after each validation.
    val_sample_rows: dict[str, list[list[torch.Tensor]]]
    #: The grids' columns, left to right (labels drawn above them; joined, the wandb caption).
    sample_labels: list[str]
    #: One row per validation image (gathered from every rank), logged as a wandb table.
    val_table: list[dict]
    #: Prefix of the logged evaluation metrics: ``val``, or ``test/<stage>`` while test_after_train runs.
    eval_prefix: str

    @property
    def total_iters(self) -> int: ...

    def optimizer_steps_total(self) -> int | None: ...

    def checkpoint_rule(self) -> tuple[str, str | None, str | None] | None: ...

    def set_eval_prefix(self, prefix: str) -> None: ...

    def raise_if_non_finite(self, weights: bool = True) -> None: ...


def _rebuild_module(cls, hparams: dict, state_dict: dict, attrs: dict):
    module = cls(**hparams)
    module.load_state_dict(state_dict)
    module.__dict__.update(attrs)
    return module


class IterationGANModule(LightningModule):
    """Base for recipes that count training in batches (``self.iteration``) and use manual optimization.

    Subclasses fill ``self._opt_index`` (name -> optimizer position) in ``configure_optimizers``, set
    ``frozen_prefixes`` to the state-dict prefixes of frozen loss networks (rebuilt from their own weight
    files, not stored in checkpoints), and define ``total_iters``.
    """

    frozen_prefixes: tuple[str, ...] = ()

    def __init__(self, speed: dict | None = None, micro_batches: int = 1) -> None:
        super().__init__()
        # Gradient accumulation (model.micro_batches): each training batch (data.batch_size images per device, one
        # optimizer step of each network) runs as this many micro-batches whose gradients add up before the step.
        self.micro_batches = check_positive_int(
            micro_batches, "model.micro_batches", hint="1: the whole batch at once; N: N micro-batches per step"
        )
        # Per loss name: the first iteration at which it was NaN/Inf (-1: never), kept on the loss's device so that
        # the training step does not wait for the GPU; read at the logging steps and before every validation.
        self._first_non_finite: dict[str, torch.Tensor] = {}
        self.speed = speed_lib.speed_options(speed)  # model.speed: layout, compile, fused Adam (speed.py)
        self._speed_applied = False
        self.automatic_optimization = False  # G and D alternate; Lightning 2 needs manual mode for that
        # Lightning's global_step counts optimizer steps (2+ per GAN batch), so the recipe keeps its own
        # count of batches; it is saved in checkpoints and drives every schedule.
        self.iteration = 0
        self._opt_index: dict[str, int] = {}
        self.val_sample_rows: dict[str, list[list[torch.Tensor]]] = {}
        self._val_sample_keys: dict[str, list] = {}  # each row's place in its validation set (dataset order)
        self.max_sample_rows = 8  # validation images per grid: all of Set5, the first 8 of larger sets
        # One row per validation image (name and metrics), gathered from every rank at the end of validation;
        # SampleImageWriter logs them as a wandb table.
        self.val_rows: list[dict] = []
        self.val_table: list[dict] = []
        self.sample_labels: list[str] = []
        self.eval_prefix = "val"
        self.val_fid = None  # setup_val_fid

    # ------------------------------------------------------------------ the runner's contract (RecipeContract)
    @property
    def total_iters(self) -> int:
        """Training batches of the whole recipe."""
        raise NotImplementedError

    def optimizer_steps_total(self) -> int | None:
        """Lightning's ``max_steps`` for the whole recipe (it counts optimizer steps; the recipe counts batches,
        Lightning #17958).  None: the trainer config's ``max_steps`` applies."""
        return None

    def checkpoint_rule(self) -> tuple[str, str | None, str | None] | None:
        """How callbacks.checkpoint.StageCheckpoint selects the checkpoint of the current stage: ``(stage, monitor,
        mode)``.  None: one selection for the whole run, by the callback's own monitor and mode."""
        return None

    def set_eval_prefix(self, prefix: str) -> None:
        """Log evaluation metrics under ``prefix`` (``val``; ``test/<stage>`` while test_after_train runs)."""
        self.eval_prefix = prefix

    # ------------------------------------------------------------------ fast path (lightning_modules/speed.py)
    def speed_targets(self) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
        """(networks put in channels_last, networks compiled); subclasses name theirs."""
        return [], []

    def apply_speed(self, device: torch.device | str | None) -> None:
        """channels_last and torch.compile as ``model.speed`` says, once, before the optimizers exist (their state
        then has the parameters' layout) and before a checkpoint is restored into the networks."""
        if self._speed_applied:
            return
        self._speed_applied = True
        layout_nets, compiled_nets = self.speed_targets()
        if speed_lib.enabled(self.speed["channels_last"], device):
            speed_lib.to_channels_last(*layout_nets)
        if speed_lib.enabled(self.speed["compile"], device):
            speed_lib.compile_networks(compiled_nets, self.speed["compile_mode"], self.speed["compile_backend"])

    def configure_model(self) -> None:
        # Lightning calls this after `setup` and before the strategy moves the module and builds the optimizers.
        self.apply_speed(self.trainer.strategy.root_device if self._trainer is not None else None)

    def adam(self, params, lr: float, betas) -> torch.optim.Adam:
        return speed_lib.adam(params, self.speed["fused_adam"], lr=lr, betas=tuple(betas))

    def _opt(self, name: str):
        """(LightningOptimizer, scheduler) registered under ``name``."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        scheds = self.lr_schedulers() or []
        scheds = scheds if isinstance(scheds, list) else [scheds]
        i = self._opt_index[name]
        return opts[i], (scheds[i] if i < len(scheds) else None)

    # ------------------------------------------------------------------ gradient accumulation (model.micro_batches)
    def micro_slices(self, n_items: int) -> list[slice]:
        """The micro-batches of a training batch of ``n_items`` images, as slices along the batch dimension."""
        n = self.micro_batches
        if n_items % n:
            raise ValueError(
                f"model.micro_batches={n} must divide the training batch ({n_items} images per device, "
                "data.batch_size): each optimizer step accumulates that many equal micro-batches"
            )
        size = n_items // n
        return [slice(i * size, (i + 1) * size) for i in range(n)]

    def micro_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss / N`` before its backward: the N accumulated gradients of micro-batch means then add up to the
        gradient of the whole batch's mean (every loss of the recipes is a mean over its images)."""
        return loss if self.micro_batches == 1 else loss / self.micro_batches

    @staticmethod
    def micro_mean(values: list[torch.Tensor]) -> torch.Tensor:
        """A logged value of the whole batch: the mean of its micro-batches' (equal sizes)."""
        return values[0] if len(values) == 1 else torch.stack(values).mean()

    @contextmanager
    def frozen(self, net: torch.nn.Module):
        """No gradients for ``net`` inside the block; its requires_grad flags are restored after."""
        flags = [p.requires_grad for p in net.parameters()]
        net.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(net.parameters(), flags):
                p.requires_grad_(f)

    def on_train_start(self) -> None:
        if self.iteration >= self.total_iters:
            self.trainer.should_stop = True

    def logs_this_step(self) -> bool:
        """Whether Lightning sends this batch's step metrics to the loggers (every ``trainer.log_every_n_steps``).

        On the other batches nothing is logged at all: each Python number passed to ``self.log`` becomes a device
        tensor (a host-to-device copy that waits for the GPU), and logged tensors are only read at the logging
        steps anyway.  The training step then has no host synchronisation (tests/test_speed.py).

        Lightning's own rule (its logger connector's ``should_update_logs``) from public state: Lightning counts the
        batches before this one and adds 1; ``self.iteration``, counted by now, includes this batch (both counts are
        restored on resume).
        """
        trainer = self._trainer
        if not isinstance(trainer, Trainer) or not trainer.training or trainer.fast_dev_run:
            return True  # outside Lightning's training loop (a harness calling training_step): log everything
        every = trainer.log_every_n_steps
        if not every:
            return False
        return self.iteration % every == 0 or trainer.should_stop

    def end_iteration(self, logs: dict, batch_size: int, extra: dict | None = None) -> None:
        """Count the batch, log ``train/*`` and ``iter`` (on the logging steps), and stop after the last one.

        ``logs`` may hold callables (evaluated only when logged: e.g. the learning rate)."""
        self.iteration += 1
        self._track_finite(logs)
        if self.iteration >= self.total_iters:
            self.trainer.should_stop = True  # Lightning still runs the final validation first (and logs this batch)
        if self.logs_this_step():
            metrics = {f"train/{k}": (v() if callable(v) else v) for k, v in logs.items()}
            metrics["iter"] = float(self.iteration)
            metrics.update(extra or {})
            self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=batch_size)

    # ------------------------------------------------------------------ non-finite training (issue 16 item 5)
    def _track_finite(self, logs: dict) -> None:
        # The first non-finite iteration of each loss is kept on its device (no host sync per batch, on a GPU or not:
        # tests/test_speed.py); it is read on the logging steps and before every validation.
        for name, value in logs.items():
            if not torch.is_tensor(value) or not value.is_floating_point():
                continue
            first = self._first_non_finite.get(name)
            if first is None:
                first = torch.full((), -1, dtype=torch.long, device=value.device)
            self._first_non_finite[name] = torch.where(
                ~torch.isfinite(value).all() & (first < 0), self.iteration, first
            )
        if self.logs_this_step():
            self.raise_if_non_finite()

    def raise_if_non_finite(self, weights: bool = True) -> None:
        """:class:`NonFiniteTrainingError` naming the iteration and the loss (or the weight) that went NaN/Inf.
        Called before every validation, so that no checkpoint or weights file of a diverged state is written:
        the last one written (the last validation's) stays the last finite state."""
        firsts = {k: int(v) for k, v in self._first_non_finite.items()}
        bad = {k: v for k, v in firsts.items() if v >= 0}
        if bad:
            it = min(bad.values())
            names = sorted(k for k, v in bad.items() if v == it)
            raise NonFiniteTrainingError(
                f"training diverged: loss {', '.join(names)} is NaN/Inf at iteration {it}. Stopped; nothing of this "
                "state is saved (the last checkpoint written stays the last finite state). Lower the learning rate "
                "or the loss weights"
            )
        if weights:
            tensors = [(n, t) for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_floating_point()]
            finite = [torch.isfinite(t).all() for _, t in tensors]
            if not finite or bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
                return  # one host sync for all the weights; the loop below only names the culprit
            for (name, _), ok in zip(tensors, finite):
                if not bool(ok):
                    raise NonFiniteTrainingError(
                        f"training diverged: weight {name} holds NaN/Inf at iteration {self.iteration}. Stopped; "
                        "nothing of this state is saved (the last checkpoint written stays the last finite state)"
                    )

    def __reduce_ex__(self, protocol):
        """Pickling (``ddp_gan_spawn`` sends the module to the spawned processes).  Modules with parametrizations
        (SC-FEGAN's spectral norm) only serialise through ``state_dict()``: rebuild from the init arguments
        (``self.hparams``), then load the state and the recipe's counters.  Others pickle as usual."""
        from torch.nn.utils import parametrize

        if not any(parametrize.is_parametrized(m) for m in self.modules()):
            return super().__reduce_ex__(protocol)
        attrs = {"iteration": self.iteration}
        return (_rebuild_module, (type(self), dict(self.hparams), self.state_dict(), attrs))

    # ------------------------------------------------------------------ data parallel
    @torch.no_grad()
    def sync_batchnorm_buffers(self) -> None:
        """Average BatchNorm running statistics over the ranks (ESRGAN's discriminator).

        Under DDP each rank's BN normalises with its own batch (as BasicSR), so the running statistics drift
        apart; the recipes never use them in training (D is always in train mode), but checkpoints store them.
        Averaging before every validation, hence before every checkpoint, makes all ranks and the saved D agree.
        SyncBatchNorm (``trainer.sync_batchnorm=true``, GPUs only) keeps them identical by itself.
        """
        if not distributed():
            return
        world = dist.get_world_size()
        for m in self.modules():
            if (
                isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                and not isinstance(m, torch.nn.SyncBatchNorm)
                and m.track_running_stats
                and m.running_mean is not None
            ):
                for buf in (m.running_mean, m.running_var):
                    dist.all_reduce(buf)
                    buf.div_(world)

    def on_validation_epoch_start(self) -> None:
        self.raise_if_non_finite()  # before any checkpoint of this state can be written
        self.sync_batchnorm_buffers()
        self.val_rows = []
        self.val_sample_rows = {}
        self._val_sample_keys = {}

    def wants_sample_rows(self, name: str) -> int:
        """How many more sample rows the grid ``name`` takes in this validation (0 while sanity checking)."""
        if self._trainer is not None and self.trainer.sanity_checking:
            return 0
        return max(0, self.max_sample_rows - len(self.val_sample_rows.get(name, [])))

    # ------------------------------------------------------------------ validation FID / KID (model.val_fid)
    def setup_val_fid(self, options: dict | None) -> None:
        """``self.val_fid``: metrics/fid.py ValidationFID when ``model.val_fid.enabled`` (its Inception is rebuilt
        from its own weights file, never stored in checkpoints: ``val_fid.`` is among the frozen prefixes)."""
        options = dict(options or {})
        self.val_fid = None
        if options.pop("enabled", False):
            from metrics.fid import ValidationFID

            self.val_fid = ValidationFID(**options)

    def update_val_fid(self, fake01: torch.Tensor, real01: torch.Tensor, keep: torch.Tensor) -> None:
        if self.val_fid is None or (self._trainer is not None and self.trainer.sanity_checking):
            return
        self.val_fid.update(fake01[keep], real01[keep])

    def log_val_fid(self, prefix: str = "val") -> dict:
        """Log ``<prefix>/fid``, ``/kid``, ``/kid_std`` over the whole validation set (every rank calls it);
        nothing, with a warning, when the set is smaller than ``model.val_fid.min_images``."""
        if self.val_fid is None or (self._trainer is not None and self.trainer.sanity_checking):
            return {}
        values, n = self.val_fid.compute()
        self.val_fid.reset()
        if values is None:
            if n:
                log.warning(
                    f"validation FID/KID not computed: {n} images, fewer than model.val_fid.min_images="
                    f"{self.val_fid.min_images} (FID is strongly biased on small sets)"
                )
            return {}
        for k, v in values.items():
            self.log(f"{prefix}/{k}", torch.tensor(v, dtype=torch.float64), sync_dist=False)  # already gathered
        return values

    def add_sample_rows(self, name: str, rows: list[list[torch.Tensor]], keys: list) -> None:
        """Rows for the grid ``name``; ``keys`` sort them into the validation set's order when ranks are gathered."""
        self.val_sample_rows.setdefault(name, []).extend(rows)
        self._val_sample_keys.setdefault(name, []).extend(keys)

    def gather_sample_rows(self) -> None:
        """Under DDP each rank validates its share of the images (every other one on 2 ranks): rank 0 gets every
        rank's rows and keeps the first ``max_sample_rows`` in the set's order, so the grid shows what one process
        would show.  Each rank collected its own first ``max_sample_rows``, which holds every row of those."""
        if not distributed():
            return
        local = {
            name: [(key, [t.cpu() for t in row]) for key, row in zip(self._val_sample_keys.get(name, []), rows)]
            for name, rows in self.val_sample_rows.items()
        }
        parts: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(local, parts, dst=0)
        if parts is None:
            self.val_sample_rows, self._val_sample_keys = {}, {}
            return
        merged: dict[str, list] = {}
        for part in parts:
            for name, items in part.items():
                merged.setdefault(name, []).extend(items)
        ordered = {name: sorted(items, key=lambda kv: kv[0])[: self.max_sample_rows] for name, items in merged.items()}
        self.val_sample_rows = {name: [row for _, row in items] for name, items in ordered.items()}
        self._val_sample_keys = {name: [key for key, _ in items] for name, items in ordered.items()}

    def keep_mask(self, batch: dict, n: int) -> torch.Tensor:
        """Which items of a validation batch count (False: a placeholder a rank with no images of its own
        validates so that it takes part in the collectives; datamodules/samplers.py)."""
        keep = batch.get("keep")
        if keep is None:
            return torch.ones(n, dtype=torch.bool, device=self.device)
        return keep.view(-1).to(self.device, torch.bool)

    def gather_val_rows(self) -> list[dict]:
        """The per-image validation rows of every rank (each image once: the validation samplers do not pad)."""
        rows = self.val_rows
        if distributed():
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part]
        return sorted(rows, key=lambda r: (str(r.get("folder", "")), str(r.get("image", ""))))

    @rank_zero_only
    def log_validation_summary(self, values: dict) -> None:
        """One line per validation in train.log (the progress bar is not written to files)."""
        text = ", ".join(f"{k} {float(v):.4f}" for k, v in values.items())
        log.info(f"iter {self.iteration}: {text}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["iteration"] = self.iteration
        checkpoint["rng_states"] = rng_states()
        if self.frozen_prefixes:
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(self.frozen_prefixes)
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        it, step = checkpoint.get("iteration", 0), checkpoint.get("global_step", 0)
        for key, value in (("iteration", it), ("global_step", step)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"the resumed checkpoint's {key}={value!r} is not a whole number >= 0 (a damaged or "
                    "edited checkpoint): refused"
                )
        if it > self.total_iters:
            raise ValueError(
                f"the resumed checkpoint's iteration={it} is beyond this run's {self.total_iters} iterations: refused"
            )
        self.iteration = it
        if checkpoint.get("rng_states"):
            try:
                set_rng_states(checkpoint["rng_states"])
            except Exception as err:
                raise ValueError(
                    f"the resumed checkpoint's rng_states cannot be restored (a damaged or edited "
                    f"checkpoint): {type(err).__name__}: {err}"
                ) from err
        if self.frozen_prefixes:
            own = self.state_dict()
            checkpoint["state_dict"].update({k: v for k, v in own.items() if k.startswith(self.frozen_prefixes)})
