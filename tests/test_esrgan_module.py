"""ESRGAN recipe in Lightning: stage schedule, G/D separation, overfitting, resume, train()/evaluate().

The perceptual VGG is randomly initialised here (pretrained weights cannot be downloaded on the test
machines); the code path is the real one.
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg, write_png
from pytorch_lightning import Callback

from evaluation.run import evaluate
from lightning_modules.esrgan_module import ESRGANModule
from lightning_modules.lr_scheduler import CosineAnnealingRestartLR
from runtime.training import train
from weights.io import load_generator_state

TINY_MODEL = dict(
    generator={"_target_": "archs.rrdbnet.RRDBNet", "num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4},
    discriminator={"_target_": "archs.vgg_discriminator.VGGStyleDiscriminator", "num_feat": 4, "input_size": 32},
    perceptual={"_target_": "losses.basic_loss.PerceptualLoss", "layer_weights": {"conv5_4": 1.0}, "weights": "random"},
    psnr={
        "iters": 3,
        "lr": 2e-4,
        "betas": [0.9, 0.99],
        "pixel_weight": 1.0,
        "scheduler": "step",
        "step": {"step_size": 2, "gamma": 0.5},
    },
    gan={
        "iters": 4,
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": [0.9, 0.99],
        "milestones": [2],
        "gamma": 0.5,
        "pixel_weight": 1e-2,
        "perceptual_weight": 1.0,
        "gan_weight": 5e-3,
    },
)


def test_stage_schedule_counts_batches_not_optimizer_steps():
    m = ESRGANModule(**TINY_MODEL)
    assert [m.stage_at(i) for i in range(7)] == [
        ("psnr", 0),
        ("psnr", 1),
        ("psnr", 2),
        ("gan", 0),
        ("gan", 1),
        ("gan", 2),
        ("gan", 3),
    ]
    assert m.total_iters == 7
    assert m.optimizer_steps_total() == 3 + 2 * 4  # Lightning's global_step: 2 per GAN batch
    m2 = ESRGANModule(**{**TINY_MODEL, "gan": {**TINY_MODEL["gan"], "d_init_iters": 1}})
    assert m2.optimizer_steps_total() == 3 + 2 * 4 - 1


def test_stage_config_errors_are_clear():
    with pytest.raises(ValueError, match="init_weights"):
        ESRGANModule(**TINY_MODEL, stages=["gan"])
    with pytest.raises(ValueError, match="ordered subset"):
        ESRGANModule(**TINY_MODEL, stages=["gan", "psnr"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ESRGANModule(**TINY_MODEL, stages=["gan"], init_weights="/nope.pth")


class _Harness:
    """Run the module's step methods without a Trainer: raw optimizers, plain backward."""

    def __init__(self, module):
        self.m = module
        opts, scheds = module.configure_optimizers()
        module._opt = lambda name: (opts[module._opt_index[name]], scheds[module._opt_index[name]])
        module.manual_backward = lambda loss: loss.backward()


def _snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def _changed(before, net):
    return [not torch.equal(b, p) for b, p in zip(before, net.parameters())]


@pytest.mark.slow
def test_d_step_leaves_g_untouched_and_g_step_leaves_d_untouched():
    torch.manual_seed(0)
    m = ESRGANModule(**TINY_MODEL)
    _Harness(m)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)

    g0, d0 = _snapshot(m.net_g), _snapshot(m.net_d)
    d_buffers = [b.clone() for b in m.net_d.buffers()]
    out, logs = m.generator_step(lq, gt)
    assert all(_changed(g0, m.net_g)), "every G parameter should move in a G step"
    assert not any(_changed(d0, m.net_d)), "a G step must not change D"
    assert all(p.grad is None for p in m.net_d.parameters())
    assert all(p.requires_grad for p in m.net_d.parameters()), "D's requires_grad must be restored"
    assert {"l_pix", "l_percep", "l_g_gan", "l_g_total"} <= set(logs)

    g1, d1 = _snapshot(m.net_g), _snapshot(m.net_d)
    logs = m.discriminator_step(out, gt)
    assert not any(_changed(g1, m.net_g)), "a D step must not change G"
    assert all(_changed(d1, m.net_d)), "every D parameter should move in a D step"
    assert {"l_d_real", "l_d_fake", "out_d_real", "out_d_fake"} <= set(logs)
    # BN running statistics are updated by D's forwards in train mode (as in BasicSR).
    assert any(not torch.equal(a, b) for a, b in zip(d_buffers, m.net_d.buffers()))


