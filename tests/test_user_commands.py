"""Commands as a researcher types them (issue 15): a multirun without hydra.sweep.dir, a SIGTERM sent to the
whole process group with DataLoader workers running."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_ESRGAN
from test_realesrgan import TINY as TINY_REALESRGAN
from test_training_faults import SCFEGAN_TINY, _faces, _sr_images


def repo_copy(dst: Path) -> Path:
    """The repository's tracked files under ``dst`` (a fresh clone, as a user has it); .venv is not needed: the
    commands run with this interpreter."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _env():
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    for k in ("LOCAL_RANK", "PROJECT_ROOT"):
        env.pop(k, None)
    return env


# ------------------------------------------------------------------------------------------------ item 1
@pytest.mark.slow
def test_multirun_without_sweep_dir_runs_every_job_and_summarises(tmp_path):
    # Exactly the README's form: no hydra.sweep.dir; the sweep goes to logs/<task>/multiruns/<time> under the cwd.
    repo = repo_copy(tmp_path / "repo")
    args = [a for a in TINY_ESRGAN if a != "experiment=demo"]
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "experiment=demo",
            "model.gan.gan_weight=1e-3,5e-3",
            *args,
            "model.psnr.iters=2",
            "model.gan.iters=2",
            "trainer.val_check_interval=2",
        ],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweeps = list((repo / "logs" / "demo" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    info = json.loads((sweep / "sweep_info.json").read_text())
    assert info["swept_keys"] == ["model.gan.gan_weight"]
    assert (sweep / "summary.csv").is_file()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "result.json").read_text())["status"] == "ok"


# ------------------------------------------------------------------------------------------------ item 2
def _recipe_args(recipe: str, tmp_path: Path) -> list[str]:
    if recipe == "esrgan":
        data = _sr_images(tmp_path / "data")
        return [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "model.stages=[psnr]",
            "model.psnr.iters=100000",
            "trainer.val_check_interval=2",
        ]
    if recipe == "realesrgan":
        data = _sr_images(tmp_path / "data", size=64)
        tiny = [a for a in TINY_REALESRGAN if not a.startswith(("model.psnr.iters", "trainer.val_check"))]
        return [
            *tiny,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "model.psnr.iters=100000",
            "trainer.val_check_interval=2",
        ]
    faces = _faces(tmp_path / "faces")
    tiny = [a for a in SCFEGAN_TINY if not a.startswith("model.iters")]
    return [*tiny, f"data.image_dir={faces}", "model.iters=100000", "trainer.val_check_interval=2"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["esrgan", "realesrgan", "scfegan"])
def test_group_sigterm_with_workers_saves_last_ckpt_and_exits_143(tmp_path, recipe):
    # `timeout`, SLURM and Kubernetes signal the whole process group: the DataLoader workers get SIGTERM too.
    run_dir = tmp_path / "run"
    args = [*_recipe_args(recipe, tmp_path), "data.num_workers=2", f"hydra.run.dir={run_dir}"]
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while not last.exists():  # the first checkpoint: training is under way, workers are running
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        first = last.stat().st_mtime_ns
        os.killpg(proc.pid, signal.SIGTERM)  # as `kill -TERM -- -PGID`
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, out[-4000:]
    assert "killed by signal" not in out, out[-4000:]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert last.stat().st_mtime_ns >= first and saved["iteration"] >= 2
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signal.SIGTERM
    assert result["last_model_path"] == str(last)


# ------------------------------------------------------------------------------------------------ item 7
def test_scfegan_weights_record_the_training_size_and_predict_works_at_it(tmp_path):
    # A generator trained at 128 must not be run at predict.py's 512 default (size=auto: the size the weights record).
    from conftest import compose_cfg

    from inference.faces import working_size
    from runtime.training import train
    from weights.io import read_generator_file

    faces = _faces(tmp_path / "faces")
    result = train(
        compose_cfg(
            tmp_path / "run", [*SCFEGAN_TINY, f"data.image_dir={faces}", "model.iters=1", "data.resolution=128"]
        )
    )
    for path in (result["last_model_path"], tmp_path / "run" / "weights" / "net_g_final.pth"):
        meta = read_generator_file(path).meta
        assert meta["input_size"] == 128, (path, meta)
        assert working_size("auto", meta) == (128, 128)


def test_face_experiment_uses_celebamask_mini_faces(tmp_path):
    from conftest import compose_cfg, shared_data
    from hydra.utils import instantiate

    shared_data("faces", "celebamask_mini")
    cfg = compose_cfg(tmp_path, ["experiment=scfegan_faces"])
    assert cfg.data.resolution == 128 and cfg.model._target_.endswith("SCFEGANModule")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.train_set) == 950 and len(dm.val_set) == 50  # real faces, with their label maps


