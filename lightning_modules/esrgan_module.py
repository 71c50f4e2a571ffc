"""ESRGAN's two-stage recipe (Wang et al. 2018, BasicSR's ``SRModel`` + ``ESRGANModel``).

Stage ``psnr``: L1 only.  Stage ``gan``: per batch one G step (L1 + perceptual + RaGAN) then one D step
(RaGAN, split real/fake as BasicSR PR #278).  Both stages run in one job, in batches counted by
``self.iteration``.  At the switch the stage-1 generator is written to ``<output_dir>/weights/net_g_psnr.pth``
(raw G in ``params``, its EMA in ``params_ema``, BasicSR's layout) for network interpolation, and stage 2 starts
as BasicSR's ``train_ESRGAN_x4.yml`` does from that file: G from ``params``, the EMA from ``params_ema``
(``model.param_key_g=params``, the default), i.e. both simply continue.  ``model.param_key_g=params_ema`` restarts
G from the stage-1 EMA instead (BasicSR's ``path.param_key_g: params_ema``).  ``model.init_weights`` is read the
same way.  Validation and saved weights use the EMA generator (``ema_decay`` 0: no EMA, the EMA copies G).
"""

from __future__ import annotations

import copy
import logging
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric

from archs.registry import make_network
from lightning_modules.base import IterationGANModule, check_positive_int, distributed, to_primitive
from lightning_modules.ema import ema_update
from lightning_modules.lr_scheduler import SCHEDULERS, build_scheduler
from losses.gan_loss import (
    ragan_discriminator_fake_loss,
    ragan_discriminator_real_loss,
    ragan_generator_loss,
    vanilla_gan_loss,
)
from metrics.lpips import build_validation_lpips
from metrics.sr_metrics import sr_metrics
from ops.image_grid import to_uint8_image
from ops.imresize import imresize
from ops.sr_tiles import receptive_margin, tiled_forward, unshuffle_factor
from weights.io import load_generator_state, load_into, save_generator_weights
from weights.named import resolve_weights

log = logging.getLogger(__name__)

STAGES = ("psnr", "gan")
#: model.gan.gan_type: ESRGAN's relativistic average GAN, or Real-ESRGAN's vanilla BCE on per-pixel logits.
GAN_TYPES = ("vanilla", "ragan")
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def check_recipe(stages: list[str], psnr: dict, gan: dict) -> None:
    """Clear errors, naming the key, for recipe values that would otherwise fail late or silently (the EMA decays
    are checked in ``ESRGANModule.__init__``)."""
    for stage, c in (("psnr", psnr), ("gan", gan)):
        if stage in stages:
            check_positive_int(
                c.get("iters"),
                f"model.{stage}.iters",
                hint="a stage that runs no batch writes nothing; drop it from model.stages instead",
            )
    if "psnr" in stages:
        name = psnr.get("scheduler")
        if name not in SCHEDULERS:
            raise ValueError(
                f"model.psnr.scheduler={name!r} is not a known scheduler; choose one of {list(SCHEDULERS)}"
            )
        if not isinstance(psnr.get(name), dict):
            raise ValueError(
                f"model.psnr.scheduler={name!r} needs its settings under model.psnr.{name} "
                f"(e.g. {SCHEDULERS[name]}); there are none"
            )


def check_adaptive_d(cfg: dict | None) -> dict:
    """``model.adaptive_d`` with its defaults (traiNNer-redux TrainOptions: decay 0.999, threshold 1.02)."""
    c = {"enabled": False, "ema_decay": 0.999, "threshold": 1.02, **(to_primitive(cfg) or {})}
    unknown = set(c) - {"enabled", "ema_decay", "threshold"}
    if unknown:
        raise ValueError(f"model.adaptive_d has unknown keys {sorted(unknown)}; it takes enabled, ema_decay, threshold")
    if not isinstance(c["enabled"], bool):
        raise ValueError(f"model.adaptive_d.enabled must be true or false, got {c['enabled']!r}")
    if not 0 <= float(c["ema_decay"]) < 1:
        raise ValueError(f"model.adaptive_d.ema_decay must be in [0, 1), got {c['ema_decay']!r}")
    if not float(c["threshold"]) > 0:
        raise ValueError(f"model.adaptive_d.threshold must be > 0 (traiNNer-redux: 1.02), got {c['threshold']!r}")
    return {"enabled": c["enabled"], "ema_decay": float(c["ema_decay"]), "threshold": float(c["threshold"])}