def test_d_loss_matches_basicsr_formula():
    torch.manual_seed(1)
    m = ESRGANModule(**TINY_MODEL)
    _Harness(m)
    gt, out = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    m.net_d.eval()  # fixed BN statistics so that the direct computation sees the same D
    with torch.no_grad():
        c_r, c_f = m.net_d(gt), m.net_d(out)
    logs = m.discriminator_step(out, gt)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert logs["l_d_real"].item() == pytest.approx(0.5 * bce(c_r - c_f.mean(), torch.ones_like(c_r)).item(), rel=1e-5)
    assert logs["l_d_fake"].item() == pytest.approx(0.5 * bce(c_f - c_r.mean(), torch.zeros_like(c_f)).item(), rel=1e-5)


def test_ema_update_formula():
    from lightning_modules.ema import ema_update

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in a.parameters()]
    ema_update(a, b, 0.9)
    for p0, pa, pb in zip(before, a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, 0.9 * p0 + 0.1 * pb)


def test_cosine_restart_schedule_matches_basicsr_formula():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    s = CosineAnnealingRestartLR(opt, periods=[10, 10], restart_weights=[1, 0.5], eta_min=1e-7)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()

    def expected(t):
        idx, restart = (0, 0) if t <= 10 else (1, 10)
        w = [1, 0.5][idx]
        return 1e-7 + w * 0.5 * (2e-4 - 1e-7) * (1 + math.cos(math.pi * (t - restart) / 10))

    assert lrs == pytest.approx([expected(t) for t in range(20)], rel=1e-9)


# ---------------------------------------------------------------- end to end, with a real Trainer


def _one_image_dir(tmp_path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    # A smooth image: a tiny net can fit it, and bicubic is a fair baseline.
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 0.4 + 0.5
    img = (img * 255 + rng.normal(0, 2, img.shape)).clip(0, 255).astype(np.uint8)
    write_png(tmp_path / "img" / "a.png", img)
    return tmp_path / "img"


class _Recorder(Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        self.rows.append(
            {
                "iter": pl_module.iteration,
                "global_step": trainer.global_step,
                "stage": pl_module.stage_at(pl_module.iteration - 1)[0],
                "l_pix": float(m["train/l_pix"]) if "train/l_pix" in m else None,
            }
        )


def _tiny_cfg(tmp_path, data_dir, extra=()):
    return compose_cfg(
        tmp_path / "run",
        [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data_dir}]",
            f"data.val_dirs=[{data_dir}]",
            "data.use_hflip=false",
            "data.use_rot=false",
            "trainer.log_every_n_steps=1",
            *extra,
        ],
    )


@pytest.mark.slow
def test_train_switches_stage_at_the_configured_batch_and_writes_weights(tmp_path, monkeypatch):
    data = _one_image_dir(tmp_path)
    cfg = _tiny_cfg(tmp_path, data, ["model.psnr.iters=3", "model.gan.iters=2", "trainer.val_check_interval=5"])
    rec = _Recorder()
    from runtime.training import instantiate_callbacks as real_callbacks

    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), rec])
    result = train(cfg)
    assert [r["stage"] for r in rec.rows] == ["psnr"] * 3 + ["gan"] * 2
    assert [r["global_step"] for r in rec.rows] == [1, 2, 3, 5, 7]
    assert result["iteration"] == 5
    weights = Path(result["output_dir"]) / "weights"
    psnr_w = load_generator_state(weights / "net_g_psnr.pth")
    gan_w = load_generator_state(weights / "net_g_gan.pth")
    assert set(psnr_w) == set(gan_w)
    assert any(not torch.equal(psnr_w[k], gan_w[k]) for k in psnr_w)


