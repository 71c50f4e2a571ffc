"""Hydra sweeps: the sweep configs and launcher profiles compose, a 2-job sweep runs end to end and leaves two run
folders, result files, the summary CSV and the printed table, and the sweep's wandb runs share a group and are
named by their overrides; the multirun + DDP guard's decisions."""

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import compose_cfg
from test_ddp import TINY_ESRGAN_CLI, run_train
from test_wandb import read_wandb_run

ESRGAN_WEIGHTS = {"model.gan.pixel_weight", "model.gan.perceptual_weight", "model.gan.gan_weight"}
SCFEGAN_WEIGHTS = {f"model.loss.{k}" for k in ("alpha", "sigma", "gamma", "upsilon", "beta")}


@pytest.mark.slow
def test_two_job_sweep_writes_run_folders_summary_and_wandb_group(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # +sweep=... sets hydra.mode=MULTIRUN (no -m); command-line values replace the config's lists: 2 jobs.
    proc = run_train(
        [
            "+sweep=esrgan_loss_weights",
            *TINY_ESRGAN_CLI,
            "logger=wandb",
            "model.psnr.iters=1",
            "model.gan.iters=1",
            "model.gan.gan_weight=1e-3,5e-2",
            "model.gan.pixel_weight=1e-2",
            "model.gan.perceptual_weight=1.0",
            # No LPIPS backbone weights here: rank by PSNR-Y, as the sweep config and the README say to
            # (the LPIPS ranking itself: test_job_objective_is_the_sweep_configs_lpips).
            "objective.key=val/psnr_y",
            "objective.direction=maximize",
            "model.val_lpips.enabled=false",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    results = [json.loads((p / "result.json").read_text()) for p in jobs]
    for job, r in zip(jobs, results):
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert r["status"] == "ok" and r["monitor"] == "val/psnr_y" and math.isfinite(r["objective"])
        assert r["objective"] == r["metrics"]["val/psnr_y"]
    assert [r["swept"] for r in results] == [{"model.gan.gan_weight": 1e-3}, {"model.gan.gan_weight": 5e-2}]

    info = json.loads((sweep_dir / "sweep_info.json").read_text())
    assert info["swept_keys"] == ["model.gan.gan_weight"] and info["sweep_name"] == "esrgan_loss_weights"

    with (sweep_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    objective_col = "objective (val/psnr_y, maximize)"
    values = [float(r[objective_col]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert {r["model.gan.gan_weight"] for r in rows} == {"0.001", "0.05"}
    assert "val/psnr_y" in rows[0] and "val/ssim_y" in rows[0]
    # ... and the printed table.
    assert "model.gan.gan_weight" in proc.stdout and f"sweep summary: {sweep_dir / 'summary.csv'}" in proc.stdout

    runs = [read_wandb_run(next((job / "wandb").glob("offline-run-*/run-*.wandb"))) for job in jobs]
    groups = {r["run"].run_group for r in runs}
    assert groups == {info["group"]} and info["group"].startswith("esrgan_loss_weights-")
    assert [r["run"].display_name for r in runs] == ["model.gan.gan_weight=0.001", "model.gan.gan_weight=0.05"]


def _write_result(d: Path, job: int, objective, **extra):
    d.mkdir(parents=True)
    (d / "result.json").write_text(
        json.dumps(
            {
                "job_num": job,
                "objective": objective,
                "monitor": "val/psnr_y",
                "direction": "maximize",
                "swept": {"model.gan.gan_weight": job},
                "metrics": {"val/psnr_y": objective, "train/x": 1.0},
                "status": "ok",
                "overrides": [f"model.gan.gan_weight={job}"],
                **extra,
            }
        )
    )


def test_summary_sorts_by_objective_nan_last(tmp_path, capsys):
    from runtime.sweeps import summarize
    from scripts.sweep_summary import main

    for job, obj in enumerate([20.0, None, 25.0, 22.5]):
        _write_result(tmp_path / str(job), job, obj)
    (tmp_path / "sweep_info.json").write_text(json.dumps({"swept_keys": ["model.gan.gan_weight"]}))
    columns, rows = summarize(tmp_path)
    assert [r[1] for r in rows] == [2, 3, 0, 1]  # best first, the job without a value last
    assert "val/psnr_y" in columns and "train/x" not in columns  # final validation metrics only
    _, rows = summarize(tmp_path, direction="minimize")
    assert [r[1] for r in rows] == [0, 3, 2, 1]
    main([str(tmp_path)])  # the CLI for stopped sweeps
    out = capsys.readouterr().out
    assert "model.gan.gan_weight" in out and (tmp_path / "summary.csv").is_file()


def test_sweep_configs_cover_the_loss_weights(tmp_path):
    from hydra.types import RunMode

    for name, model_args, keys in (
        ("esrgan_loss_weights", ["experiment=demo"], ESRGAN_WEIGHTS),
        ("scfegan_loss_weights", ["experiment=scfegan_demo"], SCFEGAN_WEIGHTS),
    ):
        cfg = compose_cfg(tmp_path, [*model_args, f"+sweep={name}"])
        assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.sweep_name == name
        params = cfg.hydra.sweeper.params
        assert set(params) == keys
        for key, values in params.items():
            from omegaconf import OmegaConf

            assert OmegaConf.select(cfg, key) is not None, key  # a real config key
            assert "," in str(values)


def test_swept_keys_follow_the_basic_sweeper(tmp_path):
    from runtime.sweeps import swept_keys

    cfg = compose_cfg(tmp_path, ["experiment=demo", "+sweep=esrgan_loss_weights"])
    assert set(swept_keys(cfg)) == ESRGAN_WEIGHTS
    # A command-line value replaces the config's list (as BasicSweeper does); a command-line list adds a key.
    from omegaconf import read_write

    with read_write(cfg.hydra):
        cfg.hydra.overrides.task = ["model.gan.pixel_weight=1e-2", "seed=1,2"]
    assert set(swept_keys(cfg)) == {"model.gan.perceptual_weight", "model.gan.gan_weight", "seed"}


def test_launcher_profiles_compose(tmp_path):
    from runtime.training import register

    register()  # the resolvers, as train.py does before composing

    cfg = compose_cfg(tmp_path, ["experiment=demo", "hydra/launcher=joblib_gpus"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs >= 1
    cfg = compose_cfg(
        tmp_path,
        [
            "experiment=demo",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra/launcher=submitit_slurm_ddp",
        ],
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4 and launcher.nodes == 2  # one task per GPU


def test_optuna_profile_is_optional(tmp_path):
    import importlib.util

    overrides = ["experiment=demo", "+hparams_search=esrgan_optuna"]
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        with pytest.raises(Exception, match="optuna"):
            compose_cfg(tmp_path, overrides)
    else:
        cfg = compose_cfg(tmp_path, overrides)
        assert set(cfg.hydra.sweeper.params) == ESRGAN_WEIGHTS and cfg.hydra.sweeper.direction == "maximize"


def test_multirun_ddp_guard_decisions(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from runtime.sweeps import ddp_launch_problem

    for var in (
        "LOCAL_RANK",
        "SLURM_NTASKS",
        "SLURM_JOB_NAME",
        "TORCHELASTIC_RUN_ID",
        "RANK",
        "WORLD_SIZE",
        "GROUP_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        monkeypatch.delenv(var, raising=False)
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "ddp_gan"})
    basic = OmegaConf.create({"launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}})
    joblib = OmegaConf.create(
        {"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}}
    )
    assert "re-running this command line" in ddp_launch_problem(trainer, basic)
    assert "joblib" in ddp_launch_problem(trainer, joblib)
    assert ddp_launch_problem(OmegaConf.merge(trainer, {"devices": 1}), joblib) is None
    assert ddp_launch_problem(OmegaConf.merge(trainer, {"strategy": "ddp_gan_spawn"}), basic) is None
    # Processes started by SLURM (submitit: one task per GPU) or torchrun: Lightning re-runs nothing.
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "sweep")
    assert ddp_launch_problem(trainer, basic) is None


def test_gpu_slots_are_exclusive(tmp_path):
    from runtime.launch import release_slot, try_lock_slot

    a, b = try_lock_slot(tmp_path, 2), try_lock_slot(tmp_path, 2)
    assert (a[1], b[1]) == (0, 1)
    assert try_lock_slot(tmp_path, 2) is None  # both GPUs busy: the job waits
    release_slot(a[0])
    c = try_lock_slot(tmp_path, 2)
    assert c[1] == 0
    release_slot(b[0])
    release_slot(c[0])


def test_gan_sweep_ranks_by_lpips_lower_first_as_its_config_says(tmp_path, capsys):
    # Issue 15 item 4: a GAN loss-weight sweep is ranked by LPIPS (minimize), chosen by the sweep config.
    from runtime.launch import check_objective, objective_of
    from runtime.sweeps import write_summary

    cfg = compose_cfg(tmp_path / "c", ["+sweep=esrgan_loss_weights", "experiment=demo"])
    assert objective_of(cfg) == ("val/lpips", "minimize") and cfg.model.val_lpips.enabled
    check_objective(cfg)
    plain = compose_cfg(tmp_path / "p", ["experiment=demo"])
    assert objective_of(plain) == ("val/psnr_y", None)  # no sweep config: the checkpoint monitor
    with pytest.raises(ValueError, match="model.val_lpips.enabled=true"):
        check_objective(compose_cfg(tmp_path / "d", ["experiment=demo", "objective.key=val/lpips"]))
    with pytest.raises(ValueError, match="objective.direction='up'"):
        check_objective(compose_cfg(tmp_path / "e", ["experiment=demo", "objective.direction=up"]))

    for job, lpips in enumerate([0.30, 0.10, 0.20]):
        _write_result(
            tmp_path / "s" / str(job),
            job,
            lpips,
            objective_key="val/lpips",
            direction="minimize",
            metrics={"val/lpips": lpips, "val/psnr_y": 30.0 - job},
        )
    write_summary(tmp_path / "s")
    out = capsys.readouterr().out
    assert "sweep ranked by (val/lpips, minimize): lower is better" in out
    with open(tmp_path / "s" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["job"]) for r in rows] == [1, 2, 0]
    assert "objective (val/lpips, minimize)" in rows[0]


@pytest.mark.slow
def test_job_objective_is_the_sweep_configs_lpips(tmp_path):
    # The job's result.json (what the summary and Optuna read) carries the sweep config's objective, not PSNR-Y.
    from test_evaluate import _random_alexnet_file
    from test_hostile_files2 import _sr_data, _train_cfg

    from runtime.training import train

    alex = _random_alexnet_file(tmp_path / "alex.pth")
    data = _sr_data(tmp_path / "data")
    result = train(
        _train_cfg(
            tmp_path / "run",
            data,
            "objective.key=val/lpips",
            "objective.direction=minimize",
            "model.val_lpips.enabled=true",
            f"model.val_lpips.backbone_weights={alex}",
        )
    )
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["objective_key"] == "val/lpips" and saved["direction"] == "minimize"
    assert saved["objective"] == result["metrics"]["val/lpips"] != result["metrics"]["val/psnr_y"]


def test_scfegan_sweep_ranks_by_lpips_of_the_composite(tmp_path):
    # Issue 15 item 4: the SC-FEGAN loss-weight sweep ranks by LPIPS (minimize), not by PSNR in the mask; without
    # LPIPS in validation the objective is refused before training, naming the alternative.
    from runtime.launch import check_objective, objective_of

    cfg = compose_cfg(tmp_path / "c", ["+sweep=scfegan_loss_weights", "experiment=scfegan_demo"])
    assert objective_of(cfg) == ("val/lpips", "minimize") and cfg.model.val_lpips.enabled
    check_objective(cfg)
    off = compose_cfg(
        tmp_path / "d", ["+sweep=scfegan_loss_weights", "experiment=scfegan_demo", "model.val_lpips.enabled=false"]
    )
    with pytest.raises(ValueError, match="model.val_lpips.enabled=true .*objective.key=val/psnr_mask"):
        check_objective(off)
    assert objective_of(compose_cfg(tmp_path / "p", ["experiment=scfegan_demo"])) == ("val/psnr_mask", None)


def test_scfegan_validation_lpips_is_lpips_of_composite_and_real(tmp_path):
    # The value validation logs is torchmetrics' LPIPS (the same backbone file) of the composite against the real
    # image, averaged over the images.
    import torch
    from test_evaluate import _random_alexnet_file
    from test_scfegan_module import TINY, _batch

    from lightning_modules.scfegan_module import SCFEGANModule, to01
    from metrics.lpips import build_lpips

    alex = _random_alexnet_file(tmp_path / "alex.pth")
    torch.manual_seed(0)
    m = SCFEGANModule(**TINY, val_lpips={"enabled": True, "backbone_weights": str(alex)}).eval()
    assert SCFEGANModule(**TINY).val_lpips is None  # off by default
    batches = [_batch(b=2, seed=0), _batch(b=3, seed=1)]
    m.on_validation_epoch_start()
    with torch.no_grad():
        for i, batch in enumerate(batches):
            m.validation_step(batch, i)
    reference = build_lpips("alex", str(alex))
    expected = []
    with torch.no_grad():
        for batch in batches:
            _, comp = m(batch)
            expected += reference(to01(comp), to01(batch["image"])).reshape(-1).tolist()
            reference.reset()
    assert len(expected) == 5 and max(expected) > 0
    assert float(m.val_metrics["lpips"].compute()) == pytest.approx(sum(expected) / 5, rel=1e-6)
    assert [r["lpips"] for r in m.val_rows] == pytest.approx(expected, rel=1e-6)


def test_scfegan_job_objective_is_val_lpips(tmp_path):
    # End to end through train(): result.json (what the sweep summary and Optuna read) carries val/lpips.
    import torch
    from test_evaluate import _random_alexnet_file
    from test_training_faults import SCFEGAN_TINY, _faces

    from runtime.training import train

    alex = _random_alexnet_file(tmp_path / "alex.pth")
    faces = _faces(tmp_path / "faces")
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *[a for a in SCFEGAN_TINY if not a.startswith(("model.iters", "trainer.val_check_interval"))],
            f"data.image_dir={faces}",
            "model.iters=1",
            "trainer.val_check_interval=1",
            "objective.key=val/lpips",
            "objective.direction=minimize",
            "model.val_lpips.enabled=true",
            f"model.val_lpips.backbone_weights={alex}",
        ],
    )
    result = train(cfg)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["objective_key"] == "val/lpips" and saved["direction"] == "minimize"
    assert saved["objective"] == result["metrics"]["val/lpips"] > 0
    ckpt = torch.load(result["last_model_path"], map_location="cpu", weights_only=True)
    assert not any(k.startswith("val_lpips.") for k in ckpt["state_dict"])


# ------------------------------------------------------------------------------------------------ FID / KID objectives
def informative_inception_file(path: Path) -> Path:
    """RANDOM weights for torch-fidelity's FID Inception whose features vary with the image: He-initialised
    convolutions, identity BatchNorm (the network's own init, test_evaluate._random_inception_file, gives features of
    ~1e-8 and FIDs of ~1e-13: nothing a comparison could tell apart)."""
    import torch
    from test_evaluate import _random_inception_file

    state = torch.load(_random_inception_file(path), map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(0)
    for k, v in state.items():
        if k.endswith("conv.weight"):
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith(("bn.weight", "running_var")):
            state[k] = torch.ones_like(v)
        elif k.endswith(("bn.bias", "running_mean")):
            state[k] = torch.zeros_like(v)
    torch.save(state, path)
    return path


def test_validation_fid_kid_equal_torchmetrics_and_need_min_images(tmp_path):
    # ValidationFID's FID is torchmetrics' FrechetInceptionDistance on the same uint8 images with the same Inception
    # file; KID is kid_from_features of the same features; below min_images nothing is computed.
    import torch

    from metrics.fid import ValidationFID, build_fid, kid_from_features

    weights = informative_inception_file(tmp_path / "inception.pth")
    g = torch.Generator().manual_seed(0)
    real = [torch.rand(3, 3, 64, 64, generator=g) for _ in range(2)]
    fake = [torch.rand(3, 3, 64, 64, generator=g) ** 3 for _ in range(2)]  # darker: another distribution
    metric = ValidationFID(str(weights), min_images=6, kid_subsets=10)
    for f, r in zip(fake, real):
        metric.update(f, r)
    values, n = metric.compute()
    assert n == 6 and values is not None

    reference = build_fid(weights)
    to_u8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    for f, r in zip(fake, real):
        reference.update(to_u8(r), real=True)
        reference.update(to_u8(f), real=False)
    assert values["fid"] == pytest.approx(float(reference.compute()), rel=1e-5)
    feats = lambda xs: torch.cat([metric.net(to_u8(x)).double() for x in xs])  # noqa: E731
    kid, kid_std = kid_from_features(feats(real), feats(fake), subsets=10)
    assert (values["kid"], values["kid_std"]) == pytest.approx((kid, kid_std), rel=1e-9)
    assert values["fid"] > 1e-3 and abs(values["kid"]) > 1e-9

    small = ValidationFID(str(weights), min_images=7)
    for f, r in zip(fake, real):
        small.update(f, r)
    assert small.compute() == (None, 6)  # 6 images < min_images=7: no FID/KID


def test_fid_kid_objectives_are_refused_before_training_when_off_or_the_set_is_small(tmp_path):
    from hydra.utils import instantiate
    from test_training_faults import SCFEGAN_TINY, _faces

    from runtime.launch import check_objective, check_objective_set_size, objective_of

    faces = _faces(tmp_path / "faces")
    base = [*SCFEGAN_TINY, f"data.image_dir={faces}", "data.num_val=3", "objective.key=val/kid"]
    off = compose_cfg(tmp_path / "a", base)
    assert objective_of(off) == ("val/kid", "minimize")  # lower is better, whatever the checkpoint monitor's mode
    with pytest.raises(ValueError, match="objective.key=val/kid needs model.val_fid.enabled=true"):
        check_objective(off)
    on = compose_cfg(tmp_path / "b", [*base, "model.val_fid.enabled=true"])
    check_objective(on)
    with pytest.raises(ValueError, match="the validation set has 3 images, fewer than model.val_fid.min_images=50"):
        check_objective_set_size(on, instantiate(on.data))
    enough = compose_cfg(tmp_path / "c", [*base, "model.val_fid.enabled=true", "model.val_fid.min_images=3"])
    check_objective_set_size(enough, instantiate(enough.data))


@pytest.mark.slow
def test_scfegan_job_objective_is_val_kid_over_the_validation_set(tmp_path):
    # End to end: validation computes FID/KID of the composites (3 images >= min_images=3), result.json ranks by KID.
    import torch
    from test_training_faults import SCFEGAN_TINY, _faces

    from runtime.training import train

    weights = informative_inception_file(tmp_path / "inception.pth")
    faces = _faces(tmp_path / "faces")
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *[a for a in SCFEGAN_TINY if not a.startswith(("model.iters", "trainer.val_check_interval"))],
            f"data.image_dir={faces}",
            "data.num_val=3",
            "model.iters=1",
            "trainer.val_check_interval=1",
            "objective.key=val/kid",
            "model.val_fid.enabled=true",
            f"model.val_fid.inception_weights={weights}",
            "model.val_fid.min_images=3",
            "model.val_fid.kid_subsets=5",
        ],
    )
    result = train(cfg)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["objective_key"] == "val/kid" and saved["direction"] == "minimize"
    assert saved["objective"] == result["metrics"]["val/kid"] and math.isfinite(result["metrics"]["val/fid"])
    ckpt = torch.load(result["last_model_path"], map_location="cpu", weights_only=True)
    assert not any(k.startswith("val_fid.") for k in ckpt["state_dict"])  # rebuilt from its own weights file
