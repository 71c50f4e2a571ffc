"""DataLoader worker set-up shared by every data module.

A scheduler, ``timeout`` or Ctrl-C signals the whole process group, DataLoader workers included.  PyTorch's worker
SIGTERM handler exits quietly only when the parent sent the signal; from anyone else it dies of it, and the main
process then raises "DataLoader worker ... killed by signal: Terminated" before callbacks/interrupt.py can write
last.ckpt.  Workers therefore ignore SIGTERM and SIGINT: the main process handles the signal at the next batch
boundary and shuts its workers down itself (and PyTorch's worker watchdog ends them if the main process is gone).
"""

from __future__ import annotations

import os
import signal


def worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lightning installs its own seeding init only when a loader has none (seed_everything(workers=True) sets
    # PL_SEED_WORKERS): call it here so the per-worker seeds stay what they were.
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