@pytest.mark.slow
def test_tiny_overfit_lowers_l1(tmp_path, monkeypatch):
    data = _one_image_dir(tmp_path)
    cfg = _tiny_cfg(
        tmp_path,
        data,
        [
            "model.stages=[psnr]",
            "model.psnr.iters=60",
            "model.psnr.lr=2e-3",
            "trainer.val_check_interval=60",
            "data.batch_size=1",
        ],
    )
    rec = _Recorder()
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [rec])
    train(cfg)
    losses = [r["l_pix"] for r in rec.rows]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


class _StopAt(Callback):
    def __init__(self, iteration):
        self.iteration = iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == self.iteration:
            trainer.should_stop = True  # as a crash or pre-emption after a checkpoint would


@pytest.mark.slow
def test_resume_from_last_ckpt_continues_with_identical_state(tmp_path, monkeypatch):
    data = _one_image_dir(tmp_path)
    extra = ["model.psnr.iters=4", "model.gan.iters=3", "trainer.val_check_interval=2", "seed=3", "data.batch_size=1"]
    from runtime.training import instantiate_callbacks as real_callbacks

    # Reference: uninterrupted.
    full = train(_tiny_cfg(tmp_path / "full", data, extra))
    # Interrupted in the PSNR stage (after the checkpoint at iteration 2), then resumed across the switch.
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), _StopAt(2)])
    first = train(_tiny_cfg(tmp_path / "a", data, extra))
    assert first["iteration"] == 2
    last = Path(first["last_model_path"])
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 2
    assert not any(k.startswith("cri_perceptual.") for k in ckpt["state_dict"])  # VGG not stored
    monkeypatch.setattr("runtime.training.instantiate_callbacks", real_callbacks)
    resumed = train(_tiny_cfg(tmp_path / "b", data, [*extra, f"ckpt_path={last}"]))
    assert resumed["iteration"] == 7

    a = torch.load(full["last_model_path"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["last_model_path"], map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4 + 2 * 3
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], msg=k, rtol=1e-5, atol=1e-6)
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        for sa, sb in zip(oa["state"].values(), ob["state"].values()):
            torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=1e-5, atol=1e-7)
    assert [s["last_epoch"] for s in a["lr_schedulers"]] == [s["last_epoch"] for s in b["lr_schedulers"]]


