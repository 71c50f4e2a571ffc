"""The fast path (lightning_modules/speed.py, model.speed): options, checkpoint keys with torch.compile and
channels_last, fused Adam, and no host synchronisation inside a training step.

torch.compile runs with the ``aot_eager`` backend here (Dynamo + AOTAutograd, the parts that meet manual
optimisation, frozen networks and state dicts; no C++ code generation, which would take minutes on these
CPUs).  The inductor backend is what device_check.py measures on a GPU.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg, write_png
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_modules import speed as speed_lib
from lightning_modules.esrgan_module import ESRGANModule
from lightning_modules.scfegan_module import SCFEGANModule
from runtime.training import train

ESRGAN = dict(
    generator={"_target_": "archs.rrdbnet.RRDBNet", "num_feat": 8, "num_block": 2, "num_grow_ch": 4, "scale": 4},
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
SCFEGAN = dict(
    generator={"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
    discriminator={"_target_": "archs.sn_patch_discriminator.SNPatchDiscriminator", "cnum": 4},
    loss={"alpha": 6.0, "sigma": 0.05, "gamma": 120.0, "upsilon": 0.1, "beta": 0.001, "theta": 10.0, "epsilon": 0.001},
    optim={"lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.5, 0.999], "d_steps": 1},
    iters=10,
    vgg_weights="random",
)
FAST = {"channels_last": True, "compile": True, "compile_backend": "aot_eager"}


def test_speed_options_defaults_and_errors():
    assert speed_lib.speed_options(None) == speed_lib.DEFAULTS
    assert speed_lib.speed_options({"compile": "auto"})["compile"] == "auto"
    with pytest.raises(ValueError, match=r"model.speed: unknown keys \['compiled'\]"):
        speed_lib.speed_options({"compiled": True})
    with pytest.raises(ValueError, match="model.speed.channels_last must be true, false or auto, got 'yes'"):
        speed_lib.speed_options({"channels_last": "yes"})
    assert speed_lib.enabled("auto", "cuda:0") and not speed_lib.enabled("auto", "cpu")
    assert not speed_lib.enabled("auto", None) and speed_lib.enabled(True, "cpu")


@pytest.mark.parametrize("fused", [True, False])
def test_fused_adam_is_passed_to_every_optimizer(fused):
    for module in (
        ESRGANModule(**ESRGAN, speed={"fused_adam": fused}),
        SCFEGANModule(**SCFEGAN, speed={"fused_adam": fused}),
    ):
        opts = module.configure_optimizers()
        opts = opts[0] if isinstance(opts, tuple) else opts
        assert len(opts) >= 2
        for opt in opts:
            assert isinstance(opt, torch.optim.Adam)
            assert bool(opt.defaults["fused"]) is fused


def test_compile_and_channels_last_keep_the_checkpoint_keys_and_values():
    torch.manual_seed(0)
    plain = ESRGANModule(**ESRGAN)
    torch.manual_seed(0)
    fast = ESRGANModule(**ESRGAN, speed=FAST)
    fast.apply_speed("cpu")
    # compiled in place (nn.Module.compile), regions for RRDBNet: no torch.compile wrapper, no `_orig_mod.`
    assert speed_lib.is_compiled(fast.net_g) and speed_lib.is_compiled(fast.net_d)
    assert all(speed_lib.is_compiled(b) for b in fast.net_g.body) and not speed_lib.is_compiled(fast.net_g_ema)
    assert not speed_lib.is_compiled(plain.net_g)
    assert fast.net_g.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in k for k in fast.state_dict())
    for k, v in plain.state_dict().items():
        assert torch.equal(fast.state_dict()[k], v), k
    # a compiled, channels_last module's weights load into a plain one and back, strictly
    plain.load_state_dict(fast.state_dict())
    fast.load_state_dict(plain.state_dict())
    # and it computes the same
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast.net_g(x), plain.net_g(x), atol=1e-5, rtol=1e-5)


def test_scfegan_compiles_g_not_d():
    m = SCFEGANModule(**SCFEGAN, speed=FAST)
    keys = list(m.state_dict())
    m.apply_speed("cpu")
    assert speed_lib.is_compiled(m.net_g) and speed_lib.is_compiled(m.cri_vgg.vgg)
    assert not speed_lib.is_compiled(m.net_d)  # gradient penalty: double backward through D
    assert list(m.state_dict()) == keys


def test_auto_switches_stay_off_on_cpu():
    m = ESRGANModule(**ESRGAN, speed={"channels_last": "auto", "compile": "auto"})
    m.apply_speed("cpu")
    assert not speed_lib.is_compiled(m.net_g)
    assert not m.net_g.conv_first.weight.is_contiguous(memory_format=torch.channels_last)


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a tensor's value (``.item()``, ``float()``,
    ``bool()``: ``aten._local_scalar_dense``) and making a tensor from Python data (``torch.tensor(x)``:
    ``aten.lift_fresh``; on a GPU a blocking host-to-device copy).  On this CPU neither waits, but the same
    calls in the same places would on a GPU."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.lift_fresh.default):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _one_image_dir(tmp_path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    write_png(tmp_path / "img" / "a.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return tmp_path / "img"


def _count_syncs_per_step(monkeypatch, counts, logged):
    orig_step = ESRGANModule.training_step
    orig_log = ESRGANModule.log_dict

    def step(self, batch, batch_idx):
        with HostSyncCounter() as c:
            orig_step(self, batch, batch_idx)
        counts.append((self.iteration, list(c.ops)))

    def log_dict(self, metrics, *a, **k):
        logged.append((self.iteration, sorted(metrics)))
        return orig_log(self, metrics, *a, **k)

    monkeypatch.setattr(ESRGANModule, "training_step", step)
    monkeypatch.setattr(ESRGANModule, "log_dict", log_dict)


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True])
def test_training_step_has_no_host_sync_between_logging_steps(tmp_path, monkeypatch, compiled):
    """Real Trainer, both ESRGAN stages: no .item()/float()/torch.tensor(number) in the step except on the
    logging steps (every trainer.log_every_n_steps batches), where the metrics are sent (as before)."""
    data = _one_image_dir(tmp_path)
    counts, logged = [], []
    _count_syncs_per_step(monkeypatch, counts, logged)
    extra = (
        ["model.speed.compile=true", "model.speed.compile_backend=aot_eager", "model.speed.channels_last=true"]
        if compiled
        else []
    )
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "model.psnr.iters=4",
            "model.gan.iters=4",
            "trainer.log_every_n_steps=3",
            "trainer.val_check_interval=100",
            *extra,
        ],
    )
    result = train(cfg)
    assert result["iteration"] == 8
    log_iters = [it for it, _ in logged]
    assert log_iters == [3, 6, 8]  # every 3rd batch and the last one (Lightning logs when training stops)
    assert "train/lr_g" in logged[0][1] and "train/l_d_real" in logged[1][1] and "iter" in logged[0][1]
    for it, ops in counts:
        if it not in log_iters:
            assert ops == [], f"batch {it}: host syncs {ops}"
    assert any(ops for it, ops in counts if it in log_iters)  # the counter does see the logging steps' ones


@pytest.mark.slow
def test_logged_rows_are_those_of_every_nth_batch(tmp_path):
    """CSV logger: the train rows are written at the same batches as Lightning's log_every_n_steps schedule."""
    data = _one_image_dir(tmp_path)
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "model.psnr.iters=5",
            "model.gan.iters=0",
            "model.stages=[psnr]",
            "trainer.log_every_n_steps=2",
            "trainer.val_check_interval=100",
            "logger=csv",
        ],
    )
    result = train(cfg)
    import csv

    files = list(Path(result["output_dir"]).rglob("metrics.csv"))
    assert files
    rows = [r for r in csv.DictReader(open(files[0])) if r.get("train/l_pix")]
    assert [int(float(r["iter"])) for r in rows] == [2, 4, 5]
    assert all(float(r["train/lr_g"]) > 0 for r in rows)  # Python numbers (the learning rate) still logged


@pytest.mark.slow
def test_scfegan_training_step_has_no_host_sync():
    """SC-FEGAN's D step (gradient penalty included) and G step, logging stubbed: no value read back."""
    torch.manual_seed(0)
    m = SCFEGANModule(**SCFEGAN)
    opts = m.configure_optimizers()
    m._opt = lambda name: (opts[m._opt_index[name]], None)
    m.manual_backward = lambda loss: loss.backward()
    logged = []
    m.log_dict = lambda metrics, *a, **k: logged.append(metrics)
    m.logs_this_step = lambda: False
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 32:96, 40:100] = 1
    batch = {
        "image": torch.rand(2, 3, 128, 128) * 2 - 1,
        "mask": mask,
        "sketch": torch.zeros(2, 1, 128, 128),
        "color": torch.zeros(2, 3, 128, 128),
        "noise": torch.randn(2, 1, 128, 128) * mask,
    }
    m.training_step(batch, 0)  # first step outside the counter: lazy initialisation (optimizer state)
    with HostSyncCounter() as c:
        m.training_step(batch, 1)
    assert c.ops == [] and logged == [] and m.iteration == 2
