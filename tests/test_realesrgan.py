"""Real-ESRGAN: U-Net SN discriminator, the degradation data module, and the experiment=realesrgan recipe.

The perceptual VGG is randomly initialised (pretrained weights cannot be downloaded on the test machines).
"""

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png
from hydra.utils import instantiate

from archs.unet_discriminator import UNetDiscriminatorSN
from runtime.training import train


def test_unet_discriminator_parameter_count_shape_and_spectral_norm():
    d = UNetDiscriminatorSN(3, 64, skip_connection=True)
    # From Real-ESRGAN's layer table: conv0 3*64*9+64, conv1..3 (64*128 + 128*256 + 256*512)*16,
    # conv4..8 (512*256 + 256*128 + 128*64 + 64*64 + 64*64)*9, conv9 64*9+1.
    expected = (
        (3 * 64 * 9 + 64)
        + (64 * 128 + 128 * 256 + 256 * 512) * 16
        + (512 * 256 + 256 * 128 + 128 * 64 + 64 * 64 + 64 * 64) * 9
        + (64 * 9 + 1)
    )
    assert expected == 4_376_897
    assert sum(p.numel() for p in d.parameters()) == expected
    keys = d.state_dict().keys()
    assert {"conv1.weight_orig", "conv1.weight_u", "conv1.weight_v"} <= set(keys)  # Real-ESRGAN's checkpoint keys
    assert "conv0.weight" in keys and "conv9.bias" in keys and "conv0.weight_orig" not in keys
    small = UNetDiscriminatorSN(3, 8)
    out = small(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 1, 32, 48)  # a realness logit per pixel
    with pytest.raises(ValueError, match="multiples of 8"):
        small(torch.rand(1, 3, 30, 32))


def test_spectral_norm_bounds_the_layer_gain():
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(3, 8).train()
    for _ in range(30):  # power iterations converge in training-mode forwards
        d(torch.rand(1, 3, 16, 16))
    w = d.conv2.weight.detach().reshape(d.conv2.weight.shape[0], -1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_skip_connections_change_the_output():
    torch.manual_seed(0)
    a = UNetDiscriminatorSN(3, 8, skip_connection=True).eval()
    b = UNetDiscriminatorSN(3, 8, skip_connection=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))


def _images(root, n=6, size=(40, 44), seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3)).astype(np.float32)
        img = np.kron(small, np.ones((4, 4, 1)))[: size[0], : size[1]]  # blocky content, not pure noise
        write_png(root / f"{i:03d}.png", img.astype(np.uint8))
    return root


TINY = [
    "experiment=realesrgan",
    "logger=none",
    "trainer=cpu",
    "model.generator.num_feat=8",
    "model.generator.num_block=1",
    "model.generator.num_grow_ch=4",
    "model.discriminator.num_feat=4",
    "model.perceptual.weights=random",
    "model.psnr.iters=2",
    "model.gan.iters=2",
    "data.gt_size=16",
    "data.crop_pad_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.dataset_enlarge_ratio=4",
    "data.degradation.pool_size=4",
    "data.pin_memory=false",
    "trainer.val_check_interval=4",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "~callbacks.rich_progress_bar",
]


def _tiny_cfg(tmp_path, extra=()):
    train_dir = _images(tmp_path / "train")
    val_dir = _images(tmp_path / "val" / "Set5", n=2, size=(24, 28), seed=1)
    return compose_cfg(tmp_path, [*TINY, f"data.train_dirs=[{train_dir}]", f"data.val_dirs=[{val_dir}]", *extra])


def test_experiment_composes_with_the_published_numbers(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=realesrgan", "model.perceptual.weights=random"])
    m, d = cfg.model, cfg.data
    assert m._target_.endswith("RealESRGANModule") and d._target_.endswith("RealESRGANDataModule")
    assert dict(m.perceptual.layer_weights) == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1.0,
        "conv4_4": 1.0,
        "conv5_4": 1.0,
    }
    assert (m.gan.pixel_weight, m.gan.perceptual_weight, m.gan.gan_weight, m.gan.gan_type) == (1.0, 1.0, 0.1, "vanilla")
    assert (m.gan.lr_g, m.gan.lr_d, m.ema_decay, m.psnr.lr) == (1e-4, 1e-4, 0.999, 2e-4)
    assert (m.psnr.iters, m.gan.iters) == (1_000_000, 400_000)
    assert m.param_key_g == "params_ema"  # both ymls: G starts from the previous model's EMA
    assert (d.gt_size, d.crop_pad_size, d.batch_size, d.use_rot, d.degradation.pool_size) == (256, 400, 12, False, 180)
    assert list(d.degradation.first.resize_prob) == [0.2, 0.7, 0.1] and d.degradation.second.blur_prob == 0.8
    model = instantiate(cfg.model, _recursive_=False)
    assert sum(p.numel() for p in model.net_d.parameters()) == 4_376_897
    assert sum(p.numel() for p in model.net_g.parameters()) == 16_697_987


