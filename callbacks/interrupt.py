"""SIGTERM / SIGINT: finish the current batch, write a resumable ``last.ckpt`` (atomically), exit 128 + signal.

Lightning alone exits 0 on SIGTERM (its ``SIGTERMException`` is a ``SystemExit`` without a code) and saves nothing,
and on SIGINT raises ``KeyboardInterrupt`` wherever the process happens to be, then exits 1 without saving.  A
scheduler (SLURM, Kubernetes) reading 0 thinks the job finished; the work since the last validation is lost.

Here:

* SIGTERM: a handler that only records the signal (installed in place of Lightning's, whose handler calls
  ``dist.broadcast`` from inside the signal handler: with a group signal every rank runs it at an arbitrary point,
  in the middle of another collective, and the ranks deadlock).  One process: Lightning's flag
  ``trainer.received_sigterm`` is set at once and its loops raise ``SIGTERMException`` at the next batch boundary
  (or between validation batches).  DDP: at the end of every training batch the ranks all-reduce what they received
  (any rank's signal stops all of them: a group signal, ``kill`` of one rank, SLURM's signal to every task), and
  the flag is set on every rank at the same batch; a validation that follows that batch runs to its end first (the
  ranks hold different numbers of validation batches, and a rank stopping inside it would leave the others in the
  metrics' collectives).  ``on_exception`` then writes ``last.ckpt`` on all ranks together
  (``trainer.save_checkpoint`` is collective) and ``train.py`` exits with 143 (128 + 15), every rank; rank 0 waits
  for the ranks it started (Lightning's launcher would otherwise SIGKILL rank 0 when a child exits non-zero first).
* SIGINT (Ctrl-C): handled the same way (flag, batch boundary, save, exit 130); a second Ctrl-C interrupts at once
  (Lightning's KeyboardInterrupt path, exit 1, nothing saved).
* SLURM: Lightning's SIGUSR1 handling (``hpc_ckpt_*.ckpt`` and ``scontrol requeue`` with auto-requeue) is untouched;
  a SIGTERM that follows it also writes last.ckpt.  A requeued job restores the hpc checkpoint (Lightning's rule).

Nothing is saved before training has started (the restored state could be incomplete): a signal during setup exits
with the same code, leaving any previous ``last.ckpt`` as it was.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from pytorch_lightning import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SaveOnSignal(Callback):
    def __init__(self, last_path: str | Path) -> None:
        self.last_path = str(last_path)
        self.signum: int | None = None  # the signal that stopped training (None: not stopped by one)
        self.saved: str | None = None
        self._training = False
        self._previous_sigint = None
        self._trainer = None
        self._deferred = False  # DDP: the agreed stop waits for the end of the validation under way
        self._other_ranks: list = []  # rank 0 under Lightning's launcher: the processes it started

    # ------------------------------------------------------------------ signals as a flag
    def setup(self, trainer, pl_module, stage: str) -> None:
        # Lightning registers its SIGTERM handler after the setup hooks, from this bound-method attribute.
        self._trainer = trainer
        trainer._signal_connector._sigterm_notifier_fn = self._on_sigterm

    def _record(self, signum: int) -> None:
        if self.signum is None:
            self.signum = int(signum)
        if self._trainer is not None and not _distributed():
            # Lightning's loops stop at the next batch boundary on this flag.  Under DDP the ranks agree first.
            self._trainer._signal_connector.received_sigterm = True

    def _on_sigterm(self, signum, frame) -> None:
        log.info(f"received signal {signum}: stopping at the next batch boundary and saving {self.last_path}")
        self._record(signal.SIGTERM)

    def _on_sigint(self, signum, frame) -> None:
        if self.signum == signal.SIGINT:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        log.warning(
            "SIGINT: stopping after the current batch and saving last.ckpt (press Ctrl-C again to abort without saving)"
        )
        self._record(signal.SIGINT)

    def on_train_start(self, trainer, pl_module) -> None:
        self._training = True
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not _distributed() or trainer.received_sigterm:
            return
        import torch
        import torch.distributed as dist

        # One small all-reduce per batch (Lightning itself broadcasts its flag at every batch start under DDP).
        flag = torch.tensor([int(self.signum or 0)], dtype=torch.int32, device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        received = int(flag.item())
        if not received:
            return
        if self.signum is None:
            self.signum = received
        launcher = trainer.strategy.launcher
        if trainer.global_rank == 0 and getattr(launcher, "procs", None):
            # Lightning's child-process observer SIGKILLs rank 0 as soon as a rank it started exits non-zero (143):
            # take them off its list (they cannot exit before the collective save that follows) and wait for them.
            self._other_ranks = list(launcher.procs)
            launcher.procs.clear()
        trainer._signal_connector.received_sigterm = True  # the same batch on every rank

    def on_validation_start(self, trainer, pl_module) -> None:
        if _distributed() and trainer.received_sigterm:
            self._deferred = True
            trainer._signal_connector.received_sigterm = False

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._deferred:
            self._deferred = False
            trainer._signal_connector.received_sigterm = True

    def wait_for_other_ranks(self, timeout: float = 120.0) -> None:
        """Rank 0: wait until the ranks Lightning started have exited (SIGKILL after ``timeout``)."""
        import subprocess

        for proc in self._other_ranks:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error(f"rank process {proc.pid} did not exit {timeout:.0f} s after the signal: killed")
                proc.kill()
                proc.wait()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._training = False
        self._restore_sigint()

    # ------------------------------------------------------------------ save at the boundary
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return
        if self.signum is None:
            self.signum = signal.SIGTERM
        if not self._training:
            log.warning(f"signal {self.signum} before training started: nothing saved")
            return
        check = getattr(pl_module, "raise_if_non_finite", None)
        if check is not None:
            try:
                check()
            except RuntimeError as err:  # a diverged state is never saved; the previous last.ckpt stays
                log.error(f"signal {self.signum}: not saving {self.last_path}: {err}")
                return
        trainer.save_checkpoint(self.last_path)  # every rank: collective; rank 0 writes (AtomicCheckpointIO)
        self.saved = self.last_path
        if trainer.is_global_zero:
            log.warning(
                f"signal {self.signum}: saved {self.last_path} at iteration "
                f"{getattr(pl_module, 'iteration', trainer.global_step)}; resume with ckpt_path={self.last_path}"
            )

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGTERM)
