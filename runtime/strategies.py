"""Data-parallel training for the GAN recipes: ``strategy=ddp_gan`` (``ddp_gan_spawn`` for spawned processes),
registered by :func:`register` (the config resolvers for devices are in runtime/resolvers.py).

Why not Lightning's DDP wrapper
-------------------------------
Each GAN batch runs separate backward passes for G and for D (ESRGAN: one for G, two for D, as BasicSR), each
followed by its own optimizer step, and the network that is not being stepped is frozen.  Measured with
``scripts/ddp_sync_bench.py`` (2 gloo processes, the ESRGAN GAN-stage step; numbers in the README's Multi-GPU section):

* one ``DistributedDataParallel`` around the module with ``find_unused_parameters=True`` (Lightning's
  ``ddp_find_unused_parameters_true``) all-reduces the buckets of BOTH networks in EVERY backward pass, the
  frozen network's as zeros: 3 x (G + D) per ESRGAN batch instead of G + D, plus an autograd-graph walk per pass;
* toggling ``requires_grad`` with ``find_unused_parameters=False`` (plain ``ddp``) fails on the first batch
  ("Expected to have finished reduction in the prior iteration ...");
* one DDP wrapper per network (BasicSR's layout) sends G + 2 x D (one all-reduce per D backward), needs every
  D forward that is not back-propagated to run under ``no_grad`` and the SC-FEGAN gradient penalty's double
  backward to bypass the wrapper, and renames every state-dict key (``net_g.module.*``).

This strategy keeps Lightning's process launching, samplers and collectives but uses no DDP reducer: just before
an optimizer steps, :class:`GradientAverager` averages the gradients of *that optimizer's* parameters across
ranks in bucketed all-reduces (the approach of StyleGAN2-ADA's training loop).  Each network's gradients travel
once per update, frozen networks never, and any number of forwards/backwards per step is fine.  What is given up
is DDP's overlap of communication with the backward pass; on the bench's CPU processes the step times of the
variants were within noise of each other, while the traffic is a third of ``find_unused_parameters``' (numbers in
the README's Multi-GPU section).
Parameters and buffers start identical on every rank (broadcast from rank 0 at setup).

Gradients that no rank produced stay ``None`` (Adam then skips those parameters, as in one process); where only
some ranks produced one, the others contribute zeros, as DDP's ``find_unused_parameters`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import _sync_module_states
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

DEFAULT_BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb


class GradientAverager:
    """Averages ``.grad`` of a list of parameters over the default process group, in flat buckets.

    Counts what it sends (``bytes``: gradient payload; ``calls``: gradient all-reduces; ``flag_calls``: the tiny
    all-reduce of which parameters have a gradient) so that benchmarks and tests can check the traffic.
    """

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, group=None) -> None:
        self.bucket_bytes = int(bucket_bytes)
        self.group = group
        self.bytes = 0
        self.calls = 0
        self.flag_calls = 0

    @torch.no_grad()
    def average(self, params: Iterable[torch.nn.Parameter]) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(self.group)
        params = [p for p in params]
        if world == 1 or not params:
            return
        # Which parameters have a gradient on any rank (the graph is the same on every rank in these recipes,
        # but a data-dependent branch must not make ranks disagree on the bucket layout and hang).
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        self.flag_calls += 1
        grads = []
        for p, has in zip(params, flags.tolist()):
            if not has:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if p.grad.is_sparse:
                raise NotImplementedError("ddp_gan: sparse gradients are not supported")
            grads.append(p.grad)
        for bucket in self._buckets(grads):
            flat = torch._utils._flatten_dense_tensors(bucket)
            dist.all_reduce(flat, group=self.group)
            flat.div_(world)
            for g, synced in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                g.copy_(synced)
            self.bytes += flat.numel() * flat.element_size()
            self.calls += 1

    def _buckets(self, grads: list[torch.Tensor]):
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads:
            nbytes = g.numel() * g.element_size()
            if bucket and (
                size + nbytes > self.bucket_bytes or g.dtype != bucket[0].dtype or g.device != bucket[0].device
            ):
                yield bucket
                bucket, size = [], 0
            bucket.append(g)
            size += nbytes
        if bucket:
            yield bucket


class GANDDPStrategy(DDPStrategy):
    """DDP without a reducer: per-optimizer gradient averaging at each ``optimizer.step()`` (see module docstring).

    Accepts DDPStrategy's arguments (``start_method``, ``process_group_backend``, ``timeout``, cluster
    environment ...) plus ``bucket_cap_mb``.  DDP-reducer options (``find_unused_parameters``,
    ``gradient_as_bucket_view``, ``static_graph``, comm hooks, ``broadcast_buffers``) do not apply.  Buffers are
    not broadcast every step: ESRGAN's discriminator BatchNorm normalises with each rank's own batch statistics
    (as BasicSR under DDP), or the global batch's with ``trainer.sync_batchnorm=true`` on GPUs; the modules average
    the running statistics across ranks before each validation so that ranks and checkpoints agree
    (``IterationGANModule.sync_batchnorm_buffers``).
    """

    strategy_name = "ddp_gan"

    def __init__(self, *args: Any, bucket_cap_mb: float = 25, **kwargs: Any) -> None:
        for key in ("find_unused_parameters", "static_graph", "gradient_as_bucket_view", "broadcast_buffers"):
            if key in kwargs:
                raise ValueError(f"ddp_gan uses no DistributedDataParallel reducer: {key!r} does not apply")
        super().__init__(*args, **kwargs)
        self.averager = GradientAverager(int(bucket_cap_mb * 2**20))

    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: the LightningModule runs as is; every rank starts from rank 0's
        # parameters and buffers (what DDP's constructor would do).
        _sync_module_states(self.model)

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def closure_then_average():
            # Manual optimisation: the closure does nothing and the gradients are already there.  Automatic
            # optimisation: the closure runs forward and backward.  Either way: average, then the precision
            # plugin unscales (fp16) and steps.
            out = closure()
            self.averager.average(params)
            return out

        return super().optimizer_step(optimizer, closure_then_average, model, **kwargs)

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:  # Lightning calls this for its own classes only
        pass


def register() -> None:
    """Register ``strategy=ddp_gan`` / ``ddp_gan_spawn`` with Lightning (idempotent; runtime.training.train calls it
    before the Trainer is built)."""
    if "ddp_gan" in StrategyRegistry:
        return
    StrategyRegistry.register(
        "ddp_gan",
        GANDDPStrategy,
        description="GAN DDP, per-optimizer gradient averaging, processes started with "
        "the script's command line (one per device)",
        start_method="popen",
    )
    StrategyRegistry.register(
        "ddp_gan_spawn",
        GANDDPStrategy,
        description="GAN DDP, per-optimizer gradient averaging, processes spawned "
        "from the calling process (works inside Hydra multirun)",
        start_method="spawn",
    )
