"""SC-FEGAN recipe in Lightning: G/D separation, the loss assembly, overfitting, resume, data to checkpoint.

VGG16 is randomly initialised (pretrained weights cannot be downloaded on the test machines).
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png
from pytorch_lightning import Callback

from lightning_modules.scfegan_module import SCFEGANModule
from losses.scfegan_loss import discriminator_loss, drift_loss, gradient_penalty
from runtime.training import train

TINY = dict(
    generator={"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
    discriminator={"_target_": "archs.sn_patch_discriminator.SNPatchDiscriminator", "cnum": 4},
    loss={"alpha": 6.0, "sigma": 0.05, "gamma": 120.0, "upsilon": 0.1, "beta": 0.001, "theta": 10.0, "epsilon": 0.001},
    optim={"lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.5, 0.999], "d_steps": 1},
    iters=10,
    vgg_weights="random",
)

TINY_CFG = [
    "experiment=scfegan_demo",
    "logger=none",
    "model.vgg_weights=random",
    "model.generator.cnum=4",
    "model.discriminator.cnum=4",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "~callbacks.rich_progress_bar",
]


def _batch(b=2, size=128, seed=0):
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


class _Harness:
    def __init__(self, module):
        opts = module.configure_optimizers()
        module._opt = lambda name: (opts[module._opt_index[name]], None)
        module.manual_backward = lambda loss: loss.backward()


def _snap(net):
    return [p.detach().clone() for p in net.parameters()]


def test_composite_keeps_unmasked_pixels_exactly():
    torch.manual_seed(0)
    m = SCFEGANModule(**TINY)
    batch = _batch()
    gen, comp = m(batch)
    keep = batch["mask"].expand_as(comp) == 0
    assert torch.equal(comp[keep], batch["image"][keep])
    assert torch.equal(comp[~keep], gen[~keep])
    assert gen.min() >= -1 and gen.max() <= 1  # tanh output


@pytest.mark.slow
def test_d_step_and_g_step_touch_only_their_network():
    torch.manual_seed(0)
    m = SCFEGANModule(**TINY)
    _Harness(m)
    batch = _batch()
    g0, d0 = _snap(m.net_g), _snap(m.net_d)
    with torch.no_grad():
        _, comp = m(batch)
    logs = m.discriminator_step(batch, comp)
    assert all(torch.equal(a, b) for a, b in zip(g0, m.net_g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.net_d.parameters()))
    assert {"l_d_adv", "l_gp", "l_drift", "l_d_total", "out_d_real", "out_d_fake"} <= set(logs)

    d1 = _snap(m.net_d)
    gen, comp = m(batch)
    logs = m.generator_step(batch, gen, comp)
    assert all(torch.equal(a, b) for a, b in zip(d1, m.net_d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.net_g.parameters()))
    assert all(p.requires_grad for p in m.net_d.parameters())
    assert {"l_ppxl", "l_percept", "l_style", "l_tv", "l_g_adv", "l_g_total"} <= set(logs)


def test_d_loss_is_the_papers_sum_with_drift_in_d():
    torch.manual_seed(0)
    m = SCFEGANModule(**TINY)
    _Harness(m)
    batch = _batch()
    with torch.no_grad():
        _, comp = m(batch)
    real_in, fake_in = m.d_input(batch["image"], batch), m.d_input(comp, batch)
    # A copy of D with the same spectral-norm power-iteration state, run in the same order as the step
    # (each training-mode forward advances u).
    d_copy = copy.deepcopy(m.net_d)
    d_real, d_fake = d_copy(real_in), d_copy(fake_in)
    torch.manual_seed(5)  # same interpolation t inside the GP
    gp = gradient_penalty(d_copy, real_in, fake_in, batch["mask"])
    torch.manual_seed(5)
    logs = m.discriminator_step(batch, comp)
    assert logs["l_d_adv"].item() == pytest.approx(discriminator_loss(d_real, d_fake).item(), rel=1e-5)
    assert logs["l_drift"].item() == pytest.approx(drift_loss(d_real).item(), rel=1e-5)
    assert logs["l_gp"].item() == pytest.approx(gp.item(), rel=1e-4)
    expected = logs["l_d_adv"] + 10.0 * logs["l_gp"] + 0.001 * logs["l_drift"]
    assert logs["l_d_total"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_generator_total_uses_the_configured_weights():
    torch.manual_seed(0)
    m = SCFEGANModule(**TINY)
    _Harness(m)
    batch = _batch()
    gen, comp = m(batch)
    logs = m.generator_step(batch, gen, comp)
    w = TINY["loss"]
    expected = (
        logs["l_ppxl"]
        + w["sigma"] * logs["l_percept"]
        + w["gamma"] * logs["l_style"]
        + w["upsilon"] * logs["l_tv"]
        + w["beta"] * logs["l_g_adv"]
    )
    assert logs["l_g_total"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_sample_grid_is_uint8_with_six_columns():
    m = SCFEGANModule(**TINY)
    batch = _batch(b=3)
    gen, comp = m(batch)
    from ops.image_grid import LABEL_HEIGHT, labelled_grid

    rows = m.sample_rows(batch, gen, comp, [0, 1, 2])
    grid = labelled_grid(rows, m.sample_labels)  # as callbacks/sample_images.py draws it
    assert len(m.sample_labels) == 6 and grid.dtype == torch.uint8
    assert grid.shape == (LABEL_HEIGHT + 3 * 128, 6 * 128, 3)
    assert grid.float().std() > 0


def _face_dir(tmp_path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128] / 128
    for i in range(n):
        img = np.stack([np.sin(3 * x + i), np.cos(4 * y - i), np.sin(2 * (x + y))], -1) * 0.4 + 0.5
        write_png(
            tmp_path / "faces" / f"{i:03d}.png", (img * 255 + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        )
    return tmp_path / "faces"


class _Recorder(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/l_ppxl"]))


@pytest.mark.slow
def test_tiny_overfit_lowers_the_reconstruction_loss(tmp_path, monkeypatch):
    faces = _face_dir(tmp_path, n=2)
    rec = _Recorder()
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [rec])
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *TINY_CFG,
            f"data.image_dir={faces}",
            "data.num_val=1",
            "data.batch_size=1",
            "data.hflip=false",
            "model.iters=60",
            "model.optim.lr_g=3e-3",
            "trainer.val_check_interval=60",
            "trainer.overfit_batches=1",
            "trainer.log_every_n_steps=1",
        ],
    )
    train(cfg)
    assert len(rec.losses) == 60
    assert np.mean(rec.losses[-10:]) < 0.6 * np.mean(rec.losses[:5])


class _StopAt(Callback):
    def __init__(self, iteration):
        self.iteration = iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == self.iteration:
            trainer.should_stop = True


@pytest.mark.slow
def test_resume_from_last_ckpt_restores_the_state(tmp_path, monkeypatch):
    faces = _face_dir(tmp_path)
    extra = [f"data.image_dir={faces}", "data.num_val=2", "model.iters=4", "trainer.val_check_interval=2"]
    from runtime.training import instantiate_callbacks as real_callbacks

    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), _StopAt(2)])
    first = train(compose_cfg(tmp_path / "a", [*TINY_CFG, *extra]))
    assert first["iteration"] == 2
    ckpt = torch.load(first["last_model_path"], map_location="cpu", weights_only=True)
    # The training noise travels with the weights: checkpoint hparams and weights/net_g_final.pth meta (issue 8).
    from weights.io import read_generator_file

    assert ckpt["hyper_parameters"]["noise_type"] == "gaussian"
    # ... and so do the working size it was trained at (issue 15: predict.py size=auto) and the sketch detector its
    # inputs were drawn with (issue 22: evaluate.py's sketch_detector=auto; faces_demo draws classic sketches).
    recorded = {"noise_type": "gaussian", "input_size": 128, "sketch_detector": "classic"}
    assert read_generator_file(first["last_model_path"]).meta == recorded
    final = read_generator_file(Path(first["output_dir"]) / "weights" / "net_g_final.pth")
    assert final.meta == recorded and final.generator["cnum"] == 4
    # The random VGG is recorded in result.json, never silent.
    result_json = json.loads((Path(first["output_dir"]) / "result.json").read_text())
    assert result_json["perceptual_backbone"]["cri_vgg.vgg"] == {
        "arch": "vgg16",
        "requested": "random",
        "weights": "random",
        "pretrained": False,
    }
    assert ckpt["iteration"] == 2 and ckpt["global_step"] == 4  # 1 D + 1 G step per batch
    assert not any(k.startswith("cri_vgg.") for k in ckpt["state_dict"])
    samples = list((Path(first["output_dir"]) / "samples").glob("*.png"))
    assert samples, "validation grids must be written"

    # Resuming restores weights, optimizer moments and the batch count exactly, then trains on.
    restored = {}

    class _Check(Callback):
        def on_train_start(self, trainer, pl_module):
            restored["iteration"] = pl_module.iteration
            restored["g"] = {k: v.clone() for k, v in pl_module.net_g.state_dict().items()}
            restored["opt"] = trainer.optimizers[0].state_dict()["state"][0]["exp_avg"].clone()

    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), _Check()])
    second = train(compose_cfg(tmp_path / "b", [*TINY_CFG, *extra, f"ckpt_path={first['last_model_path']}"]))
    assert restored["iteration"] == 2 and second["iteration"] == 4
    for k, v in restored["g"].items():
        assert torch.equal(v, ckpt["state_dict"][f"net_g.{k}"]), k
    assert torch.equal(restored["opt"], ckpt["optimizer_states"][0]["state"][0]["exp_avg"])
    final = torch.load(second["last_model_path"], map_location="cpu", weights_only=True)
    assert final["global_step"] == 8 and final["iteration"] == 4