@pytest.mark.slow
def test_evaluate_writes_the_documented_json(tmp_path):
    data = _one_image_dir(tmp_path, size=48)
    result = train(
        _tiny_cfg(tmp_path, data, ["model.psnr.iters=2", "model.gan.iters=1", "trainer.val_check_interval=3"])
    )
    out = tmp_path / "m.json"
    cfg = compose_cfg(
        tmp_path / "eval",
        [
            "model=esrgan",
            f"ckpt_path={result['best_model_path']}",
            f"data.test_dirs=[{data},{data}]",
            f"metrics_file={out}",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    saved = json.loads(out.read_text())
    assert saved == rows and list(saved) == ["img"]  # one row per folder name
    assert set(saved["img"]) == {"images", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    assert saved["img"]["images"] == 1 and 5 < saved["img"]["psnr_y"] < 60


def test_evaluate_bicubic_reproduces_the_set5_baseline(tmp_path):
    from conftest import shared_data

    set5 = shared_data("sr", "val", "Set5")
    cfg = compose_cfg(tmp_path, ["model=bicubic", f"data.test_dirs=[{set5}]", "data.gt_mod=4"], config_name="eval")
    row = evaluate(cfg)["Set5"]
    assert row["images"] == 5
    assert row["psnr_y"] == pytest.approx(28.4314, abs=0.002)
    assert row["ssim_y"] == pytest.approx(0.8113, abs=0.0005)
    # The default crops HR to a multiple of 12, as BasicSR's GTmod12 folders (generate_bicubic_img.m): 28.3973 / 0.8115.
    row = evaluate(compose_cfg(tmp_path, ["model=bicubic", f"data.test_dirs=[{set5}]"], config_name="eval"))["Set5"]
    assert row["psnr_y"] == pytest.approx(28.3973, abs=0.002)
    assert row["ssim_y"] == pytest.approx(0.8115, abs=0.0005)


def test_evaluate_errors(tmp_path):
    cfg = compose_cfg(tmp_path, ["model=esrgan", "data.test_dirs=[/nowhere]"], config_name="eval")
    with pytest.raises(ValueError, match="ckpt_path"):
        evaluate(cfg)
    cfg = compose_cfg(tmp_path, ["model=esrgan", "ckpt_path=/no/such.ckpt"], config_name="eval")
    with pytest.raises(FileNotFoundError, match="/no/such.ckpt"):
        evaluate(cfg)


def test_each_stage_may_set_its_own_ema_decay():
    torch.manual_seed(0)
    m = ESRGANModule(**{**TINY_MODEL, "ema_decay": 0.9, "gan": {**TINY_MODEL["gan"], "ema_decay": 0.5}})
    _Harness(m)
    m.log_dict = lambda *a, **k: None
    batch = {"lq": torch.rand(2, 3, 8, 8), "gt": torch.rand(2, 3, 32, 32)}

    def check(expected_decay):
        ema0 = [p.detach().clone() for p in m.net_g_ema.parameters()]
        m.training_step(batch, 0)
        for e0, e, p in zip(ema0, m.net_g_ema.parameters(), m.net_g.parameters()):
            torch.testing.assert_close(e, expected_decay * e0 + (1 - expected_decay) * p)

    check(0.9)  # psnr stage: model.ema_decay
    m.iteration = 3
    m.enter_gan_stage = lambda: None  # no trainer here to write the weights file
    check(0.5)  # gan stage: model.gan.ema_decay


# ---------------------------------------------------------------- stage switch and EMA (issue 10, items 1, 2, 5)
def _module_at_switch(tmp_path, **overrides):
    """A module after 3 PSNR batches, G and EMA made to differ, just before the switch."""
    torch.manual_seed(0)
    m = ESRGANModule(**{**TINY_MODEL, "ema_decay": 0.5, **overrides})
    _Harness(m)
    m._trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path))  # enter_gan_stage writes here
    m.log_dict = lambda *a, **k: None
    batch = {"lq": torch.rand(2, 3, 8, 8), "gt": torch.rand(2, 3, 32, 32)}
    for _ in range(3):
        m.training_step(batch, 0)
    g = {k: v.clone() for k, v in m.net_g.state_dict().items()}
    ema = {k: v.clone() for k, v in m.net_g_ema.state_dict().items()}
    assert any(not torch.equal(g[k], ema[k]) for k in g)
    return m, g, ema, batch


def test_switch_keeps_raw_g_and_ema_by_default_and_saves_both(tmp_path):
    m, g, ema, batch = _module_at_switch(tmp_path)
    m.enter_gan_stage()
    for k in g:  # BasicSR: net_g <- params, net_g_ema <- params_ema: both continue
        assert torch.equal(m.net_g.state_dict()[k], g[k]) and torch.equal(m.net_g_ema.state_dict()[k], ema[k])
    saved = torch.load(tmp_path / "weights" / "net_g_psnr.pth", weights_only=True)
    for k in g:  # raw weights in params, the EMA in params_ema
        assert torch.equal(saved["params"][k], g[k]) and torch.equal(saved["params_ema"][k], ema[k])


def test_switch_can_restart_g_from_the_ema(tmp_path):
    m, g, ema, _ = _module_at_switch(tmp_path, param_key_g="params_ema")
    m.enter_gan_stage()
    for k in g:
        assert torch.equal(m.net_g.state_dict()[k], ema[k]) and torch.equal(m.net_g_ema.state_dict()[k], ema[k])
    saved = torch.load(tmp_path / "weights" / "net_g_psnr.pth", weights_only=True)
    assert all(torch.equal(saved["params"][k], g[k]) for k in g)  # the file keeps stage 1's raw G all the same
    with pytest.raises(ValueError, match="param_key_g"):
        ESRGANModule(**{**TINY_MODEL, "param_key_g": "ema"})


@pytest.mark.parametrize("param_key_g", ["params", "params_ema"])
def test_init_weights_loads_params_into_g_and_params_ema_into_the_ema(tmp_path, param_key_g):
    m, g, ema, _ = _module_at_switch(tmp_path)
    m.enter_gan_stage()
    path = tmp_path / "weights" / "net_g_psnr.pth"
    n = ESRGANModule(**{**TINY_MODEL, "stages": ["gan"], "init_weights": str(path), "param_key_g": param_key_g})
    want_g = g if param_key_g == "params" else ema
    for k in g:
        assert torch.equal(n.net_g.state_dict()[k], want_g[k]) and torch.equal(n.net_g_ema.state_dict()[k], ema[k])
    # A bare state dict (xinntao-style file) fills both.
    torch.save(g, tmp_path / "bare.pth")
    n = ESRGANModule(**{**TINY_MODEL, "stages": ["gan"], "init_weights": str(tmp_path / "bare.pth")})
    assert all(torch.equal(n.net_g_ema.state_dict()[k], g[k]) for k in g)


def test_ema_decay_zero_means_no_ema():
    torch.manual_seed(0)
    m = ESRGANModule(**{**TINY_MODEL, "ema_decay": 0.999, "psnr": {**TINY_MODEL["psnr"], "ema_decay": 0}})
    _Harness(m)
    m.log_dict = lambda *a, **k: None
    m.training_step({"lq": torch.rand(2, 3, 8, 8), "gt": torch.rand(2, 3, 32, 32)}, 0)
    for e, p in zip(m.net_g_ema.parameters(), m.net_g.parameters()):
        assert torch.equal(e, p)  # 0 is not "unset": it must not fall back to model.ema_decay
    assert m.stage_ema_decay("psnr") == 0.0 and m.stage_ema_decay("gan") == 0.999
    m0 = ESRGANModule(**{**TINY_MODEL, "ema_decay": 0})
    assert m0.stage_ema_decay("gan") == 0.0
    with pytest.raises(ValueError, match="model.gan.ema_decay"):
        ESRGANModule(**{**TINY_MODEL, "gan": {**TINY_MODEL["gan"], "ema_decay": 1.0}})


def test_init_weights_from_a_ckpt_reads_net_g_or_net_g_ema(tmp_path):
    m, g, ema, _ = _module_at_switch(tmp_path)
    sd = {**{f"net_g.{k}": v for k, v in g.items()}, **{f"net_g_ema.{k}": v for k, v in ema.items()}}
    torch.save({"state_dict": sd}, tmp_path / "x.ckpt")
    for key, want in (("params", g), ("params_ema", ema)):
        got = load_generator_state(tmp_path / "x.ckpt", prefer=key)
        assert all(torch.equal(got[k], want[k]) for k in g), key
    n = ESRGANModule(**{**TINY_MODEL, "stages": ["gan"], "init_weights": str(tmp_path / "x.ckpt")})
    assert all(torch.equal(n.net_g.state_dict()[k], g[k]) for k in g)
    assert all(torch.equal(n.net_g_ema.state_dict()[k], ema[k]) for k in g)


# ---------------------------------------------------------------- per-stage selection, test_after_train (items 6, 7)
class _ValRecorder(Callback):
    def __init__(self):
        self.rows = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            m = trainer.callback_metrics
            self.rows.append(
                {
                    "iter": pl_module.iteration,
                    "stage": pl_module.stage_at(pl_module.iteration - 1)[0],
                    "psnr_y": float(m["val/psnr_y"]),
                    "lpips": float(m["val/lpips"]) if "val/lpips" in m else None,
                }
            )


def _staged_run(tmp_path, monkeypatch, extra=(), size=32):
    data = _one_image_dir(tmp_path, size)
    rec = _ValRecorder()
    from runtime.training import instantiate_callbacks as real_callbacks

    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real_callbacks(c), rec])
    cfg = _tiny_cfg(
        tmp_path,
        data,
        [
            "model.psnr.iters=3",
            "model.gan.iters=3",
            "trainer.val_check_interval=1",
            "model.psnr.lr=1e-3",
            "test_after_train=true",
            *extra,
        ],
    )
    return train(cfg), rec.rows


