"""DDP on CPU processes (gloo): both recipes for a few iterations, run as `python train.py ... trainer=ddp` (the real
launch path: Lightning re-runs the command line for rank 1), plus the multirun + DDP cases.

Checks: every rank ends with bit-identical G, D and EMA G (callbacks/ddp_consistency.py writes the fingerprints);
the ranks trained on different samples; the checkpoint loads into a fresh module and holds the ranks' weights; the
validation metrics of the DDP run equal a single-process evaluation of the same checkpoint on the same images (5
images on 2 ranks: Lightning's padding sampler would count one twice).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_cfg, write_png
from hydra.utils import instantiate
from pytorch_lightning import Trainer

pytestmark = pytest.mark.slow

SET5 = REPO / "data" / "demo" / "val" / "Set5"
DEMO_TRAIN = REPO / "data" / "demo" / "train"
TINY_ESRGAN_CLI = [
    "experiment=demo",
    "logger=csv",
    "model.generator.num_feat=8",
    "model.generator.num_block=1",
    "model.generator.num_grow_ch=4",
    "model.discriminator.num_feat=4",
    "model.perceptual.weights=random",
    "data.gt_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.dataset_enlarge_ratio=16",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "~callbacks.rich_progress_bar",
    "model.psnr.iters=2",
    "model.gan.iters=2",
    "trainer.val_check_interval=2",
    f"data.train_dirs=[{DEMO_TRAIN}]",
    f"data.val_dirs=[{SET5}]",
]
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def run_train(args, tmp_path, env=None, timeout=300):
    """`python train.py args` from the repository root; returns the CompletedProcess (output in .stdout)."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("LOCAL_RANK", None)
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=full_env,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-4000:]


