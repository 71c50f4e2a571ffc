"""SIGTERM / SIGINT: finish the current batch, write a resumable ``last.ckpt`` (atomically), exit 128 + signal.

Lightning alone exits 0 on SIGTERM (its ``SIGTERMException`` is a ``SystemExit`` without a code) and saves nothing,
and on SIGINT raises ``KeyboardInterrupt`` wherever the process happens to be, then exits 1 without saving.  A
scheduler (SLURM, Kubernetes) reading 0 thinks the job finished; the work since the last validation is lost.

Here:

* SIGTERM: Lightning's own handler sets ``trainer.received_sigterm`` (under DDP rank 0 forwards the signal to the
  other local ranks and broadcasts the flag at the start of every batch), and its loops raise ``SIGTERMException``
  at the next batch boundary (or between validation batches).  ``on_exception`` then writes ``last.ckpt`` on all
  ranks together (``trainer.save_checkpoint`` is collective) and ``train.py`` exits with 143 (128 + 15).
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


class SaveOnSignal(Callback):
    def __init__(self, last_path: str | Path) -> None:
        self.last_path = str(last_path)
        self.signum: int | None = None  # the signal that stopped training (None: not stopped by one)
        self.saved: str | None = None
        self._training = False
        self._previous_sigint = None
        self._trainer = None

    # ------------------------------------------------------------------ SIGINT as a flag
    def _on_sigint(self, signum, frame) -> None:
        if self.signum == signal.SIGINT:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signal.SIGINT
        log.warning(
            "SIGINT: stopping after the current batch and saving last.ckpt (press Ctrl-C again to abort without saving)"
        )
        if self._trainer is not None:
            # Lightning's loops stop at the next batch boundary on this flag (and broadcast it under DDP).
            self._trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._training = True
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

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
