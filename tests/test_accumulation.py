"""Gradient accumulation (``model.micro_batches``): one optimizer step over N micro-batches equals one step over the
whole batch, for G, D, the EMA and Adam's moments; counters stay in optimizer steps; resume stays consistent.

The equality needs a discriminator whose forward does not depend on the batch: Real-ESRGAN's U-Net SN
discriminator has no BatchNorm, and it runs in eval mode here so that spectral norm's power iteration (one per
forward, and a micro-batch step runs more forwards) does not move ``weight_u`` differently.  ESRGAN's VGG-style
discriminator has BatchNorm (BasicSR's), which normalises with the micro-batch: it is not used for the equality.
"""

import copy
from pathlib import Path

import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg
from test_esrgan_module import TINY_MODEL as ESRGAN_TINY_MODEL

from lightning_modules.base import IterationGANModule
from lightning_modules.esrgan_module import ESRGANModule
from lightning_modules.scfegan_module import SCFEGANModule
from runtime.config_checks import check_train_config
from runtime.training import train

# test_esrgan_module's tiny ESRGAN with Real-ESRGAN's U-Net SN D (no BatchNorm: micro-batches can equal the whole
# batch), the vanilla GAN loss and a fast-moving EMA.
SR_MODEL = copy.deepcopy(ESRGAN_TINY_MODEL)
SR_MODEL["discriminator"] = {"_target_": "archs.unet_discriminator.UNetDiscriminatorSN", "num_feat": 4}
SR_MODEL["perceptual"]["layer_weights"] = {"conv1_2": 1.0}
SR_MODEL["psnr"].update(iters=1, step={"step_size": 1, "gamma": 0.5})
SR_MODEL["gan"].update(iters=3, milestones=[1], pixel_weight=1.0, gan_weight=0.1, gan_type="vanilla")
SR_MODEL["ema_decay"] = 0.5


class _Harness:
    """The module's training_step without a Trainer: raw optimizers and schedulers, plain backward."""

    def __init__(self, module):
        opts, scheds = module.configure_optimizers()
        self.opts = opts
        module._opt = lambda name: (opts[module._opt_index[name]], scheds[module._opt_index[name]])
        module.manual_backward = lambda loss: loss.backward()
        module.enter_gan_stage = lambda: None  # writes net_g_psnr.pth only (param_key_g=params: G continues)


def _adam_moments(opts):
    return [t for o in opts for s in o.state.values() for t in (s["exp_avg"], s["exp_avg_sq"])]


def _sr_run(micro_batches: int, unscaled: bool = False, monkeypatch=None):
    """Three batches of 4 (one PSNR, two GAN) in float64; returns the networks' parameters and Adam's moments."""
    torch.manual_seed(0)
    m = ESRGANModule(**SR_MODEL, micro_batches=micro_batches).double()
    m.net_d.eval()  # no power iteration (see the module docstring); no BatchNorm in this D
    if unscaled:
        monkeypatch.setattr(m, "micro_loss", lambda loss: loss)
    h = _Harness(m)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        batch = {
            "lq": torch.rand(4, 3, 8, 8, generator=g).double(),
            "gt": torch.rand(4, 3, 32, 32, generator=g).double(),
        }
        m.training_step(batch, 0)
    assert m.iteration == 3  # batches = optimizer steps, whatever micro_batches is
    return {
        "g": list(m.net_g.parameters()),
        "d": list(m.net_d.parameters()),
        "ema": list(m.net_g_ema.parameters()),
        "adam": _adam_moments(h.opts),
    }


def _assert_same(a, b, rtol, atol_frac=0.0, param_atol=0.0):
    """Every tensor equal within ``rtol``, plus ``atol_frac`` of the tensor's largest magnitude (float32 runs: an
    element near zero carries the rounding of its whole tensor), parameters within ``param_atol`` (a fraction of
    one Adam step, lr: Adam divides by sqrt(v), so a rounding-sized gradient near 0 can move a parameter by more
    than its rounding)."""
    for key in a:
        assert len(a[key]) == len(b[key]) > 0, key
        for x, y in zip(a[key], b[key]):
            atol = atol_frac * float(x.abs().max()) if key == "adam" else param_atol
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda msg, key=key: f"{key}: {msg}")


