"""The discriminator guard ``model.adaptive_d`` (traiNNer-redux traiNNer/models/sr_model.py): the rule by hand, a
skipped D update leaves D (and its Adam state) untouched while G trains, it is logged, the EMA survives a resume
bit for bit, and under DDP every rank holds the same EMA (and so takes the same decisions)."""

import copy
import logging
from pathlib import Path

import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg, write_png
from pytorch_lightning import Callback
from test_esrgan_module import TINY_MODEL as ESRGAN_TINY_MODEL

from lightning_modules.esrgan_module import ESRGANModule
from runtime.training import train

# test_esrgan_module's tiny ESRGAN with a shallower perceptual layer, one PSNR batch, and the GAN stage only.
TINY_MODEL = copy.deepcopy(ESRGAN_TINY_MODEL)
TINY_MODEL["perceptual"]["layer_weights"] = {"conv1_2": 1.0}
TINY_MODEL["psnr"].update(iters=1, step={"step_size": 1, "gamma": 0.5})
TINY_MODEL["stages"] = ["gan"]


def _module(tmp_path, **adaptive):
    # stages=[gan] starts from generator weights: write some.
    from weights.io import save_generator_weights

    torch.manual_seed(0)
    probe = ESRGANModule(**{**TINY_MODEL, "stages": ["psnr", "gan"]})
    path = tmp_path / "g.pth"
    save_generator_weights(str(path), probe.net_g, probe.net_g_ema)
    return ESRGANModule(**TINY_MODEL, init_weights=str(path), adaptive_d={"enabled": True, **adaptive})


def test_rule_by_hand(tmp_path):
    m = _module(tmp_path, ema_decay=0.5, threshold=1.02)
    decisions, emas = [], []
    for value in (1.0, 1.0, 0.5, 3.0, 1.8):
        decisions.append(m.adaptive_d_skips(torch.tensor(value)))
        emas.append(float(m.adaptive_d_ema))
    # ema: 0 -> 0.5 (> 0 * 1.02: skip) -> 0.75 (> 0.51: skip) -> 0.625 (< 0.765) -> 1.8125 (> 0.6375: skip)
    #   -> 1.80625 (< 1.84875)
    assert emas[:4] == [0.5, 0.75, 0.625, 1.8125] and emas[4] == pytest.approx(1.80625)
    assert decisions == [True, True, False, True, False]
    off = ESRGANModule(**{**TINY_MODEL, "stages": ["psnr", "gan"]})
    assert off.adaptive_d_skips(torch.tensor(1.0)) is False and off.adaptive_d_ema is None
    assert m.adaptive_d_skips(None) is False  # a D-only warm-up batch (d_init_iters): no G loss, no update
    assert float(m.adaptive_d_ema) == emas[4]
    with pytest.raises(ValueError, match="model.adaptive_d.threshold"):
        ESRGANModule(**{**TINY_MODEL, "stages": ["psnr", "gan"]}, adaptive_d={"enabled": True, "threshold": 0})
    with pytest.raises(ValueError, match="unknown keys"):
        ESRGANModule(**{**TINY_MODEL, "stages": ["psnr", "gan"]}, adaptive_d={"enabeld": True})


class _Harness:
    def __init__(self, module):
        opts, scheds = module.configure_optimizers()
        self.opts, self.scheds = opts, scheds
        module._opt = lambda name: (opts[module._opt_index[name]], scheds[module._opt_index[name]])
        module.manual_backward = lambda loss: loss.backward()