def _face_dir(tmp_path: Path, n: int = 9) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128] / 128
    for i in range(n):
        img = np.stack([np.sin(3 * x + i), np.cos(4 * y - i), np.sin(2 * (x + y) + i)], -1) * 0.4 + 0.5
        write_png(
            tmp_path / "faces" / f"{i:03d}.png", (img * 255 + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        )
    return tmp_path / "faces"


def _replica_report(run_dir: Path, networks):
    report = json.loads((run_dir / "ddp_check.json").read_text())
    assert report["world_size"] == 2
    for net in networks:
        assert report["identical"][net], f"{net} differs between ranks"
    return report


def _single_process_validation(cfg, ckpt_path):
    """Validate the checkpoint in this process (1 device) on the same data: the reference values."""
    model = instantiate(cfg.model, _recursive_=False)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    assert not unexpected
    assert all(k.startswith(model.frozen_prefixes) for k in missing)  # only the frozen loss network is rebuilt
    model.on_load_checkpoint(ckpt)
    datamodule = instantiate(cfg.data)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (metrics,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    return model, metrics


def test_esrgan_ddp_two_processes(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train([*TINY_ESRGAN_CLI, *DDP_CPU, f"hydra.run.dir={run_dir}"], tmp_path)
    _check(proc)
    assert (run_dir / "train_ddp_process_1.log").exists()  # rank 1 was started by Lightning (re-run argv)

    report = _replica_report(run_dir, ["net_g", "net_d", "net_g_ema"])
    r0, r1 = report["ranks"]
    # Different samples per rank (HR crops of different images / positions).
    assert set(r0["batches"][0]["gt"]).isdisjoint(r1["batches"][0]["gt"])

    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["global_batch_size"] == 4  # batch_size is per device
    assert result["iteration"] == 4
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(tmp_path / "ref", [*TINY_ESRGAN_CLI, "logger=none"])
    model, metrics = _single_process_validation(cfg, ckpt_path)
    assert model.iteration == 4

    from callbacks.ddp_consistency import module_fingerprints

    fp = module_fingerprints(model)
    for net in ("net_g", "net_d", "net_g_ema"):
        assert fp[net] == r0["fingerprints"][net], f"checkpoint {net} is not the ranks' {net}"
    for key in ("val/psnr_y", "val/ssim_y", "val/psnr_rgb", "val/ssim_rgb"):
        assert result["metrics"][key] == pytest.approx(metrics[key], rel=1e-9, abs=1e-12), key
    # The validation grid covers the whole set (rank 0 validates images 0, 2, 4 only): the grid one process draws.
    import numpy as np
    from PIL import Image

    from ops.image_grid import labelled_grid

    rows = model.val_sample_rows["Set5"]
    assert len(rows) == 5
    expected = labelled_grid(rows, model.sample_labels).numpy()
    drawn = np.asarray(Image.open(run_dir / "samples" / "iter0000004_Set5.png"))
    assert drawn.shape == expected.shape
    assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 1  # uint8 rounding of equal floats


def test_scfegan_ddp_two_processes(tmp_path):
    from test_sweeps import informative_inception_file

    faces = _face_dir(tmp_path)
    inception = informative_inception_file(tmp_path / "inception.pth")
    args = [
        "experiment=scfegan_demo",
        "logger=csv",
        "model.vgg_weights=random",
        "model.generator.cnum=4",
        "model.discriminator.cnum=4",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.val_batch_size=1",
        f"data.image_dir={faces}",
        "data.num_val=5",
        "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar",
        "model.iters=2",
        "trainer.val_check_interval=2",
        # FID/KID over the whole set: each rank's Inception features gathered (5 images = min_images)
        "model.val_fid.enabled=true",
        f"model.val_fid.inception_weights={inception}",
        "model.val_fid.min_images=5",
    ]
    run_dir = tmp_path / "run"
    _check(run_train([*args, *DDP_CPU, f"hydra.run.dir={run_dir}"], tmp_path))

    report = _replica_report(run_dir, ["net_g", "net_d"])
    r0, r1 = report["ranks"]
    # DistributedSampler: disjoint dataset indices; masks come from (seed, index, epoch): different masks.
    assert len(r0["batches"]) == len(r1["batches"]) == 2
    for b0, b1 in zip(r0["batches"], r1["batches"]):  # the same step on both ranks
        assert b0["index"] and set(b0["index"]).isdisjoint(b1["index"])
        assert set(b0["mask"]).isdisjoint(b1["mask"])

    result = json.loads((run_dir / "result.json").read_text())
    cfg = compose_cfg(tmp_path / "ref", [*args, "logger=none"])
    model, metrics = _single_process_validation(cfg, run_dir / "checkpoints" / "last.ckpt")
    from callbacks.ddp_consistency import module_fingerprints

    assert module_fingerprints(model)["net_g"] == r0["fingerprints"]["net_g"]
    for key in ("val/psnr_mask", "val/l1_mask", "val/ssim", "val/psnr"):
        assert result["metrics"][key] == pytest.approx(metrics[key], rel=1e-9, abs=1e-12), key
    for key in ("val/fid", "val/kid"):  # the same 5 images' features, gathered in another order
        assert result["metrics"][key] == pytest.approx(metrics[key], rel=1e-5), key


def test_multirun_with_ddp_is_stopped_before_any_job(tmp_path):
    """-m with DDP that Lightning would launch by re-running argv: an error up front, nothing started."""
    sweep_dir = tmp_path / "sweep"
    proc = run_train(
        ["-m", *TINY_ESRGAN_CLI, *DDP_CPU, "model.gan.gan_weight=1e-3,5e-3", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "re-running this command line" in proc.stdout and "ddp_gan_spawn" in proc.stdout
    assert "submitit_slurm_ddp" in proc.stdout
    assert not sweep_dir.exists()  # no job folder, no second sweep folder from a re-run child
    assert "Launching 2 jobs" not in proc.stdout and "MEMBER: 2/2" not in proc.stdout


def test_multirun_with_spawned_ddp_runs_each_job_once(tmp_path):
    """The local alternative the error names: ddp_gan_spawn inside multirun runs the job once, on 2 processes."""
    sweep_dir = tmp_path / "sweep"
    proc = run_train(
        [
            "-m",
            *TINY_ESRGAN_CLI,
            *DDP_CPU,
            "trainer.strategy=ddp_gan_spawn",
            "model.psnr.iters=1",
            "model.gan.iters=1",
            "model.gan.gan_weight=5e-3",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    _check(proc)
    assert proc.stdout.count("Launching 1 jobs locally") == 1
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0"]
    _replica_report(sweep_dir / "0", ["net_g", "net_d", "net_g_ema"])
    result = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert result["world_size"] == 2 and result["iteration"] == 2
    # Per-stage selection reaches result.json from the spawned processes' checkpoints (one validation, at the end):
    # the GAN stage without LPIPS is its latest state, with no score.
    assert list(result["stage_results"]) == ["gan"] and result["result_stage"] == "gan"
    assert result["best_model_path"].endswith("gan_latest_iter0000002.ckpt") and result["best_score"] is None
    assert (sweep_dir / "summary.csv").is_file()


def test_eval_sampler_shards_without_padding():
    from datamodules.samplers import EvalDistributedSampler, KeepFlagDataset

    data = [{"x": torch.tensor(i)} for i in range(5)]
    shards = [list(EvalDistributedSampler(data, 2, r)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3]]  # each once; Lightning's DistributedSampler: [0, 2, 4], [1, 3, 0]
    # More ranks than images: an empty shard validates a placeholder that the metrics skip.
    tiny = data[:1]
    shard = list(EvalDistributedSampler(tiny, 2, 1))
    assert shard == [1]
    item = KeepFlagDataset(tiny)[shard[0]]
    assert not bool(item["keep"]) and int(item["x"]) == 0
    assert bool(KeepFlagDataset(tiny)[0]["keep"])


def test_strategy_auto_becomes_ddp_gan_for_several_devices(tmp_path):
    import runtime.launch as train_mod

    cfg = compose_cfg(tmp_path, ["experiment=demo", "trainer.accelerator=cpu", "trainer.devices=2"])
    assert train_mod.resolve_trainer_overrides(cfg) == {"strategy": "ddp_gan"}
    cfg = compose_cfg(tmp_path, ["experiment=demo"])
    assert train_mod.resolve_trainer_overrides(cfg) == {}
    cfg = compose_cfg(tmp_path, ["experiment=demo", "trainer=ddp", "trainer.accelerator=cpu"])
    assert cfg.trainer.strategy == "ddp_gan" and cfg.trainer.precision == "32-true"  # bf16 only on capable GPUs
    from runtime.resolvers import bf16_if_supported

    assert bf16_if_supported("cpu") == "32-true"
    with pytest.MonkeyPatch.context() as mp:  # a GPU without / with native bf16 (V100 / A100)
        mp.setattr(torch.cuda, "is_available", lambda: True)
        mp.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
        assert bf16_if_supported("gpu") == "32-true"
        mp.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        assert bf16_if_supported("gpu") == bf16_if_supported("auto") == "bf16-mixed"
        assert bf16_if_supported("cpu") == "32-true"
    with pytest.raises(ValueError, match="sync_batchnorm"):
        train_mod.check_config(
            compose_cfg(
                tmp_path, ["experiment=demo", "trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"]
            )
        )


def test_scfegan_module_pickles_for_spawned_processes():
    """ddp_gan_spawn pickles the module; spectral-norm parametrizations only serialise through state_dict()."""
    import pickle

    from test_scfegan_module import TINY

    from lightning_modules.scfegan_module import SCFEGANModule

    torch.manual_seed(0)
    m = SCFEGANModule(**TINY)
    m.iteration = 7
    m2 = pickle.loads(pickle.dumps(m))
    assert type(m2) is SCFEGANModule and m2.iteration == 7
    a, b = m.state_dict(), m2.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # incl. the power-iteration u, v


def test_group_sigterm_under_ddp_with_workers_saves_and_exits_143(tmp_path):
    # SLURM / `timeout` signal every process of the group: both ranks and their DataLoader workers get SIGTERM.
    import signal
    import time

    run_dir = tmp_path / "run"
    args = [
        *[a for a in TINY_ESRGAN_CLI if not a.startswith(("model.psnr.iters", "data.num_workers"))],
        *DDP_CPU,
        "model.stages=[psnr]",
        "model.psnr.iters=100000",
        "data.num_workers=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while not last.exists():  # the first validation's checkpoint: both ranks train, workers are running
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        first = torch.load(last, map_location="cpu", weights_only=True)["iteration"]
        os.killpg(proc.pid, signal.SIGTERM)  # as `kill -TERM -- -PGID`
        out, _ = proc.communicate(timeout=180)  # no hang: a rank waiting for the other, a worker never joined
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, out[-4000:]
    assert "killed by signal" not in out and "Traceback" not in out, out[-4000:]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["iteration"] >= first >= 2
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signal.SIGTERM
    assert result["last_model_path"] == str(last)
    # Resumable: a fresh module loads it, and both ranks' processes are gone (no orphan left in the group).
    cfg = compose_cfg(
        tmp_path / "ref", [*TINY_ESRGAN_CLI, "logger=none", "model.stages=[psnr]", "model.psnr.iters=100000"]
    )
    model = instantiate(cfg.model, _recursive_=False)
    model.load_state_dict(saved["state_dict"], strict=False)
    model.on_load_checkpoint(saved)
    assert model.iteration == saved["iteration"]
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
