"""SC-FEGAN's training recipe (Jo & Park 2019, arXiv 1902.06838 sec. 3).

Per batch: ``d_steps`` discriminator updates, then one generator update, on the same synthesised inputs.

* G input ``[I*(1-M), sketch, colour, M, noise]``; output I_gen = G(x); composite I_comp = I_gen*M + I*(1-M).
* L_G = L_ppxl + sigma*L_percept + gamma*(L_style(I_gen) + L_style(I_comp)) + upsilon*L_tv + beta*(-E[D(I_comp)])
* L_D = E[1 - D(I_gt)] + E[1 + D(I_comp)] + theta*L_GP + epsilon*E[D(I_gt)^2]   (no ReLU; drift in D)

D sees ``[image, sketch, colour, mask]`` (8 channels).  Images are in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchmetrics import MeanMetric

from archs.registry import make_network
from archs.scfegan_generator import composite, make_generator_input
from lightning_modules.base import IterationGANModule, check_positive_int, to_primitive
from losses.scfegan_loss import (
    PerceptualStyleLoss,
    PerPixelLoss,
    discriminator_loss,
    drift_loss,
    generator_adversarial_loss,
    gradient_penalty,
    total_variation_loss,
)
from metrics.inpainting_metrics import inpainting_metrics
from metrics.lpips import build_validation_lpips
from ops.image_grid import to_uint8_image
from weights.io import CHECKPOINT_META_KEYS, save_generator_weights

METRICS = ("l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask")


def to01(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


class SCFEGANModule(IterationGANModule):
    # The loss VGG and the validation LPIPS are rebuilt from their own weights, not stored.
    frozen_prefixes = ("cri_vgg.", "val_lpips.", "val_fid.")

    def __init__(
        self,
        generator: dict,
        discriminator: dict,
        loss: dict,
        optim: dict,
        iters: int,
        vgg_weights: str = "imagenet",
        monitor: str = "val/psnr_mask",
        task: str = "faces",
        noise_type: str | None = None,
        val_lpips: dict | None = None,
        val_fid: dict | None = None,
        speed: dict | None = None,
        micro_batches: int = 1,
    ) -> None:
        speed = to_primitive(speed)
        super().__init__(speed, micro_batches=micro_batches)
        generator, discriminator, loss, optim = map(to_primitive, (generator, discriminator, loss, optim))
        # noise_type: the noise channel the generator is trained with (the data's synthesis.noise_type; None =
        # read from the data module at fit start).  Stored in the checkpoint's hyper-parameters and the weights'
        # meta, so predict.py / evaluate.py feed the same noise by default.
        self.save_hyperparameters(
            dict(
                generator=generator,
                discriminator=discriminator,
                loss=loss,
                optim=optim,
                iters=iters,
                vgg_weights=vgg_weights,
                monitor=monitor,
                task=task,
                noise_type=noise_type,
                val_lpips=to_primitive(val_lpips),
                val_fid=to_primitive(val_fid),
                speed=speed,
                micro_batches=micro_batches,
            ),
            logger=False,  # the runner logs the whole config once (model.* included): not these keys again
        )
        # The allow-list of archs.registry: what train builds is what evaluate / predict can rebuild from a file.
        self.net_g = make_network(generator, "model.generator", role="generator")
        self.net_d = make_network(discriminator, "model.discriminator", role="discriminator")
        self.w = loss
        self.optim_cfg = optim
        self.iters = check_positive_int(iters, "model.iters", hint="a run of no batch writes nothing")
        self.d_steps = check_positive_int(optim.get("d_steps", 1), "model.optim.d_steps")
        self.cri_pixel = PerPixelLoss(loss["alpha"], loss.get("alpha_on", "hole"))
        self.cri_vgg = PerceptualStyleLoss(loss["sigma"], loss["gamma"], vgg_weights=vgg_weights)
        # float64 sums, reduced over ranks by torchmetrics: equal to a single-process evaluation of the same set
        # (the validation samplers do not pad).
        # LPIPS of the composite against the real image (evaluate.py's face rows: whole image, [0, 1]), when
        # model.val_lpips.enabled: what GAN loss-weight sweeps rank by (conf/sweep/scfegan_loss_weights.yaml).
        self.val_lpips = build_validation_lpips(to_primitive(val_lpips))
        self.metric_names = METRICS + (("lpips",) if self.val_lpips is not None else ())
        self.setup_val_fid(to_primitive(val_fid))  # FID / KID of the composites over the whole set (model.val_fid)
        self.val_metrics = torch.nn.ModuleDict({m: MeanMetric().set_dtype(torch.float64) for m in self.metric_names})
        self.sample_labels = ["masked input", "sketch", "colour", "output", "composite", "real"]

    @property
    def total_iters(self) -> int:
        return self.iters

    # ------------------------------------------------------------------ what travels with the weights
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if getattr(dm, "resolution", None):  # predict.py / the app work at this size (size=auto)
            self.hparams["input_size"] = int(dm.resolution)
        sketch = getattr(getattr(dm, "synthesis", None), "sketch", None)
        if getattr(sketch, "detector", None):  # the sketch kind G learns from: evaluate.py's default (issue 22)
            self.hparams["sketch_detector"] = sketch.detector
            if sketch.detector == "hed":
                self.hparams["sketch_hed_weights"] = sketch.hed_weights
        data_noise = getattr(getattr(dm, "synthesis", None), "noise_type", None)
        if data_noise is None:
            return
        if self.hparams.get("noise_type") is None:
            self.hparams["noise_type"] = data_noise
        elif self.hparams["noise_type"] != data_noise:
            raise ValueError(
                f"model.noise_type={self.hparams['noise_type']!r} but the data synthesises "
                f"data.synthesis.noise_type={data_noise!r}; they must agree (the weights record it)"
            )

    def weights_meta(self) -> dict:
        return {k: self.hparams[k] for k in CHECKPOINT_META_KEYS if self.hparams.get(k)}

    def on_train_end(self) -> None:
        """``weights/net_g_final.pth``: the generator with its architecture and ``meta`` (noise type)."""
        if self.trainer.is_global_zero and self.iteration > 0:
            root = self.trainer.default_root_dir
            save_generator_weights(
                os.path.join(root, "weights", "net_g_final.pth"),
                self.net_g,
                generator=self.hparams["generator"],
                meta=self.weights_meta(),
            )

    def optimizer_steps_total(self) -> int:
        return self.iters * (1 + self.d_steps)

    def configure_optimizers(self):
        c = self.optim_cfg
        opt_g = self.adam(self.net_g.parameters(), lr=c["lr_g"], betas=c["betas"])
        opt_d = self.adam(self.net_d.parameters(), lr=c["lr_d"], betas=c["betas"])
        self._opt_index = {"g": 0, "d": 1}
        return [opt_g, opt_d]  # constant LR (DeepFill v2 train.py:59-77; the paper gives none)

    def speed_targets(self):
        """channels_last: every network; compiled: G and the loss VGG.  D stays eager: its gradient penalty
        differentiates through D twice (create_graph), which compiled (AOTAutograd) graphs do not support."""
        return [self.net_g, self.net_d, self.cri_vgg.vgg], [self.net_g, self.cri_vgg.vgg]

    # ------------------------------------------------------------------ the recipe
    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(I_gen, I_comp) for a synthesised batch."""
        x = make_generator_input(batch["image"], batch["sketch"], batch["color"], batch["mask"], batch["noise"])
        gen = self.net_g(x)
        return gen, composite(gen, batch["image"], batch["mask"])

    @staticmethod
    def d_input(image: torch.Tensor, batch: dict) -> torch.Tensor:
        return torch.cat([image, batch["sketch"], batch["color"], batch["mask"]], dim=1)

    def micro(self, batch: dict) -> list[dict]:
        """The training batch cut into ``model.micro_batches`` micro-batches (every per-image tensor sliced)."""
        n = batch["image"].shape[0]
        slices = self.micro_slices(n)
        if len(slices) == 1:
            return [batch]
        return [
            {k: (v[s] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v) for k, v in batch.items()}
            for s in slices
        ]

    def discriminator_losses(self, batch: dict, comp: torch.Tensor) -> dict:
        """L_D on one micro-batch (the gradient penalty's interpolation and norm are per image), back-propagated
        with the 1/N of gradient accumulation."""
        w = self.w
        real_in = self.d_input(batch["image"], batch)
        fake_in = self.d_input(comp.detach(), batch)
        d_real, d_fake = self.net_d(real_in), self.net_d(fake_in)
        l_adv = discriminator_loss(d_real, d_fake)
        l_gp = gradient_penalty(self.net_d, real_in, fake_in, batch["mask"])
        l_drift = drift_loss(d_real)
        l_d = l_adv + w["theta"] * l_gp + w["epsilon"] * l_drift
        self.manual_backward(self.micro_loss(l_d))
        return {
            "l_d_adv": l_adv.detach(),
            "l_gp": l_gp.detach(),
            "l_drift": l_drift.detach(),
            "l_d_total": l_d.detach(),
            "out_d_real": d_real.detach().mean(),
            "out_d_fake": d_fake.detach().mean(),
        }

    def discriminator_step(self, batch: dict, comp: torch.Tensor) -> dict:
        """One D update: the micro-batches' gradients accumulated, then one optimizer step."""
        opt_d, _ = self._opt("d")
        opt_d.zero_grad(set_to_none=True)
        comps = [comp] if self.micro_batches == 1 else [comp[s] for s in self.micro_slices(comp.shape[0])]
        parts = [self.discriminator_losses(b, c) for b, c in zip(self.micro(batch), comps)]
        opt_d.step()
        return {k: self.micro_mean([p[k] for p in parts]) for k in parts[0]}

    def generator_losses(self, batch: dict, gen: torch.Tensor, comp: torch.Tensor) -> dict:
        """L_G on one micro-batch (D frozen by the caller), back-propagated with the 1/N of gradient accumulation."""
        w, gt, mask = self.w, batch["image"], batch["mask"]
        l_ppxl = self.cri_pixel(gen, gt, mask)
        vgg = self.cri_vgg(gen, comp, gt)
        l_tv = total_variation_loss(comp, mask)
        l_adv = generator_adversarial_loss(self.net_d(self.d_input(comp, batch)))
        l_g = (
            l_ppxl
            + w["sigma"] * vgg["perceptual"]
            + w["gamma"] * vgg["style"]
            + w["upsilon"] * l_tv
            + w["beta"] * l_adv
        )
        self.manual_backward(self.micro_loss(l_g))
        return {
            "l_ppxl": l_ppxl.detach(),
            "l_percept": vgg["perceptual"].detach(),
            "l_style": vgg["style"].detach(),
            "l_tv": l_tv.detach(),
            "l_g_adv": l_adv.detach(),
            "l_g_total": l_g.detach(),
        }

    def generator_step(self, batch: dict, gen: torch.Tensor | None = None, comp: torch.Tensor | None = None) -> dict:
        """One G update.  ``gen`` / ``comp``: G's output and composite of the whole batch, with their graph (one
        micro-batch); with ``model.micro_batches`` > 1 pass None: each micro-batch runs G itself, so that only
        one micro-batch's graph is alive at a time."""
        opt_g, _ = self._opt("g")
        opt_g.zero_grad(set_to_none=True)
        parts = []
        with self.frozen(self.net_d):
            for b in self.micro(batch):
                if gen is None or self.micro_batches > 1:
                    gen_k, comp_k = self(b)
                else:
                    gen_k, comp_k = gen, comp
                parts.append(self.generator_losses(b, gen_k, comp_k))
            opt_g.step()
        return {k: self.micro_mean([p[k] for p in parts]) for k in parts[0]}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        logs = {}
        with torch.no_grad():
            comp = torch.cat([self(b)[1] for b in self.micro(batch)]) if self.micro_batches > 1 else self(batch)[1]
        for _ in range(self.d_steps):
            logs.update(self.discriminator_step(batch, comp))
        if self.micro_batches > 1:
            logs.update(self.generator_step(batch))
        else:
            gen, comp = self(batch)
            logs.update(self.generator_step(batch, gen, comp))
        self.end_iteration(logs, batch["image"].shape[0])

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch is None:  # every image of the batch failed to decode (skipped with a warning naming it)
            return
        gen, comp = self(batch)
        values = inpainting_metrics(to01(comp), to01(batch["image"]), batch["mask"])
        if self.val_lpips is not None:
            values["lpips"] = self.lpips_values(to01(comp), to01(batch["image"]))
        keep = self.keep_mask(batch, batch["image"].shape[0])
        for m in self.metric_names:
            v = values[m].double()
            self.val_metrics[m].update(v[torch.isfinite(v) & keep])
        self.update_val_fid(to01(comp), to01(batch["image"]), keep)
        names = self.val_image_names(batch)
        for k, name in enumerate(names):
            if keep[k]:
                self.val_rows.append({"image": name, **{m: float(values[m][k]) for m in self.metric_names}})
        take = [k for k in range(batch["image"].shape[0]) if keep[k]][: self.wants_sample_rows("val")]
        if take:
            index = batch.get("index")
            keys = [int(index.view(-1)[k]) for k in take] if index is not None else [names[k] for k in take]
            self.add_sample_rows("val", self.sample_rows(batch, gen, comp, take), keys)  # dataset order

    @torch.no_grad()
    def lpips_values(self, comp01: torch.Tensor, real01: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of [0, 1] images, as evaluate.py's face rows (evaluation/scoring.py lpips_scores)."""
        value = self.val_lpips(comp01.float().clamp(0, 1), real01.float().clamp(0, 1))
        self.val_lpips.reset()  # per-call values only
        return value.detach().reshape(-1)

    def val_image_names(self, batch: dict) -> list[str]:
        """File names of a validation batch (from the dataset index the face data carries)."""
        n = batch["image"].shape[0]
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        files = getattr(getattr(dm, "val_set", None), "files", None)
        index = batch.get("index")
        if files is None or index is None:
            return [f"#{i}" for i in (index.tolist() if index is not None else range(n))]
        return [Path(files[int(i)]).name for i in index.view(-1).tolist()]

    def sample_rows(self, batch: dict, gen: torch.Tensor, comp: torch.Tensor, take: list[int]) -> list[list]:
        """Rows of: masked input | sketch | colour | output | composite | real (uint8 HxWx3 images)."""
        rows = []
        for i in take:
            m = batch["mask"][i]
            masked = to01(batch["image"][i]) * (1 - m) + m  # erased region shown white
            color = torch.where(m > 0.5, to01(batch["color"][i]), torch.zeros_like(batch["color"][i]))
            columns = [masked, batch["sketch"][i], color, to01(gen[i]), to01(comp[i]), to01(batch["image"][i])]
            rows.append([to_uint8_image(c) for c in columns])
        return rows

    def on_validation_epoch_end(self) -> None:
        summary = {}
        for m in self.metric_names:
            summary[m] = self.val_metrics[m].compute()
            self.log(f"val/{m}", summary[m], prog_bar=m == "psnr_mask")
            self.val_metrics[m].reset()
        summary.update(self.log_val_fid())
        self.val_table = self.gather_val_rows()
        self.gather_sample_rows()
        self.log("iter", float(self.iteration))  # validation rows carry the batch count too (wandb x-axis)
        if not self.trainer.sanity_checking:
            self.log_validation_summary(summary)