# ------------------------------------------------------------------------------------------------ item 6
def test_train_loss_line_every_log_every_n_steps_in_console_and_train_log(tmp_path):
    run_dir = tmp_path / "run"
    data = _sr_images(tmp_path / "data")
    args = [
        *TINY_ESRGAN,
        f"data.train_dirs=[{data}]",
        f"data.val_dirs=[{data}]",
        "model.stages=[psnr]",
        "model.psnr.iters=6",
        "trainer.val_check_interval=6",
        "trainer.log_every_n_steps=2",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log_text = (run_dir / "train.log").read_text()
    for text in (proc.stdout + proc.stderr, log_text):
        lines = [ln for ln in text.splitlines() if "train_log" in ln and " iter " in ln]
        iters = [int(ln.split(" iter ")[1].split("/")[0].split()[0]) for ln in lines]
        assert iters == [2, 4, 6], text[-3000:]


# ------------------------------------------------------------------------------------------------ item 3
def test_device_counts_are_checked_before_any_process_starts(tmp_path, monkeypatch):
    from conftest import compose_cfg

    import runtime.launch as train_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ValueError, match="no GPU here would start 4 CPU processes"):
        train_mod.check_config(compose_cfg(tmp_path, ["model=esrgan", "data=sr_demo", "trainer.devices=4"]))
    with pytest.raises(ValueError, match="4 GPU process"):
        train_mod.check_config(
            compose_cfg(tmp_path, ["model=esrgan", "data=sr_demo", "trainer=gpu", "trainer.devices=4"])
        )
    with pytest.raises(ValueError, match="3 CPU processes on 2 cores; set allow_cpu_oversubscribe=true"):
        train_mod.check_config(compose_cfg(tmp_path, ["experiment=demo", "trainer.devices=3"]))
    train_mod.check_config(
        compose_cfg(tmp_path, ["experiment=demo", "trainer.devices=3", "allow_cpu_oversubscribe=true"])
    )
    train_mod.check_config(compose_cfg(tmp_path, ["experiment=demo", "trainer=ddp", "trainer.accelerator=cpu"]))