@pytest.mark.slow
def test_checkpoints_are_selected_per_stage_and_tested_after_training(tmp_path, monkeypatch):
    result, rows = _staged_run(tmp_path, monkeypatch)
    assert [r["stage"] for r in rows] == ["psnr"] * 3 + ["gan"] * 3
    sr = result["stage_results"]
    assert list(sr) == ["psnr", "gan"] and result["result_stage"] == "gan"
    best_psnr = max(rows[:3], key=lambda r: r["psnr_y"])
    assert sr["psnr"]["monitor"] == "val/psnr_y" and sr["psnr"]["score"] == pytest.approx(best_psnr["psnr_y"])
    assert Path(sr["psnr"]["path"]).name == f"psnr_best_iter{best_psnr['iter']:07d}.ckpt"
    # No LPIPS: the GAN stage's result is its latest state, never a PSNR-stage file.
    assert sr["gan"]["monitor"] is None and Path(sr["gan"]["path"]).name == "gan_latest_iter0000006.ckpt"
    assert result["best_model_path"] == sr["gan"]["path"]
    files = sorted(p.name for p in (Path(result["output_dir"]) / "checkpoints").iterdir())
    assert files == sorted([Path(sr["psnr"]["path"]).name, "gan_latest_iter0000006.ckpt", "last.ckpt"])
    saved = json.loads((Path(result["output_dir"]) / "result.json").read_text())
    assert saved["stage_results"] == sr and saved["result_stage"] == "gan"
    # test_after_train: each stage's checkpoint on data.test_dirs (here the validation image).
    test = saved["test"]
    assert set(test) == {"psnr", "gan"} and test["gan"]["checkpoint"] == sr["gan"]["path"]
    assert test["psnr"]["test/psnr/psnr_y"] == pytest.approx(best_psnr["psnr_y"], abs=1e-6)
    assert test["gan"]["test/gan/img/psnr_y"] == pytest.approx(rows[-1]["psnr_y"], abs=1e-6)