def test_datamodule_degrades_crops_aligned_and_pools(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["gt"].shape == (3, 32, 32) and item["kernel1"].shape == (21, 21)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert (
        out["gt"].shape == (2, 3, 16, 16) and out["lq"].shape == (2, 3, 4, 4) and out["gt_usm"].shape == (2, 3, 16, 16)
    )
    assert "kernel1" not in out
    assert torch.equal(out["lq"], (out["lq"] * 255).round() / 255)
    # the GT crop is a crop of the patch at a position on the LR grid
    s = 4
    for i in range(2):
        found = any(
            torch.equal(out["gt"][i], batch["gt"][i, :, t * s : t * s + 16, l * s : l * s + 16])
            for t in range(5)
            for l in range(5)
        )
        assert found
    # pool of 4 = 2 batches: the first two batches train as they are, the third comes from the pool
    dm2 = instantiate(cfg.data)
    dm2.setup("fit")
    seen = []
    for _, b in zip(range(3), loader):
        seen.append(b["gt"].clone())
        o = dm2.on_after_batch_transfer(dict(b), 0)
    pooled = torch.cat([x for x in seen[:2]])
    # each GT handed out in batch 3 is a crop of one of the pooled patches (not of batch 3's own)
    for i in range(2):
        assert any(
            torch.equal(o["gt"][i], p[:, t * s : t * s + 16, l * s : l * s + 16])
            for p in pooled
            for t in range(5)
            for l in range(5)
        )


def test_degradation_is_reproducible_per_seed_and_resumes_from_its_state(tmp_path, monkeypatch):
    cfg = _tiny_cfg(tmp_path, ["data.degradation.pool_size=0"])
    batch = {
        "gt": torch.rand(2, 3, 32, 32),
        **{
            k: torch.from_numpy(np.stack([np.pad(np.ones((1, 1), np.float32), 10)] * 2))
            for k in ("kernel1", "kernel2", "sinc_kernel")
        },
    }

    def run(dm, n=3):
        return [dm.on_after_batch_transfer(dict(batch), 0)["lq"] for _ in range(n)]

    a, b = instantiate(cfg.data), instantiate(cfg.data)
    ra, rb = run(a), run(b)
    assert all(torch.equal(x, y) for x, y in zip(ra, rb))
    assert not torch.equal(ra[0], ra[1])  # each batch draws anew
    other = instantiate(compose_cfg(tmp_path, [*TINY, "data.degradation.pool_size=0", "seed=5"]).data)
    assert not torch.equal(run(other, 1)[0], ra[0])
    # DDP ranks degrade differently (seed + rank)
    monkeypatch.setenv("RANK", "1")
    assert not torch.equal(run(instantiate(cfg.data), 1)[0], ra[0])
    monkeypatch.setenv("RANK", "0")
    # generator state round trip (what a checkpoint stores)
    c = instantiate(cfg.data)
    run(c, 1)
    state = c.state_dict()
    d = instantiate(cfg.data)
    d.load_state_dict(state)
    assert torch.equal(run(d, 1)[0], ra[1])
    # other ranks do not take over rank 0's states on resume
    monkeypatch.setenv("RANK", "1")
    e = instantiate(cfg.data)
    e.load_state_dict(state)
    assert not torch.equal(run(e, 1)[0], ra[1])


def test_validation_degradation_is_the_same_every_time(tmp_path):
    cfg = _tiny_cfg(tmp_path, ["data.val_degradation=true"])
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()[0]))
    a = dm.on_after_batch_transfer(dict(batch), 0)["lq"]
    b = dm.on_after_batch_transfer(dict(batch), 0)["lq"]
    assert a.shape == (1, 3, 6, 6) and torch.equal(a, b)  # 24x28 HR mod-cropped to data.gt_mod=12, LR /4
    bicubic = instantiate(_tiny_cfg(tmp_path).data)
    bicubic.setup("validate")
    assert not torch.equal(bicubic.on_after_batch_transfer(dict(batch), 0)["lq"], a)