# ------------------------------------------------------------------------------------------------ item 5
@pytest.mark.slow
def test_resume_continues_the_run_folder_and_the_wandb_run(tmp_path):
    # Exactly the README's resume form: no hydra.run.dir; the run folder and wandb run of ckpt_path continue.
    repo = repo_copy(tmp_path / "repo")
    args = [a if a != "logger=none" else "logger=wandb" for a in TINY_ESRGAN]
    args += ["model.psnr.iters=2", "trainer.val_check_interval=2"]
    env = {**_env(), "WANDB_MODE": "offline"}

    def run(*extra):
        proc = subprocess.run(
            [sys.executable, "train.py", *args, *extra], cwd=repo, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    run("model.gan.iters=2")
    runs = repo / "logs" / "demo" / "runs"
    (folder,) = runs.iterdir()
    first_config = (folder / ".hydra" / "config.yaml").read_text()
    wandb_run = json.loads((folder / "wandb_run.json").read_text())
    out = run("model.gan.iters=4", "ckpt_path=" + str(Path("logs/demo/runs") / folder.name / "checkpoints/last.ckpt"))
    assert list(runs.iterdir()) == [folder]  # no second folder
    assert "dirpath has changed" not in out, out[-3000:]
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "ok" and result["iteration"] == 6
    assert (folder / ".hydra" / "config.yaml").read_text() == first_config  # the first run's config is kept
    assert len(list((folder / ".hydra").glob("resume_*/config.yaml"))) == 1
    assert json.loads((folder / "wandb_run.json").read_text()) == wandb_run
    offline = sorted(p.name for p in (folder / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.endswith("-" + wandb_run["id"]) for p in offline), offline
    assert wandb_run["group"] and wandb_run["name"]


def test_data_folders_and_weights_files_are_checked_before_any_process_starts(tmp_path):
    # Issue 15 item 3: a missing folder or weights file stops in check_inputs (train() calls it before the Trainer
    # exists, so before DDP spawns anything), naming the key and the path.
    from conftest import compose_cfg

    from runtime.launch import check_config, check_inputs

    base = ["experiment=demo", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    check_config(compose_cfg(tmp_path, base))
    check_inputs(compose_cfg(tmp_path, base))  # the shipped demo data
    missing = tmp_path / "no_such"
    for override, match in (
        (f"data.train_dirs=[{missing}]", "data.train_dirs: .*no_such' does not exist"),
        (f"data.val_dirs=[{missing}]", "data.val_dirs: .*no_such' does not exist"),
        (f"model.init_weights={missing}.pth", "model.init_weights: .*no_such.pth' does not exist"),
        (f"model.perceptual.weights={missing}.pth", "model.perceptual.weights: .*no_such.pth' does not exist"),
        (
            f"model.val_lpips.backbone_weights={missing}.pth",
            None,  # LPIPS off: not read, not checked
        ),
    ):
        cfg = compose_cfg(tmp_path, [*base, override])
        if match is None:
            check_inputs(cfg)
            continue
        with pytest.raises(FileNotFoundError, match=match):
            check_inputs(cfg)
    with pytest.raises(FileNotFoundError, match="model.vgg_weights: .*no_such.pth' does not exist"):
        check_inputs(compose_cfg(tmp_path, ["experiment=scfegan_demo", f"model.vgg_weights={missing}.pth"]))
    a_file = tmp_path / "f.png"
    a_file.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data.image_dir: .*f.png' is not a folder"):
        check_inputs(compose_cfg(tmp_path, ["experiment=scfegan_demo", f"data.image_dir={a_file}"]))


# ------------------------------------------------------------------------------------------------ item 5, sweeps
@pytest.mark.slow
def test_resumed_sweep_job_continues_its_folder_with_or_without_m(tmp_path):
    # A job of a sweep resumed from its last.ckpt continues in <sweep>/<job>/ (not a new sweep or run folder), keeps
    # its job number, swept values and wandb run, and the sweep's summary.csv gets its new result.
    import csv

    repo = repo_copy(tmp_path / "repo")
    args = [a if a != "logger=none" else "logger=wandb" for a in TINY_ESRGAN if a != "experiment=demo"]
    args += ["model.stages=[psnr]", "trainer.val_check_interval=2"]
    env = {**_env(), "WANDB_MODE": "offline"}

    def run(*extra, ok=True):
        proc = subprocess.run(
            [sys.executable, "train.py", *extra, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
        )
        out = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == ok, out[-3000:]
        return out

    run("-m", "experiment=demo", "model.gan.gan_weight=1e-3,5e-3", "model.psnr.iters=2")
    (sweep,) = (repo / "logs" / "demo" / "multiruns").iterdir()
    multirun_yaml = (sweep / "multirun.yaml").read_text()
    info = json.loads((sweep / "sweep_info.json").read_text())
    first = {job: json.loads((sweep / job / "wandb_run.json").read_text()) for job in ("0", "1")}
    rel = Path("logs/demo/multiruns") / sweep.name

    # With -m: the one job, in its folder.  Without -m: the same.
    run(
        "-m",
        "experiment=demo",
        "model.gan.gan_weight=5e-3",
        "model.psnr.iters=4",
        f"ckpt_path={rel}/1/checkpoints/last.ckpt",
    )
    run(
        "experiment=demo", "model.gan.gan_weight=1e-3", "model.psnr.iters=4", f"ckpt_path={rel}/0/checkpoints/last.ckpt"
    )
    assert list((repo / "logs" / "demo" / "multiruns").iterdir()) == [sweep]
    assert not (repo / "logs" / "demo" / "runs").exists()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert (sweep / "multirun.yaml").read_text() == multirun_yaml  # the sweep's own config is kept
    assert json.loads((sweep / "sweep_info.json").read_text()) == info
    for job, weight in (("0", 1e-3), ("1", 5e-3)):
        result = json.loads((sweep / job / "result.json").read_text())
        assert result["status"] == "ok" and result["iteration"] == 4, result
        assert result["job_num"] == int(job) and result["swept"] == {"model.gan.gan_weight": weight}
        assert len(list((sweep / job / ".hydra").glob("resume_*/config.yaml"))) == 1
        assert json.loads((sweep / job / "wandb_run.json").read_text()) == first[job]
        offline = sorted(p.name for p in (sweep / job / "wandb").glob("offline-run-*"))
        assert len(offline) == 2 and all(p.endswith("-" + first[job]["id"]) for p in offline), offline
        assert first[job]["group"] == info["group"]
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["job"], r["iter"]) for r in rows) == [("0", "4"), ("1", "4")]

    # Refused before training: a list of values (every job would start from one checkpoint), another value.
    out = run(
        "-m",
        "experiment=demo",
        "model.gan.gan_weight=1e-3,5e-3",
        "model.psnr.iters=6",
        f"ckpt_path={rel}/0/checkpoints/last.ckpt",
        ok=False,
    )
    assert "this multirun still sweeps ['model.gan.gan_weight']" in out and "model.gan.gan_weight=0.001" in out
    out = run(
        "experiment=demo",
        "model.gan.gan_weight=1e-2",
        "model.psnr.iters=6",
        f"ckpt_path={rel}/0/checkpoints/last.ckpt",
        ok=False,
    )
    assert "model.gan.gan_weight=0.01 (the job ran with 0.001)" in out, out[-3000:]
    assert json.loads((sweep / "0" / "result.json").read_text())["iteration"] == 4
    assert list((repo / "logs" / "demo" / "multiruns").iterdir()) == [sweep]
