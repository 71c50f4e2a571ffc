"""Under DDP: checks at the end of training that every rank holds the same networks, and records what data each
rank trained on first.  Does nothing in a single process.

Writes ``<dirpath>/ddp_check.json``::

    {"world_size": 2, "identical": {"net_g": true, ...},
     "ranks": [{"rank": 0, "fingerprints": {"net_g": "<sha1>", ...}, "batches": [{"index": [...], ...}]}, ...]}

Fingerprints are SHA-1 digests of the raw bytes of each top-level submodule's parameters and buffers (G, D, the EMA
generator, the frozen loss networks) and of the tensors the module's ``replica_state()`` names (ESRGAN's adaptive_d
EMA), so "identical" means bit-identical.  ``batches``: for the first
``record_batches`` training batches, the dataset indices (face data) and a digest of each synthesised input
(SC-FEGAN masks, ESRGAN HR crops), which shows that ranks see different samples.  A mismatch raises (``strict``)
on every rank.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.distributed as dist
from pytorch_lightning import Callback, LightningModule, Trainer


def tensor_digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def module_fingerprints(module: torch.nn.Module) -> dict[str, str]:
    return {
        name: tensor_digest(list(child.parameters()) + list(child.buffers()))
        for name, child in module.named_children()
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers())
    }


class ReplicaCheck(Callback):
    def __init__(self, dirpath: str, record_batches: int = 4, strict: bool = True) -> None:
        self.dirpath = dirpath
        self.record_batches = int(record_batches)
        self.strict = strict
        self.batches: list[dict] = []

    @staticmethod
    def _distributed(trainer: Trainer) -> bool:
        return trainer.world_size > 1 and dist.is_available() and dist.is_initialized()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if not self._distributed(trainer) or len(self.batches) >= self.record_batches or not isinstance(batch, dict):
            return
        row = {}
        if torch.is_tensor(batch.get("index")):
            row["index"] = [int(i) for i in batch["index"].view(-1).tolist()]
        for key in ("mask", "gt", "image"):
            if torch.is_tensor(batch.get(key)):
                row[key] = [tensor_digest([x]) for x in batch[key]]
        self.batches.append(row)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._distributed(trainer):
            return
        fingerprints = module_fingerprints(pl_module)
        # Recipe state outside the networks that every rank must hold too (ESRGAN's adaptive_d EMA).
        state = getattr(pl_module, "replica_state", None)
        for name, value in (state() if callable(state) else {}).items():
            fingerprints[name] = tensor_digest([value])
        mine = {"rank": trainer.global_rank, "fingerprints": fingerprints, "batches": self.batches}
        ranks: list = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, mine)
        names = sorted({n for r in ranks for n in r["fingerprints"]})
        identical = {n: len({r["fingerprints"].get(n) for r in ranks}) == 1 for n in names}
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
            with open(os.path.join(self.dirpath, "ddp_check.json"), "w") as f:
                json.dump({"world_size": len(ranks), "identical": identical, "ranks": ranks}, f, indent=1)
        bad = [n for n, same in identical.items() if not same]
        if bad and self.strict:
            raise RuntimeError(f"DDP ranks ended with different {', '.join(bad)} (see {self.dirpath}/ddp_check.json)")