class _Harness:
    def __init__(self, module):
        opts, scheds = module.configure_optimizers()
        module._opt = lambda name: (opts[module._opt_index[name]], scheds[module._opt_index[name]])
        module.manual_backward = lambda loss: loss.backward()


def test_vanilla_gan_steps_use_sharpened_targets_for_l1_and_plain_gt_for_d(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    torch.manual_seed(0)
    m = instantiate(cfg.model, _recursive_=False)
    _Harness(m)
    lq, gt = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    sharp = torch.rand(2, 3, 16, 16)
    _, got_gt, got_usm = m.training_pair({"lq": lq, "gt": gt, "gt_usm": sharp})
    assert got_usm is sharp and got_gt is gt
    torch.testing.assert_close(m.training_pair({"lq": lq, "gt": gt})[2], m.usm(gt))  # computed when the data did not
    # D step: BCE(D(gt), 1) + BCE(D(out), 0) on the plain GT
    out = m.net_g(lq)
    d_before = [p.detach().clone() for p in m.net_d.parameters()]
    logs = m.discriminator_step(out, gt, sharp)
    assert any(not torch.equal(a, p) for a, p in zip(d_before, m.net_d.parameters()))
    m.net_d.eval()  # fixed spectral-norm estimate for the reference values below
    with torch.no_grad():
        real = m.net_d(gt)
    assert real.shape == (2, 1, 16, 16)
    # G step changes G only; the pixel loss is against the sharpened GT
    g_before = [p.detach().clone() for p in m.net_g.parameters()]
    d_before = [p.detach().clone() for p in m.net_d.parameters()]
    with torch.no_grad():
        expected_pix = torch.nn.functional.l1_loss(m.net_g(lq), sharp)
    out, logs = m.generator_step(lq, gt, gt_usm=sharp)
    assert logs["l_pix"].item() == pytest.approx(expected_pix.item(), rel=1e-6)
    assert all(torch.equal(a, p) for a, p in zip(d_before, m.net_d.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(g_before, m.net_g.parameters()))


@pytest.mark.slow
def test_realesrgan_experiment_trains_both_stages_on_tiny_sizes(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    result = train(cfg)
    assert result["status"] == "ok" and result["iteration"] == 4
    assert (tmp_path / "weights" / "net_g_psnr.pth").is_file() and (tmp_path / "weights" / "net_g_gan.pth").is_file()
    assert np.isfinite(result["metrics"]["val/psnr_y"])
    assert {"train/l_d_real", "train/l_g_gan", "train/l_percep"} <= set(result["metrics"])
    # the checkpoint keeps the degradation generators' states (resuming continues the same draws)
    ckpt = torch.load(result["last_model_path"], map_location="cpu", weights_only=True)
    state = ckpt["RealESRGANDataModule"]
    assert set(state) == {"cpu", "device", "device_type", "calls"} and state["device_type"] == "cpu"


def test_demo_data_option_composes_and_loads_the_shipped_images(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=realesrgan", "data=realesrgan_demo", "data.num_workers=0"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["gt"].shape == (3, 96, 96) and item["sinc_kernel"].shape == (21, 21)
    assert len(dm.train_set) == 39 * 50 and dm.val_names == ["Set5"]


@pytest.mark.slow
def test_realesrgan_ddp_two_processes(tmp_path):
    """`python train.py experiment=realesrgan trainer=ddp` on 2 CPU processes: the spectral-norm discriminator, G and
    EMA G end bit-identical on both ranks (SN's power-iteration buffers are broadcast like any buffer), and the ranks
    trained on different samples."""
    import json

    from test_ddp import DDP_CPU, _check, _replica_report, run_train

    train_dir = _images(tmp_path / "train", n=8)
    val_dir = _images(tmp_path / "val" / "Set5", n=2, size=(24, 28), seed=1)
    run_dir = tmp_path / "run"
    args = [a for a in TINY if a not in ("logger=none", "trainer=cpu")]
    proc = run_train(
        [
            *args,
            "logger=csv",
            *DDP_CPU,
            f"data.train_dirs=[{train_dir}]",
            f"data.val_dirs=[{val_dir}]",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    _check(proc)
    report = _replica_report(run_dir, ["net_g", "net_d", "net_g_ema"])
    r0, r1 = report["ranks"]
    assert set(r0["batches"][0]["gt"]).isdisjoint(r1["batches"][0]["gt"])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["iteration"] == 4