@pytest.mark.slow
def test_gan_stage_is_selected_by_lpips_when_enabled(tmp_path, monkeypatch):
    from test_evaluate import _random_alexnet_file

    alex = _random_alexnet_file(tmp_path / "alex.pth")
    result, rows = _staged_run(
        tmp_path, monkeypatch, ["model.val_lpips.enabled=true", f"model.val_lpips.backbone_weights={alex}"], size=80
    )
    gan_rows = rows[3:]
    best = min(gan_rows, key=lambda r: r["lpips"])
    sr = result["stage_results"]["gan"]
    assert sr["monitor"] == "val/lpips" and sr["mode"] == "min" and sr["score"] == pytest.approx(best["lpips"])
    assert Path(sr["path"]).name == f"gan_best_iter{best['iter']:07d}.ckpt"
    assert result["stage_results"]["psnr"]["monitor"] == "val/psnr_y"
    ckpt = torch.load(sr["path"], map_location="cpu", weights_only=True)
    assert not any(k.startswith("val_lpips.") for k in ckpt["state_dict"])  # rebuilt from its own weights
    assert "test/gan/lpips" in result["test"]["gan"]
    assert result["direction"] == "maximize"  # of the objective, model.monitor (PSNR-Y), not of the LPIPS stage


def test_test_after_train_needs_a_test_loop(tmp_path):
    from pytorch_lightning import LightningDataModule

    from datamodules.sr_datamodule import SRDataModule
    from runtime.results import check_test_after_train

    cfg = compose_cfg(tmp_path, ["test_after_train=true"])
    m = ESRGANModule(**TINY_MODEL)
    check_test_after_train(cfg, m, SRDataModule(train_dirs=[tmp_path], val_dirs=[tmp_path]))  # fine
    with pytest.raises(ValueError, match="test_after_train=true"):
        check_test_after_train(cfg, m, LightningDataModule())  # no test_dataloader