def _snap(net):
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.slow
def test_a_skipped_d_update_leaves_d_untouched_while_g_trains(tmp_path, caplog):
    m = _module(tmp_path)
    h = _Harness(m)
    batch = {"lq": torch.rand(2, 3, 8, 8), "gt": torch.rand(2, 3, 32, 32)}
    g0, d0 = _snap(m.net_g), _snap(m.net_d)
    opt_d = h.opts[m._opt_index["d"]]
    with caplog.at_level(logging.INFO, logger="lightning_modules.esrgan_module"):
        m.training_step(batch, 0)  # the EMA starts at 0: the first GAN batch always skips D (traiNNer-redux too)
        m.training_step(batch, 1)
    assert all(torch.equal(a, b) for a, b in zip(d0, m.net_d.parameters())), "a skipped D update changed D"
    assert not opt_d.state, "a skipped D update must not advance D's Adam (its step count and moments)"
    assert all(not torch.equal(a, b) for a, b in zip(g0, m.net_g.parameters())), "G must still train"
    assert h.scheds[m._opt_index["d"]].last_epoch == 2  # D's schedule still counts batches
    paused = [r.getMessage() for r in caplog.records if "adaptive_d" in r.getMessage()]
    assert paused == [paused[0]] and "paused at iteration 0" in paused[0]  # one line, not one per batch

    # A large EMA: G's smoothed adversarial loss falls, D updates again, and the resumption is logged.
    m.adaptive_d_ema = torch.tensor(100.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightning_modules.esrgan_module"):
        m.training_step(batch, 2)
    assert all(not torch.equal(a, b) for a, b in zip(d0, m.net_d.parameters())), "D must update when not skipped"
    assert any("resumed at iteration 2 (2 batches without a D update)" in r.getMessage() for r in caplog.records)


def _image_dir(tmp_path: Path) -> Path:
    import numpy as np

    y, x = np.mgrid[0:48, 0:48] / 48
    img = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 0.4 + 0.5
    write_png(tmp_path / "img" / "a.png", (img * 255).astype(np.uint8))
    return tmp_path / "img"


@pytest.mark.slow
def test_logged_and_resumed_bit_identically(tmp_path, monkeypatch):
    from runtime.training import instantiate_callbacks as real_callbacks

    data = _image_dir(tmp_path)

    def cfg(run, extra=()):
        return compose_cfg(
            tmp_path / run,
            [
                *TINY_ESRGAN,
                f"data.train_dirs=[{data}]",
                f"data.val_dirs=[{data}]",
                "model.psnr.iters=1",
                "model.gan.iters=5",
                "model.adaptive_d.enabled=true",
                "model.adaptive_d.ema_decay=0.5",  # decisions that change within a few batches
                "trainer.val_check_interval=3",
                "trainer.log_every_n_steps=1",
                "seed=5",
                *extra,
            ],
        )

    class Rows(Callback):
        def __init__(self):
            self.skipped, self.start_ema = [], None

        def on_train_start(self, trainer, pl_module):
            self.start_ema = pl_module.adaptive_d_ema

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.iteration > 1:  # GAN batches
                self.skipped.append(float(trainer.callback_metrics["train/d_skipped"]))

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.iteration == 4:
                trainer.should_stop = True

    rows = Rows()
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), rows])
    full = train(cfg("full"))
    assert len(rows.skipped) == 5 and rows.skipped[0] == 1.0  # logged every GAN batch; the first always skips
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), StopAt()])
    first = train(cfg("a"))
    ckpt = torch.load(first["last_model_path"], map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 4 and float(ckpt["adaptive_d_ema"]) > 0
    resumed_rows = Rows()
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), resumed_rows])
    resumed = train(cfg("b", [f"ckpt_path={first['last_model_path']}"]))
    assert torch.equal(resumed_rows.start_ema.cpu(), ckpt["adaptive_d_ema"])  # restored, not restarted at 0
    assert resumed_rows.skipped == rows.skipped[3:]  # the same decisions after the resume
    a = torch.load(full["last_model_path"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_model_path"], map_location="cpu", weights_only=True)
    assert torch.equal(a["adaptive_d_ema"], b["adaptive_d_ema"])
    assert a["global_step"] == b["global_step"] == 1 + 2 * 5  # a skipped D step still counts (no-gradient step)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


@pytest.mark.slow
def test_ddp_ranks_hold_the_same_ema_and_networks_with_micro_batches(tmp_path):
    from test_ddp import DDP_CPU, TINY_ESRGAN_CLI, _check, _replica_report, run_train

    run_dir = tmp_path / "run"
    proc = run_train(
        [
            *TINY_ESRGAN_CLI,
            *DDP_CPU,
            "model.gan.iters=3",
            "model.adaptive_d.enabled=true",
            "model.adaptive_d.ema_decay=0.5",
            "model.micro_batches=2",  # and gradient accumulation under DDP: still one average per optimizer step
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    _check(proc)
    # adaptive_d_ema: the loss is averaged over the ranks before the EMA (each rank trains on other images, so
    # without it the EMAs differ); D identical: the ranks agreed on every skip.
    report = _replica_report(run_dir, ["net_g", "net_d", "net_g_ema", "adaptive_d_ema"])
    assert "adaptive_d_ema" in report["ranks"][0]["fingerprints"]
    assert "adaptive_d: D updates paused at iteration 2" in (run_dir / "train.log").read_text()
