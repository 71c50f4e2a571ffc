"""ESRGAN's two-stage recipe (Wang et al. 2018, BasicSR's ``SRModel`` + ``ESRGANModel``).

Stage ``psnr``: L1 only.  Stage ``gan``: per batch one G step (L1 + perceptual + RaGAN) then one D step
(RaGAN, split real/fake as BasicSR PR #278).  Both stages run in one job, in batches counted by
``self.iteration``; at the switch the generator restarts from its EMA (BasicSR loads ``params_ema`` of
the stage-1 model) and that generator is written to ``<output_dir>/weights/net_g_psnr.pth`` for
network interpolation.  Validation and saved weights use the EMA generator.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric

from archs.weights_io import load_generator_state, load_into, save_generator_weights
from lightning_modules.base import IterationGANModule, to_primitive
from ops.image_grid import uint8_grid
from lightning_modules.ema import ema_update
from lightning_modules.lr_scheduler import build_scheduler
from losses.gan_loss import ragan_discriminator_fake_loss, ragan_discriminator_real_loss, ragan_generator_loss
from metrics.sr_metrics import sr_metrics
from ops.imresize import imresize

STAGES = ("psnr", "gan")
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


class ESRGANModule(IterationGANModule):
    frozen_prefixes = ("cri_perceptual.",)  # the VGG is rebuilt from its own weights, not stored

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
        monitor: str = "val/psnr_y",
        task: str = "sr",
        speed: dict | None = None,
    ) -> None:
        speed = to_primitive(speed)
        super().__init__(speed)
        generator, discriminator, perceptual, psnr, gan = map(to_primitive, (generator, discriminator, perceptual, psnr, gan))
        stages = list(to_primitive(stages))
        self.save_hyperparameters(
            dict(generator=generator, discriminator=discriminator, perceptual=perceptual, psnr=psnr, gan=gan,
                 stages=stages, init_weights=init_weights, ema_decay=ema_decay, monitor=monitor, task=task,
                 speed=speed)
        )
        bad = [s for s in stages if s not in STAGES]
        if not stages or bad or len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
            raise ValueError(f"model.stages must be a non-empty ordered subset of {list(STAGES)}, got {stages}")
        if stages == ["gan"] and not init_weights:
            raise ValueError(
                "model.stages=[gan] fine-tunes a PSNR-pretrained generator: set model.init_weights to the "
                "net_g_psnr.pth written by stage 1 (or a .ckpt of this project)"
            )
        self.stages = stages
        self.psnr_cfg, self.gan_cfg = psnr, gan
        self.ema_decay = ema_decay
        self.scale = int(generator.get("scale", 4))

        self.net_g = instantiate(generator)
        if init_weights:
            load_into(self.net_g, load_generator_state(init_weights), source=f"model.init_weights={init_weights!r}")
        self.net_g_ema = copy.deepcopy(self.net_g).requires_grad_(False).eval()
        if "gan" in stages:
            self.net_d = instantiate(discriminator)
            self.cri_perceptual = instantiate(perceptual)

        self.val_names: list[str] = ["val"]
        self.val_metrics = torch.nn.ModuleDict()
        self.sample_caption = "bicubic LR | SR (EMA) | HR"

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
            for name, params, lr in (("g_gan", self.net_g.parameters(), c["lr_g"]), ("d", self.net_d.parameters(), c["lr_d"])):
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
        lq, gt = batch["lq"], batch["gt"]
        if stage == "psnr":
            logs = self.psnr_step(lq, gt)
        else:
            out, logs = self.generator_step(lq, gt, update_g=it >= int(self.gan_cfg.get("d_init_iters", 0)))
            logs.update(self.discriminator_step(out, gt))
        # A stage may set its own decay (the short demo does); BasicSR uses one value for both.
        decay = (self.psnr_cfg if stage == "psnr" else self.gan_cfg).get("ema_decay") or self.ema_decay
        ema_update(self.net_g_ema, self.net_g, decay)
        self.end_iteration(logs, gt.shape[0], extra={"stage": float(STAGES.index(stage))})

    def psnr_step(self, lq: torch.Tensor, gt: torch.Tensor) -> dict:
        opt, sched = self._opt("g_psnr")
        out = self.net_g(lq)
        l_pix = self.psnr_cfg["pixel_weight"] * F.l1_loss(out, gt)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(l_pix)
        opt.step()
        sched.step()
        return {"l_pix": l_pix.detach(), "lr_g": lambda: sched.get_last_lr()[0]}

    def generator_step(self, lq: torch.Tensor, gt: torch.Tensor, update_g: bool = True) -> tuple[torch.Tensor, dict]:
        """BasicSR ESRGANModel G step; returns the SR output (with graph) for the D step."""
        c = self.gan_cfg
        opt_g, sched_g = self._opt("g_gan")
        out = self.net_g(lq)
        logs = {}
        if update_g:
            with self.frozen(self.net_d):
                l_pix = c["pixel_weight"] * F.l1_loss(out, gt)
                l_percep = c["perceptual_weight"] * self.cri_perceptual(out, gt)
                real_d_pred = self.net_d(gt).detach()
                fake_g_pred = self.net_d(out)
                l_gan = c["gan_weight"] * ragan_generator_loss(real_d_pred, fake_g_pred)
                l_total = l_pix + l_percep + l_gan
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(l_total)
                opt_g.step()
            logs = {"l_pix": l_pix.detach(), "l_percep": l_percep.detach(), "l_g_gan": l_gan.detach(),
                    "l_g_total": l_total.detach()}
        sched_g.step()
        logs["lr_g"] = lambda: sched_g.get_last_lr()[0]
        return out, logs

    def discriminator_step(self, out: torch.Tensor, gt: torch.Tensor) -> dict:
        """BasicSR ESRGANModel D step: real and fake halves back-propagated separately, each against
        the *detached* mean of the other (PR #278: two D forwards before one backward break BN under DDP)."""
        opt_d, sched_d = self._opt("d")
        out = out.detach()
        opt_d.zero_grad(set_to_none=True)
        fake_d_pred = self.net_d(out).detach()
        real_d_pred = self.net_d(gt)
        l_d_real = ragan_discriminator_real_loss(real_d_pred, fake_d_pred)
        self.manual_backward(l_d_real)
        fake_d_pred = self.net_d(out)
        l_d_fake = ragan_discriminator_fake_loss(fake_d_pred, real_d_pred.detach())
        self.manual_backward(l_d_fake)
        opt_d.step()
        sched_d.step()
        return {"l_d_real": l_d_real.detach(), "l_d_fake": l_d_fake.detach(),
                "out_d_real": real_d_pred.detach().mean(), "out_d_fake": fake_d_pred.detach().mean(),
                "lr_d": lambda: sched_d.get_last_lr()[0]}

    def enter_gan_stage(self) -> None:
        """Stage switch: G (and its EMA) restart from the stage-1 EMA weights, which are also saved."""
        self.net_g.load_state_dict(self.net_g_ema.state_dict())
        if self.trainer.is_global_zero:
            save_generator_weights(os.path.join(self.weights_dir, "net_g_psnr.pth"), self.net_g_ema, self.net_g_ema)

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero and self.iteration > 0:
            stage, _ = self.stage_at(self.iteration - 1)
            save_generator_weights(os.path.join(self.weights_dir, f"net_g_{stage}.pth"), self.net_g, self.net_g_ema)

    # ------------------------------------------------------------------ validation
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(dm, "val_names", None) or ["val"])
        if names != self.val_names or not len(self.val_metrics):
            self.val_names = names
            # float64 sums: under DDP each rank sums its images and the sums and counts are reduced, so the mean
            # equals a single-process evaluation of the same set (the validation samplers do not pad).
            self.val_metrics = torch.nn.ModuleDict(
                {f"{i}_{m}": MeanMetric().set_dtype(torch.float64) for i in range(len(names)) for m in METRICS}
            ).to(self.device)

    @torch.no_grad()
    def super_resolve(self, lq: torch.Tensor) -> torch.Tensor:
        return self.net_g_ema(lq)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lq, gt = batch["lq"], batch["gt"]
        sr = self.super_resolve(lq)
        values = sr_metrics(sr, gt, crop_border=self.scale)
        keep = self.keep_mask(batch, gt.shape[0])
        for m in METRICS:
            v = values[m].to(self.device, torch.float64)
            self.val_metrics[f"{dataloader_idx}_{m}"].update(v[torch.isfinite(v) & keep])
        names = batch.get("name") or [f"{batch_idx}_{k}" for k in range(gt.shape[0])]
        for k, name in enumerate(names):
            if keep[k]:
                self.val_rows.append({"folder": self.val_names[dataloader_idx], "image": str(name),
                                      **{m: float(values[m][k]) for m in METRICS}})
        if batch_idx == 0:
            bicubic = imresize(lq[:1], self.scale)
            self.val_samples[self.val_names[dataloader_idx]] = uint8_grid([bicubic[0], sr[0], gt[0]])

    def on_validation_epoch_end(self) -> None:
        summary = {}
        for i, name in enumerate(self.val_names):
            for m in METRICS:
                metric = self.val_metrics[f"{i}_{m}"]
                value = metric.compute()
                metric.reset()
                self.log(f"val/{name}/{m}", value, sync_dist=False)  # MeanMetric already reduced over ranks
                summary[f"{name}/{m}"] = value
                if i == 0:
                    self.log(f"val/{m}", value, prog_bar=m == "psnr_y")
        self.val_table = self.gather_val_rows()
        self.log("iter", float(self.iteration))  # validation rows carry the batch count too (wandb x-axis)
        if not self.trainer.sanity_checking:
            self.log_validation_summary(summary)