class ESRGANModule(IterationGANModule):
    # The VGG and the validation LPIPS are rebuilt from their own weights, not stored.
    frozen_prefixes = ("cri_perceptual.", "val_lpips.", "val_fid.")
    #: model.gan.gan_type when the config names none (Real-ESRGAN's recipe: vanilla).
    default_gan_type = "ragan"

    def __init__(
        self,
        generator: dict,
        discriminator: dict,
        perceptual: dict,
        psnr: dict,
        gan: dict,
        stages: list[str] = ("psnr", "gan"),
        init_weights: str | None = None,
        ema_decay: float = 0.999,
        param_key_g: str = "params",
        monitor: str = "val/psnr_y",
        monitor_gan: str = "auto",
        val_lpips: dict | None = None,
        val_fid: dict | None = None,
        task: str = "sr",
        speed: dict | None = None,
        micro_batches: int = 1,
        val_tile: int = 0,
        val_tile_pad: int | str = "auto",
        adaptive_d: dict | None = None,
    ) -> None:
        speed = to_primitive(speed)
        super().__init__(speed, micro_batches=micro_batches)
        generator, discriminator, perceptual, psnr, gan = map(
            to_primitive, (generator, discriminator, perceptual, psnr, gan)
        )
        stages = list(to_primitive(stages))
        self.save_hyperparameters(
            dict(
                generator=generator,
                discriminator=discriminator,
                perceptual=perceptual,
                psnr=psnr,
                gan=gan,
                stages=stages,
                init_weights=init_weights,
                ema_decay=ema_decay,
                param_key_g=param_key_g,
                monitor=monitor,
                monitor_gan=monitor_gan,
                val_lpips=to_primitive(val_lpips),
                val_fid=to_primitive(val_fid),
                task=task,
                speed=speed,
                micro_batches=micro_batches,
                val_tile=val_tile,
                val_tile_pad=val_tile_pad,
                adaptive_d=to_primitive(adaptive_d),
            ),
            logger=False,  # the runner logs the whole config once (model.* included): not these keys again
        )
        bad = [s for s in stages if s not in STAGES]
        if not stages or bad or len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
            raise ValueError(f"model.stages must be a non-empty ordered subset of {list(STAGES)}, got {stages}")
        if stages == ["gan"] and not init_weights:
            raise ValueError(
                "model.stages=[gan] fine-tunes a PSNR-pretrained generator: set model.init_weights to the "
                "net_g_psnr.pth written by stage 1, a .ckpt of this project, or a named model such as realesrgan-x4plus"
            )
        if param_key_g not in ("params", "params_ema"):
            raise ValueError(
                f"model.param_key_g must be 'params' (BasicSR's default: G from the raw stage-1 "
                f"generator) or 'params_ema' (G from its EMA), got {param_key_g!r}"
            )
        for key, value in (
            ("model.ema_decay", ema_decay),
            ("model.psnr.ema_decay", psnr.get("ema_decay")),
            ("model.gan.ema_decay", gan.get("ema_decay")),
        ):
            if value is not None and not 0 <= float(value) < 1:
                raise ValueError(f"{key} must be in [0, 1) (0: no EMA), got {value}")
        self.stages = stages
        self.psnr_cfg, self.gan_cfg = psnr, gan
        self.gan_type = gan.get("gan_type", self.default_gan_type)
        if self.gan_type not in GAN_TYPES:
            raise ValueError(f"model.gan.gan_type must be one of {GAN_TYPES}, got {self.gan_type!r}")
        check_recipe(stages, psnr, gan)
        self.adaptive_d = check_adaptive_d(adaptive_d)
        self.adaptive_d_ema: torch.Tensor | None = None  # saved in checkpoints (on_save_checkpoint)
        self._d_paused_at: int | None = None
        if isinstance(val_tile, bool) or not isinstance(val_tile, int) or not (val_tile == 0 or val_tile >= 8):
            raise ValueError(
                f"model.val_tile must be 0 (whole images) or a tile side >= 8 input pixels, got {val_tile!r}"
            )
        if val_tile_pad != "auto" and (
            isinstance(val_tile_pad, bool) or not isinstance(val_tile_pad, int) or val_tile_pad < 0
        ):
            raise ValueError(f"model.val_tile_pad must be 'auto' or a whole number >= 0, got {val_tile_pad!r}")
        self.val_tile, self.val_tile_pad = val_tile, val_tile_pad
        self.ema_decay = ema_decay
        self.param_key_g = param_key_g
        self.scale = int(
            generator.get("scale", generator.get("upscale", 4))
        )  # RRDBNet: scale; SRVGGNetCompact: upscale

        self.net_g = make_network(generator, "model.generator", role="generator")
        self.net_g_ema = copy.deepcopy(self.net_g).requires_grad_(False).eval()
        if init_weights:
            # BasicSR SRModel: net_g loads `param_key_g` (default `params`), net_g_ema loads `params_ema`; each falls
            # back to the other key when its own is missing, and bare state dicts fill both.
            # A named model (e.g. realesrgan-x4plus) is its converted, cached file (weights/named.py).
            source = f"model.init_weights={init_weights!r}"
            path = resolve_weights(init_weights)
            load_into(self.net_g, load_generator_state(path, prefer=param_key_g), source=source)
            load_into(self.net_g_ema, load_generator_state(path, prefer="params_ema"), source=source)
        if "gan" in stages:
            self.net_d = make_network(discriminator, "model.discriminator", role="discriminator")
            self.cri_perceptual = instantiate(perceptual)

        self.monitor = monitor
        self.val_lpips = build_validation_lpips(to_primitive(val_lpips))
        self.metric_names = METRICS + (("lpips",) if self.val_lpips is not None else ())
        self.setup_val_fid(to_primitive(val_fid))  # FID / KID on the first validation folder (model.val_fid)
        if monitor_gan == "auto":
            monitor_gan = "val/lpips" if self.val_lpips is not None else "last"
        if monitor_gan == "val/lpips" and self.val_lpips is None:
            raise ValueError("model.monitor_gan=val/lpips needs model.val_lpips.enabled=true")
        self.monitor_gan = monitor_gan

        self.val_names: list[str] = ["val"]
        self.val_metrics = torch.nn.ModuleDict()
        # The raw G beside the EMA G that validation measures: early on the EMA still holds mostly the initial weights.
        self.sample_labels = ["bicubic LR", "SR (EMA G)", "SR (raw G)", "HR"]

    # ------------------------------------------------------------------ schedule
    def stage_iters(self, stage: str) -> int:
        return int((self.psnr_cfg if stage == "psnr" else self.gan_cfg)["iters"])

    @property
    def total_iters(self) -> int:
        return sum(self.stage_iters(s) for s in self.stages)

    def stage_at(self, iteration: int) -> tuple[str, int]:
        """(stage, iteration within the stage) for a 0-based global iteration."""
        start = 0
        for stage in self.stages:
            if iteration < start + self.stage_iters(stage):
                return stage, iteration - start
            start += self.stage_iters(stage)
        return self.stages[-1], iteration - (start - self.stage_iters(self.stages[-1]))

    def optimizer_steps_total(self) -> int:
        """Lightning max_steps for the whole recipe: 1 step per PSNR batch, 2 per GAN batch
        (1 during BasicSR's D-only warm-up iterations)."""
        steps = self.stage_iters("psnr") if "psnr" in self.stages else 0
        if "gan" in self.stages:
            m = self.stage_iters("gan")
            steps += 2 * m - min(int(self.gan_cfg.get("d_init_iters", 0)), m)
        return steps

    def checkpoint_rule(self) -> tuple[str, str | None, str | None]:
        """How callbacks.checkpoint.StageCheckpoint selects this stage's result: ``(stage, monitor, mode)`` for the
        stage of the last trained batch.  Stage 1 by ``model.monitor`` (PSNR-Y; the callback's mode); stage 2 by
        ``model.monitor_gan``: LPIPS (lower is better) when validation LPIPS is on, else ``last`` (monitor None: the
        stage's latest state; PSNR is no measure of a GAN model, BasicSR #117)."""
        stage = self.stage_at(max(self.iteration - 1, 0))[0]
        if stage == "psnr":
            return stage, self.monitor, None
        if self.monitor_gan == "last":
            return stage, None, None
        lower_better = any(k in self.monitor_gan for k in ("lpips", "niqe"))
        return stage, self.monitor_gan, "min" if lower_better else "max"

    @property
    def weights_dir(self) -> str:
        root = self.trainer.default_root_dir if self._trainer is not None else "."
        return os.path.join(root, "weights")

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self):
        opts, scheds, self._opt_index = [], [], {}
        if "psnr" in self.stages:
            c = self.psnr_cfg
            opt = self.adam(self.net_g.parameters(), lr=c["lr"], betas=c["betas"])
            self._opt_index["g_psnr"] = len(opts)
            opts.append(opt)
            scheds.append(build_scheduler(opt, c["scheduler"], c[c["scheduler"]]))
        if "gan" in self.stages:
            c = self.gan_cfg
            sched_cfg = {"milestones": c["milestones"], "gamma": c["gamma"]}
            for name, params, lr in (
                ("g_gan", self.net_g.parameters(), c["lr_g"]),
                ("d", self.net_d.parameters(), c["lr_d"]),
            ):
                opt = self.adam(params, lr=lr, betas=c["betas"])
                self._opt_index[name] = len(opts)
                opts.append(opt)
                scheds.append(build_scheduler(opt, "multistep", sched_cfg))
        return opts, scheds

    def speed_targets(self):
        """channels_last: every network; compiled: the trained G and D and the loss VGG (the EMA G validates on
        images of any size and stays eager)."""
        nets = [self.net_g] + ([self.net_d, self.cri_perceptual.vgg] if "gan" in self.stages else [])
        return nets + [self.net_g_ema], nets

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        stage, it = self.stage_at(self.iteration)
        if stage == "gan" and it == 0 and "psnr" in self.stages:
            self.enter_gan_stage()
        lq, gt, gt_usm = self.training_pair(batch)
        if stage == "psnr":
            logs = self.psnr_step(lq, gt, gt_usm)
        else:
            update_g = it >= int(self.gan_cfg.get("d_init_iters", 0))
            out, logs = self.generator_step(lq, gt, update_g=update_g, gt_usm=gt_usm)
            skip_d = self.adaptive_d_skips(logs.get("l_g_gan"))
            logs.update(self.discriminator_step(out, gt, gt_usm, skip=skip_d))
        ema_update(self.net_g_ema, self.net_g, self.stage_ema_decay(stage))
        self.end_iteration(logs, gt.shape[0], extra={"stage": float(STAGES.index(stage))})

    def stage_ema_decay(self, stage: str) -> float:
        """A stage may set its own decay (the short demo does; null: ``model.ema_decay``); BasicSR uses one value for
        both.  0 means no EMA (BasicSR ``ema_decay: 0``): the EMA generator is a copy of G."""
        value = (self.psnr_cfg if stage == "psnr" else self.gan_cfg).get("ema_decay")
        return float(self.ema_decay if value is None else value)

    def training_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lq, gt, gt_usm)``: the input, the ground truth, and the sharpened ground truth that the losses compare
        with where ``model.psnr.gt_usm`` / ``model.gan.{l1,percep,gan}_gt_usm`` say so (Real-ESRGAN Sec. 4.3).
        ESRGAN trains on the plain GT: ``gt_usm`` is ``gt``; RealESRGANModule overrides this."""
        return batch["lq"], batch["gt"], batch["gt"]

    @staticmethod
    def pick(gt: torch.Tensor, gt_usm: torch.Tensor | None, sharpened: bool) -> torch.Tensor:
        """The target of one loss: ``gt_usm`` when the config says so and there is one, else ``gt``."""
        return gt_usm if sharpened and gt_usm is not None else gt

    def micro(self, *tensors: torch.Tensor | None) -> list[tuple]:
        """The training batch's tensors cut into ``model.micro_batches`` micro-batches (None stays None)."""
        slices = self.micro_slices(tensors[0].shape[0])
        return [tuple(None if t is None else t[s] for t in tensors) for s in slices]

    def psnr_step(self, lq: torch.Tensor, gt: torch.Tensor, gt_usm: torch.Tensor | None = None) -> dict:
        """One optimizer step of L1 (gradients of the micro-batches accumulated)."""
        opt, sched = self._opt("g_psnr")
        sharpened = self.psnr_cfg.get("gt_usm", True)
        opt.zero_grad(set_to_none=True)
        l_pix = []
        for lq_k, gt_k, usm_k in self.micro(lq, gt, gt_usm):
            out = self.net_g(lq_k)
            loss = self.psnr_cfg["pixel_weight"] * F.l1_loss(out, self.pick(gt_k, usm_k, sharpened))
            self.manual_backward(self.micro_loss(loss))
            l_pix.append(loss.detach())
        opt.step()
        sched.step()
        return {"l_pix": self.micro_mean(l_pix), "lr_g": lambda: sched.get_last_lr()[0]}

    def generator_step(
        self, lq: torch.Tensor, gt: torch.Tensor, update_g: bool = True, gt_usm: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """BasicSR ESRGANModel G step (``ragan``), or Real-ESRGAN's RealESRGANModel G step (``vanilla``: L1 and
        perceptual against ``gt_usm`` where configured, ``BCE(D(G(x)), 1)``), gradients of the micro-batches
        accumulated before the one step; returns the SR output of the whole batch (detached) for the D step."""
        opt_g, sched_g = self._opt("g_gan")
        outs, parts = [], []
        if update_g:
            opt_g.zero_grad(set_to_none=True)
        for lq_k, gt_k, usm_k in self.micro(lq, gt, gt_usm):
            out = self.net_g(lq_k)
            if update_g:
                with self.frozen(self.net_d):
                    losses = self.generator_losses(out, gt_k, usm_k)
                    self.manual_backward(self.micro_loss(losses["l_g_total"]))
                parts.append({k: v.detach() for k, v in losses.items()})
            outs.append(out.detach())
        logs = {}
        if update_g:
            opt_g.step()
            logs = {k: self.micro_mean([p[k] for p in parts]) for k in parts[0]}
        sched_g.step()
        logs["lr_g"] = lambda: sched_g.get_last_lr()[0]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), logs

    def generator_losses(self, out: torch.Tensor, gt: torch.Tensor, gt_usm: torch.Tensor | None) -> dict:
        """G's losses on one micro-batch (D frozen by the caller)."""
        c = self.gan_cfg
        if self.gan_type == "vanilla":
            l_pix = c["pixel_weight"] * F.l1_loss(out, self.pick(gt, gt_usm, c.get("l1_gt_usm", True)))
            l_percep = c["perceptual_weight"] * self.cri_perceptual(
                out, self.pick(gt, gt_usm, c.get("percep_gt_usm", True))
            )
            l_gan = c["gan_weight"] * vanilla_gan_loss(self.net_d(out), True)
        else:  # ESRGAN's: every target the plain GT; the relativistic mean is the micro-batch's
            l_pix = c["pixel_weight"] * F.l1_loss(out, gt)
            l_percep = c["perceptual_weight"] * self.cri_perceptual(out, gt)
            real_d_pred = self.net_d(gt).detach()
            fake_g_pred = self.net_d(out)
            l_gan = c["gan_weight"] * ragan_generator_loss(real_d_pred, fake_g_pred)
        return {"l_pix": l_pix, "l_percep": l_percep, "l_g_gan": l_gan, "l_g_total": l_pix + l_percep + l_gan}

    def discriminator_step(
        self, out: torch.Tensor, gt: torch.Tensor, gt_usm: torch.Tensor | None = None, skip: bool = False
    ) -> dict:
        """BasicSR ESRGANModel D step: real and fake halves back-propagated separately, each against
        the *detached* mean of the other (PR #278: two D forwards before one backward break BN under DDP).
        ``vanilla``: Real-ESRGAN's, ``BCE(D(gt), 1)`` and ``BCE(D(G(x)), 0)``, each back-propagated on its own.
        Per micro-batch (the relativistic means are the micro-batch's), gradients accumulated before the one step.

        ``skip`` (model.adaptive_d): no D update this batch; the optimizer step runs with no gradients (Adam leaves
        D and its own state untouched) so that Lightning's global_step keeps counting 2 per GAN batch."""
        opt_d, sched_d = self._opt("d")
        opt_d.zero_grad(set_to_none=True)
        logs = {}
        if not skip:
            real = gt
            if self.gan_type == "vanilla":
                real = self.pick(gt, gt_usm, self.gan_cfg.get("gan_gt_usm", False))
            parts = [self.discriminator_losses(out_k, real_k) for out_k, real_k in self.micro(out.detach(), real)]
            logs = {k: self.micro_mean([p[k] for p in parts]) for k in parts[0]}
        opt_d.step()
        sched_d.step()
        if self.adaptive_d["enabled"]:
            logs["d_skipped"] = torch.tensor(float(skip), device=out.device)
        logs["lr_d"] = lambda: sched_d.get_last_lr()[0]
        return logs

    def discriminator_losses(self, out: torch.Tensor, real: torch.Tensor) -> dict:
        """D's losses on one micro-batch, each back-propagated (scaled by 1/N) as soon as it is computed."""
        if self.gan_type == "vanilla":
            real_d_pred = self.net_d(real)
            l_d_real = vanilla_gan_loss(real_d_pred, True)
            self.manual_backward(self.micro_loss(l_d_real))
            fake_d_pred = self.net_d(out.clone())
            l_d_fake = vanilla_gan_loss(fake_d_pred, False)
            self.manual_backward(self.micro_loss(l_d_fake))
        else:
            fake_d_pred = self.net_d(out).detach()
            real_d_pred = self.net_d(real)
            l_d_real = ragan_discriminator_real_loss(real_d_pred, fake_d_pred)
            self.manual_backward(self.micro_loss(l_d_real))
            fake_d_pred = self.net_d(out)
            l_d_fake = ragan_discriminator_fake_loss(fake_d_pred, real_d_pred.detach())
            self.manual_backward(self.micro_loss(l_d_fake))
        return {
            "l_d_real": l_d_real.detach(),
            "l_d_fake": l_d_fake.detach(),
            "out_d_real": real_d_pred.detach().mean(),
            "out_d_fake": fake_d_pred.detach().mean(),
        }

    # ------------------------------------------------------------------ discriminator guard (model.adaptive_d)
    def adaptive_d_skips(self, l_g_gan: torch.Tensor | None) -> bool:
        """traiNNer-redux's ``adaptive_d`` (traiNNer/models/sr_model.py, optimize_parameters): an EMA of G's
        adversarial loss, ``ema_new = decay * ema + (1 - decay) * l_g_gan`` (starting at 0), updated every batch
        whose G step ran; D's update is skipped for the batch when ``ema_new > ema * threshold``, i.e. while the
        smoothed G adversarial loss rises (G falls behind D).  The loss is averaged over the ranks first, so every
        rank holds the same EMA and takes the same decision (then agreed by an all-reduce, so ranks never diverge)."""
        c = self.adaptive_d
        if not c["enabled"] or l_g_gan is None:
            return False
        value = l_g_gan.detach().float().clone()
        if distributed():
            dist.all_reduce(value)
            value /= dist.get_world_size()
        old = self.adaptive_d_ema
        if old is None:
            old = torch.zeros((), dtype=torch.float32, device=value.device)
        new = c["ema_decay"] * old + (1 - c["ema_decay"]) * value
        skip = (new > old * c["threshold"]).to(torch.int32)
        if distributed():
            dist.all_reduce(skip, op=dist.ReduceOp.MAX)
        self.adaptive_d_ema = new
        skip = bool(skip)
        self.note_d_skip(skip)
        return skip

    def note_d_skip(self, skip: bool) -> None:
        """One train.log line when D updates pause and one when they resume (not one per batch)."""
        if skip and self._d_paused_at is None:
            self._d_paused_at = self.iteration
            if self._trainer is None or self.trainer.is_global_zero:
                log.info(
                    f"adaptive_d: D updates paused at iteration {self.iteration} (the EMA of l_g_gan rose more than "
                    f"x{self.adaptive_d['threshold']} in one step: D is ahead of G)"
                )
        elif not skip and self._d_paused_at is not None:
            if self._trainer is None or self.trainer.is_global_zero:
                log.info(
                    f"adaptive_d: D updates resumed at iteration {self.iteration} "
                    f"({self.iteration - self._d_paused_at} batches without a D update)"
                )
            self._d_paused_at = None

    def replica_state(self) -> dict[str, torch.Tensor]:
        """State besides the networks that every DDP rank must hold identically (callbacks/ddp_consistency.py)."""
        return {} if self.adaptive_d_ema is None else {"adaptive_d_ema": self.adaptive_d_ema}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.adaptive_d_ema is not None:
            checkpoint["adaptive_d_ema"] = self.adaptive_d_ema.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        ema = checkpoint.get("adaptive_d_ema")
        if ema is not None:
            if not torch.is_tensor(ema) or ema.numel() != 1 or not torch.isfinite(ema).all():
                raise ValueError(
                    f"the resumed checkpoint's adaptive_d_ema={ema!r} is not one finite number (a damaged or edited "
                    "checkpoint): refused"
                )
            self.adaptive_d_ema = ema.reshape(()).float().to(self.device)

    def enter_gan_stage(self) -> None:
        """Stage switch.  ``net_g_psnr.pth`` gets stage 1's raw G (``params``) and EMA (``params_ema``), then stage 2
        starts as BasicSR's from that file: G <- ``param_key_g`` (default ``params``: G simply continues), the EMA
        <- ``params_ema`` (it continues too).  The GAN stage's Adam is a fresh optimizer, as in a new BasicSR run."""
        if self.trainer.is_global_zero:
            save_generator_weights(os.path.join(self.weights_dir, "net_g_psnr.pth"), self.net_g, self.net_g_ema)
        if self.param_key_g == "params_ema":
            self.net_g.load_state_dict(self.net_g_ema.state_dict())

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero and self.iteration > 0:
            stage, _ = self.stage_at(self.iteration - 1)
            save_generator_weights(os.path.join(self.weights_dir, f"net_g_{stage}.pth"), self.net_g, self.net_g_ema)

    # ------------------------------------------------------------------ validation
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        attr = "test_names" if stage == "test" else "val_names"
        names = list(getattr(dm, attr, None) or ["val"])
        if names != self.val_names or not len(self.val_metrics):
            self.val_names = names
            # float64 sums: under DDP each rank sums its images and the sums and counts are reduced, so the mean
            # equals a single-process evaluation of the same set (the validation samplers do not pad).
            self.val_metrics = torch.nn.ModuleDict(
                {
                    f"{i}_{m}": MeanMetric().set_dtype(torch.float64)
                    for i in range(len(names))
                    for m in self.metric_names
                }
            ).to(self.device)

    @torch.no_grad()
    def super_resolve(self, lq: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
        """The EMA G's output (or ``net``'s); with ``model.val_tile`` > 0 through tiles of that side (ops/sr_tiles.py,
        as predict.py), so that validation memory is bounded by the tile, not by the largest validation image."""
        net = self.net_g_ema if net is None else net
        if not self.val_tile:
            return net(lq)
        plain = getattr(net, "_orig_mod", net)  # torch.compile's wrapper: the rules read the network itself
        pad = receptive_margin(plain) if self.val_tile_pad == "auto" else int(self.val_tile_pad)
        return tiled_forward(net, lq, self.scale, self.val_tile, pad, unit=unshuffle_factor(plain))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None:  # every image of the batch failed to decode (skipped with a warning naming it)
            return
        lq, gt = batch["lq"], batch["gt"]
        sr = self.super_resolve(lq)
        values = sr_metrics(sr, gt, crop_border=self.scale)
        if self.val_lpips is not None:
            values["lpips"] = self.lpips_values(sr, gt)
        keep = self.keep_mask(batch, gt.shape[0])
        for m in self.metric_names:
            v = values[m].to(self.device, torch.float64)
            self.val_metrics[f"{dataloader_idx}_{m}"].update(v[torch.isfinite(v) & keep])
        if dataloader_idx == 0 and self.eval_prefix == "val":
            self.update_val_fid(sr, gt, keep)
        names = batch.get("name") or [f"{batch_idx}_{k}" for k in range(gt.shape[0])]
        for k, name in enumerate(names):
            if keep[k]:
                self.val_rows.append(
                    {
                        "folder": self.val_names[dataloader_idx],
                        "image": str(name),
                        **{m: float(values[m][k]) for m in self.metric_names},
                    }
                )
        name = self.val_names[dataloader_idx]
        take = [k for k in range(gt.shape[0]) if keep[k]][: self.wants_sample_rows(name)]
        if take:
            raw = self.super_resolve(lq[take], self.net_g)
            bicubic = imresize(lq[take], self.scale)
            rows = [[to_uint8_image(x) for x in (bicubic[j], sr[k], raw[j], gt[k])] for j, k in enumerate(take)]
            self.add_sample_rows(name, rows, [str(names[k]) for k in take])  # file names: the set's sorted order

    @torch.no_grad()
    def lpips_values(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS as evaluate.py computes it: 8-bit quantised images, ``crop_border = scale``."""
        c = self.scale
        q_sr, q_gt = (((x.clamp(0, 1) * 255).round() / 255)[..., c:-c, c:-c].float() for x in (sr, gt))
        value = self.val_lpips(q_sr, q_gt)
        self.val_lpips.reset()  # per-call values only
        return value.detach().reshape(-1)

    def on_validation_epoch_end(self) -> None:
        summary = {}
        p = self.eval_prefix
        for i, name in enumerate(self.val_names):
            for m in self.metric_names:
                metric = self.val_metrics[f"{i}_{m}"]
                value = metric.compute()
                metric.reset()
                self.log(f"{p}/{name}/{m}", value, sync_dist=False)  # MeanMetric already reduced over ranks
                summary[f"{name}/{m}"] = value
                if i == 0:
                    self.log(f"{p}/{m}", value, prog_bar=m == "psnr_y")
        if p != "val":
            return  # test_after_train: metrics only (no per-image table, no counter row)
        summary.update(self.log_val_fid())
        self.val_table = self.gather_val_rows()
        self.gather_sample_rows()
        self.log("iter", float(self.iteration))  # validation rows carry the batch count too (wandb x-axis)
        if not self.trainer.sanity_checking:
            self.log_validation_summary(summary)

    # ------------------------------------------------------------------ test (test_after_train, runtime/results.py)
    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()