@pytest.mark.slow
def test_sr_two_micro_batches_equal_the_whole_batch_for_g_d_ema_and_adam():
    whole, micro = _sr_run(1), _sr_run(2)
    # Both networks really trained (the comparison is not between untouched initial weights).
    torch.manual_seed(0)
    init = ESRGANModule(**SR_MODEL).double()
    assert all(not torch.equal(p, q) for p, q in zip(init.net_d.parameters(), whole["d"]))
    _assert_same(whole, micro, rtol=1e-9)


@pytest.mark.slow
def test_sr_equality_fails_without_the_1_over_n_scaling(monkeypatch):
    whole, unscaled = _sr_run(1), _sr_run(2, unscaled=True, monkeypatch=monkeypatch)
    with pytest.raises(AssertionError):
        _assert_same(whole, unscaled, rtol=1e-9)


SC_MODEL = dict(
    generator={"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
    discriminator={"_target_": "archs.sn_patch_discriminator.SNPatchDiscriminator", "cnum": 4},
    loss={"alpha": 6.0, "sigma": 0.05, "gamma": 120.0, "upsilon": 0.1, "beta": 0.001, "theta": 10.0, "epsilon": 0.001},
    optim={"lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.5, 0.999], "d_steps": 1},
    iters=10,
    vgg_weights="random",
)


def _face_batch(b, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, 32:96, 40:100] = 1
    return {
        "image": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
        "mask": mask,
        "sketch": (torch.rand(b, 1, size, size, generator=g) > 0.9).float() * mask,
        "color": (torch.rand(b, 3, size, size, generator=g) * 2 - 1) * mask,
        "noise": torch.randn(b, 1, size, size, generator=g) * mask,
    }


def _sc_run(micro_batches: int, unscaled: bool = False, monkeypatch=None):
    torch.manual_seed(0)
    m = SCFEGANModule(**SC_MODEL, micro_batches=micro_batches)
    m.net_d.eval()  # spectral norm without power iterations (SN-PatchGAN has no BatchNorm)
    if unscaled:
        monkeypatch.setattr(m, "micro_loss", lambda loss: loss)
    opts = m.configure_optimizers()
    m._opt = lambda name: (opts[m._opt_index[name]], None)
    m.manual_backward = lambda loss: loss.backward()
    # One batch: in float32 a second step compares rounding noise (G's gated-conv biases ahead of a normalisation
    # have gradients that are 0 up to rounding, and Adam normalises them to full steps).
    torch.manual_seed(10)  # the gradient penalty's interpolation weights: rand(4) == rand(2), rand(2)
    m.training_step(_face_batch(4), 0)
    return {"g": list(m.net_g.parameters()), "d": list(m.net_d.parameters()), "adam": _adam_moments(opts)}


@pytest.mark.slow
def test_scfegan_two_micro_batches_equal_the_whole_batch(monkeypatch):
    whole, micro = _sc_run(1), _sc_run(2)
    # float32 (the gradient penalty runs in fp32): summation order differs, so a float tolerance.  The gradients are
    # compared through Adam's moments (rtol 1e-4 + 1e-4 of each tensor's largest value; 2x without 1/N).  After ONE
    # Adam step a parameter has moved by lr * g / (|g| + eps), about lr * sign(g): a gradient that is 0 up to
    # rounding may flip sign with the summation order (2 threads vs 1), so parameters agree within 2 lr only.
    tol = dict(rtol=1e-4, atol_frac=1e-4, param_atol=2.5 * SC_MODEL["optim"]["lr_g"])
    _assert_same(whole, micro, **tol)
    with pytest.raises(AssertionError):  # Adam's moments are the accumulated gradients: 2x
        _assert_same(whole, _sc_run(2, unscaled=True, monkeypatch=monkeypatch), **tol)


def test_micro_batches_must_divide_the_batch_and_lightning_accumulation_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"model.micro_batches=0"):
        ESRGANModule(**SR_MODEL, micro_batches=0)
    m = ESRGANModule(**SR_MODEL, micro_batches=3)
    with pytest.raises(ValueError, match=r"model.micro_batches=3 must divide the training batch \(4 images"):
        m.micro_slices(4)
    assert IterationGANModule.micro_mean([torch.tensor(2.0)]) == 2.0
    base = [*TINY_ESRGAN, "data.train_dirs=[x]", "data.val_dirs=[x]"]
    with pytest.raises(ValueError, match=r"model.micro_batches=3 must divide data.batch_size=2"):
        check_train_config(compose_cfg(tmp_path, [*base, "model.micro_batches=3"]))
    with pytest.raises(ValueError, match=r"trainer.accumulate_grad_batches=2.*model.micro_batches"):
        check_train_config(compose_cfg(tmp_path, [*base, "+trainer.accumulate_grad_batches=2"]))
    check_train_config(compose_cfg(tmp_path, [*base, "model.micro_batches=2", "+trainer.accumulate_grad_batches=1"]))


# ---------------------------------------------------------------- end to end, real Trainer


def _image_dir(tmp_path: Path) -> Path:
    import numpy as np
    from conftest import write_png

    y, x = np.mgrid[0:48, 0:48] / 48
    img = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 0.4 + 0.5
    write_png(tmp_path / "img" / "a.png", (img * 255).astype(np.uint8))
    return tmp_path / "img"


@pytest.mark.slow
def test_resume_with_micro_batches_counts_optimizer_steps_and_continues_identically(tmp_path, monkeypatch):
    from pytorch_lightning import Callback

    from runtime.training import instantiate_callbacks as real_callbacks

    data = _image_dir(tmp_path)

    def cfg(run, extra=()):
        return compose_cfg(
            tmp_path / run,
            [
                *TINY_ESRGAN,
                f"data.train_dirs=[{data}]",
                f"data.val_dirs=[{data}]",
                "data.batch_size=4",
                "model.micro_batches=2",
                "model.psnr.iters=2",
                "model.gan.iters=3",
                "trainer.val_check_interval=2",
                "trainer.log_every_n_steps=1",
                "seed=3",
                *extra,
            ],
        )

    class Rows(Callback):
        def __init__(self):
            self.rows = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.rows.append((pl_module.iteration, trainer.global_step, float(trainer.callback_metrics["iter"])))

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.iteration == 3:  # in the GAN stage, as a pre-emption would
                trainer.should_stop = True

    rows = Rows()
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), rows])
    full = train(cfg("full"))
    # One row per optimizer step of each network: iteration and the logged `iter` count batches of 4 images (two
    # micro-batches each), global_step 1 per PSNR batch and 2 per GAN batch.
    assert rows.rows == [(1, 1, 1.0), (2, 2, 2.0), (3, 4, 3.0), (4, 6, 4.0), (5, 8, 5.0)]
    assert full["iteration"] == 5

    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), StopAt()])
    first = train(cfg("a"))
    ckpt = torch.load(first["last_model_path"], map_location="cpu", weights_only=True)
    # The last checkpoint, written at the stop: 2 PSNR batches (1 step each) + 1 GAN batch (G and D: 2 steps).
    assert (ckpt["iteration"], ckpt["global_step"]) == (3, 4)
    monkeypatch.setattr("runtime.training.instantiate_callbacks", real_callbacks)
    resumed = train(cfg("b", [f"ckpt_path={first['last_model_path']}"]))
    assert resumed["iteration"] == 5

    a = torch.load(full["last_model_path"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_model_path"], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 + 2 * 3
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        for sa, sb in zip(oa["state"].values(), ob["state"].values()):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    # The schedules count optimizer steps: PSNR 2 steps, the GAN stage's G and D 3 each.
    assert [s["last_epoch"] for s in a["lr_schedulers"]] == [s["last_epoch"] for s in b["lr_schedulers"]] == [2, 3, 3]
    assert a["hyper_parameters"]["micro_batches"] == 2
