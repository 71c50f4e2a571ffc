"""Faults during training (issue 12, items 3, 5, 6, 7, 8): atomic checkpoints, SIGTERM/SIGINT, one run per run
folder, undecodable images under the `warn`/`error` policies, and a killed-and-resumed run ending bit-identical to
an uninterrupted one.

Tiny networks, tiny images (tests/conftest.py TINY_ESRGAN); the perceptual VGG is random (no downloads here).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_ESRGAN, compose_cfg, write_png
from pytorch_lightning import Callback

from runtime.training import train


# ------------------------------------------------------------------------------------------------ helpers
def _sr_images(folder: Path, n: int = 3, size: int = 48) -> Path:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = np.stack([np.sin((5 + i) * x + i), np.cos((4 + i) * y), np.sin(3 * (x + y) - i)], -1) * 0.4 + 0.5
        write_png(folder / f"{i}.png", (img * 255 + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8))
    return folder


def _sr_cfg(run_dir: Path, data: Path, extra=()):
    return compose_cfg(
        run_dir,
        [
            *TINY_ESRGAN,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "data.dataset_enlarge_ratio=2",
            "data.use_hflip=true",
            "data.use_rot=true",
            "seed=5",
            *extra,
        ],
    )


class _CrashAt(Callback):
    """Raise at the start of the batch after ``iteration`` batches (after that batch's checkpoint): a crash."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.iteration == self.iteration:
            raise RuntimeError(f"simulated crash at iteration {self.iteration}")


def _with_callbacks(monkeypatch, *extra):
    import runtime.training as train_mod

    real = (
        train_mod.instantiate_callbacks.__wrapped__
        if hasattr(train_mod.instantiate_callbacks, "__wrapped__")
        else train_mod.instantiate_callbacks
    )
    monkeypatch.setattr("runtime.training.instantiate_callbacks", lambda c: [*real(c), *extra])
    return real


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"]
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert len(a["optimizer_states"]) == len(b["optimizer_states"])
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        assert oa["state"].keys() == ob["state"].keys()
        for pid in oa["state"]:
            for name, va in oa["state"][pid].items():
                vb = ob["state"][pid][name]
                assert torch.equal(va, vb) if torch.is_tensor(va) else va == vb, (pid, name)
        assert oa["param_groups"] == ob["param_groups"]
    assert a["lr_schedulers"] == b["lr_schedulers"]


# ------------------------------------------------------------------------------------------------ item 8
# 3 images x enlarge 2 = 6 crops = 3 batches of 2 per epoch; 4 PSNR + 4 GAN batches; checkpoints every 2.
# Crash after the checkpoint at 2 (mid epoch 0, PSNR stage), 4 (mid epoch 1, right before the stage switch),
# 6 (exactly at the end of epoch 1, GAN stage).
RESUME = ["model.psnr.iters=4", "model.gan.iters=4", "trainer.val_check_interval=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    data = _sr_images(tmp / "data")
    result = train(_sr_cfg(tmp / "run", data, RESUME))
    return data, _load(result["last_model_path"])


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [2, 4, 6])
def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(
    tmp_path, monkeypatch, uninterrupted, crash_at
):
    data, full = uninterrupted
    real = _with_callbacks(monkeypatch, _CrashAt(crash_at))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_sr_cfg(tmp_path / "a", data, RESUME))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert _load(last)["iteration"] == crash_at
    monkeypatch.setattr("runtime.training.instantiate_callbacks", real)
    resumed = train(_sr_cfg(tmp_path / "b", data, [*RESUME, f"ckpt_path={last}"]))
    assert resumed["iteration"] == 8
    _assert_bitwise_equal(full, _load(resumed["last_model_path"]))


SCFEGAN_TINY = [
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
    "data.num_val=2",
    "data.hflip=true",
    "model.iters=4",
    "trainer.val_check_interval=1",
    "seed=2",
]


def _faces(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128] / 128
    for i in range(n):
        img = np.stack([np.sin(3 * x + i), np.cos(4 * y - i), np.sin(2 * (x + y) + x * i)], -1) * 0.4 + 0.5
        write_png(folder / f"{i:03d}.png", (img * 255 + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8))
    return folder


@pytest.mark.slow
def test_scfegan_killed_and_resumed_run_is_bit_identical(tmp_path, monkeypatch):
    # 4 training faces, batches of 2: 2 batches per epoch; crash mid epoch 1 (after the checkpoint at 3).  Flips
    # (per-sample seeded), masks (seed, index, epoch) and the gradient penalty's torch.rand (RNG state in the
    # checkpoint) must all come out the same.
    faces = _faces(tmp_path / "faces")
    cfg = lambda d, extra=(): compose_cfg(d, [*SCFEGAN_TINY, f"data.image_dir={faces}", *extra])  # noqa: E731
    full = _load(train(cfg(tmp_path / "full"))["last_model_path"])
    real = _with_callbacks(monkeypatch, _CrashAt(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg(tmp_path / "a"))
    monkeypatch.setattr("runtime.training.instantiate_callbacks", real)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert _load(last)["iteration"] == 3
    resumed = train(cfg(tmp_path / "b", [f"ckpt_path={last}"]))
    _assert_bitwise_equal(full, _load(resumed["last_model_path"]))


def test_sampler_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    from datamodules.samplers import ResumableSampler

    ds = list(range(10))
    a = list(ResumableSampler(ds, seed=3))
    assert sorted(i for i, _ in a) == ds and all(e == 0 for _, e in a)
    assert a == list(ResumableSampler(ds, seed=3))
    assert a != list(ResumableSampler(ds, seed=4))
    s = ResumableSampler(ds, seed=3)
    s.set_epoch(1)
    b = list(s)
    assert [i for i, _ in b] != [i for i, _ in a] and all(e == 1 for _, e in b)
    # Two ranks: disjoint shares covering everything (10 = 2 x 5, no padding).
    r0, r1 = (list(ResumableSampler(ds, seed=3, num_replicas=2, rank=r)) for r in (0, 1))
    assert set(r0).isdisjoint(r1) and sorted(i for i, _ in r0 + r1) == ds
    # Resume: epoch 1 without its first 4 samples, once; the pass after it is whole again.
    s = ResumableSampler(ds, seed=3)
    s.resume_at(1, 4)
    assert list(s) == b[4:]
    assert list(s) == b
    s.resume_at(1, 10)  # the whole epoch was consumed: the next one starts
    assert [e for _, e in s] == [2] * 10


def test_training_samples_are_seeded_per_sample_not_per_worker(tmp_path):
    from datamodules.samplers import resumable_train_loader
    from datamodules.sr_datamodule import SRTrainDataset

    data = _sr_images(tmp_path / "data")
    ds = SRTrainDataset([data], gt_size=32, enlarge_ratio=2, seed=7)
    x = ds[(4, 3)]["gt"]
    ds[(1, 0)], ds[(2, 5)]  # other samples in between (another worker's history) change nothing
    assert torch.equal(ds[(4, 3)]["gt"], x)
    assert not torch.equal(ds[(4, 4)]["gt"], x)  # another epoch: another crop / flip
    batches = {}
    for workers in (0, 2):
        loader = resumable_train_loader(ds, 2, seed=7, num_workers=workers)
        batches[workers] = [b["gt"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2])) and len(batches[0]) == 3


# ------------------------------------------------------------------------------------------------ item 3
def _state(value: float) -> dict:
    return {"state_dict": {"w": torch.full((256, 256), value)}, "iteration": int(value)}


def _half_write_then(exc):
    """A torch.save that writes half of the real bytes, then fails like a full disk / a kill."""
    real_save = torch.save

    def fake(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        raise exc

    return fake


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["ENOSPC", "kill"]
)
def test_failed_checkpoint_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, exc):
    from runtime.checkpoint_io import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    target = tmp_path / "ckpt" / "last.ckpt"
    io_.save_checkpoint(_state(1.0), target)
    monkeypatch.setattr(torch, "save", _half_write_then(exc))
    with pytest.raises(type(exc)):
        io_.save_checkpoint(_state(2.0), target)
    monkeypatch.undo()
    assert _load(target)["iteration"] == 1 and torch.equal(_load(target)["state_dict"]["w"], torch.ones(256, 256))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    io_.save_checkpoint(_state(3.0), target)  # and the next save works
    assert _load(target)["iteration"] == 3


def test_checkpoint_is_written_next_to_its_target_not_in_tmpdir(tmp_path, monkeypatch):
    import tempfile

    from runtime.checkpoint_io import AtomicCheckpointIO

    tmpdir = tmp_path / "node_local_tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # where Lightning's fsspec transaction would write
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent, Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_state(1.0), target)
    assert seen == [(target.parent, target)]  # same folder, hence same filesystem: a rename, not a copy
    assert list(tmpdir.iterdir()) == []
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())  # permissions as a plain open() gives


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


class _CaptureTrainer(Callback):
    def __init__(self):
        self.trainer = None

    def on_train_start(self, trainer, pl_module):
        self.trainer = trainer


@pytest.mark.slow
def test_train_uses_the_atomic_io_and_removes_orphans_of_a_killed_write(tmp_path, monkeypatch):
    from runtime.checkpoint_io import AtomicCheckpointIO

    data = _sr_images(tmp_path / "data")
    orphan = tmp_path / "run" / "checkpoints" / ".last.ckpt.tmp-12345-deadbeef"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a checkpoint")
    keep = orphan.parent / "notes.txt"
    keep.write_text("not ours")
    cap = _CaptureTrainer()
    _with_callbacks(monkeypatch, cap)
    train(
        _sr_cfg(
            tmp_path / "run",
            data,
            ["model.psnr.iters=2", "model.gan.iters=0", "model.stages=[psnr]", "trainer.val_check_interval=2"],
        )
    )
    assert isinstance(cap.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not orphan.exists() and keep.exists()
    assert _load(orphan.parent / "last.ckpt")["iteration"] == 2


# ------------------------------------------------------------------------------------------------ item 6
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from runtime import run_lock
run_lock.acquire({folder!r})
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "SLURM_PROCID")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=str(REPO), folder=str(folder))],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_second_run_into_a_locked_folder_stops_naming_it_and_the_holder(tmp_path):
    from runtime.run_lock import RunFolderInUseError

    data = _sr_images(tmp_path / "data")
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        cfg = _sr_cfg(run_dir, data, ["model.stages=[psnr]", "model.psnr.iters=1", "trainer.val_check_interval=1"])
        with pytest.raises(RunFolderInUseError) as err:
            train(cfg)
        assert str(run_dir) in str(err.value) and f"pid {holder.pid}" in str(err.value)
        assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock"]  # nothing of the second run written
    finally:
        holder.kill()
        holder.wait()
    # The first run has ended (killed: the lock goes with the process): a run (or a resume) into the folder works.
    result = train(cfg)
    assert result["iteration"] == 1 and (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_cli_run_into_a_locked_folder_fails_before_hydra_writes_into_it(tmp_path):
    # The run dir goes through a ${hydra:...} interpolation, as the default one does (paths.root_dir).
    run_dir = tmp_path / "train"
    holder = _hold_lock(run_dir)
    try:
        env = {**os.environ, "WANDB_MODE": "disabled"}
        env.pop("LOCAL_RANK", None)
        proc = subprocess.run(
            [sys.executable, "train.py", *TINY_ESRGAN, f"hydra.run.dir={tmp_path}/${{hydra:job.name}}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f"run folder {run_dir} is in use" in proc.stdout and f"pid {holder.pid}" in proc.stdout, proc.stdout[-3000:]
    assert not (run_dir / ".hydra").exists()  # the first run's config is not overwritten


@pytest.mark.slow
def test_lock_is_reentrant_and_ddp_ranks_do_not_lock_each_other_out(tmp_path, monkeypatch):
    from runtime import run_lock

    folder = tmp_path / "run"
    assert run_lock.acquire(folder) and run_lock.acquire(folder)  # Hydra callback, then train(): same process
    run_lock.release(folder)
    holder = None
    try:
        # Still held by this process: another process is refused...
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER.format(repo=str(REPO), folder=str(folder))],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode != 0 and "RunFolderInUseError" in probe.stderr
        # ...but not a DDP rank of this run (Lightning's children, torchrun, srun ranks > 0).
        for var in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
            env = {**os.environ, var: "1"}
            rank = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    HOLDER.format(repo=str(REPO), folder=str(folder)).replace("time.sleep(120)", ""),
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert rank.returncode == 0, (var, rank.stderr)
    finally:
        run_lock.release(folder)
    holder = _hold_lock(folder)  # released: another process can take it now
    holder.kill()
    holder.wait()


# ------------------------------------------------------------------------------------------------ item 5
def _start_cli_run(run_dir: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    args = [
        *TINY_ESRGAN,
        f"data.train_dirs=[{data}]",
        f"data.val_dirs=[{data}]",
        "model.stages=[psnr]",
        "model.psnr.iters=100000",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run_dir}",
    ]
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_resumable_last_ckpt_and_exits_nonzero(tmp_path, signum, code):
    data = _sr_images(tmp_path / "data")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = _start_cli_run(run_dir, data)
    try:
        deadline = time.time() + 300
        while not last.exists():  # the first checkpoint (iteration 2): training is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, out[-3000:]
    saved = _load(last)
    assert saved["iteration"] >= 2 and saved["global_step"] == saved["iteration"]  # one step per PSNR batch
    import json

    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signum
    assert result["last_model_path"] == str(last) and result["iteration"] == saved["iteration"]
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]  # no temp files
    # Resume from it and train two more batches.
    n = saved["iteration"]
    resumed = train(
        _sr_cfg(
            tmp_path / "resume",
            data,
            [
                "model.stages=[psnr]",
                f"model.psnr.iters={n + 2}",
                "trainer.val_check_interval=2",
                "data.use_rot=false",
                "data.use_hflip=false",
                "data.dataset_enlarge_ratio=16",
                "seed=0",
                f"ckpt_path={last}",
            ],
        )
    )
    assert resumed["iteration"] == n + 2
    assert _load(resumed["last_model_path"])["global_step"] == n + 2


# ------------------------------------------------------------------------------------------------ item 7
def _truncated_png(path: Path, size: int = 48) -> Path:
    """A PNG whose header (and size) reads fine but whose pixel data is cut short."""
    rng = np.random.default_rng(3)
    write_png(path, (rng.random((size, size, 3)) * 255).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bomb_png(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG file whose header claims side x side pixels (10^10: PIL's decompression-bomb limit is ~1.8e8)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bomb_is_a_bad_image_naming_the_file(tmp_path):
    from datamodules.image_io import BadImageError, filter_images, image_size

    bomb = _bomb_png(tmp_path / "imgs" / "bomb.png")
    good = write_png(tmp_path / "imgs" / "good.png", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(BadImageError, match="bomb.png.*decompression bomb"):
        image_size(bomb)
    with pytest.warns(UserWarning, match="bomb.png"):
        assert filter_images([bomb, good], min_size=32) == [good]
    with pytest.raises(BadImageError, match="bomb.png"):
        filter_images([bomb, good], min_size=32, on_bad_image="error")


def test_sr_training_skips_undecodable_images_in_a_row_naming_them(tmp_path):
    from datamodules.image_io import BadImageError
    from datamodules.sr_datamodule import SRTrainDataset, SRValDataset

    folder = tmp_path / "imgs"
    _truncated_png(folder / "a_bad.png")
    _truncated_png(folder / "b_bad.png")
    _sr_images(folder / "c", n=1)
    ds = SRTrainDataset([folder], gt_size=32, seed=0)
    assert len(ds.files) == 3  # headers are fine: the scan keeps them
    with pytest.warns(UserWarning) as rec:
        item = ds[(0, 0)]  # a_bad, then b_bad, then the good one
    assert item["gt"].shape == (3, 32, 32)
    msgs = " ".join(str(w.message) for w in rec)
    assert "a_bad.png" in msgs and "b_bad.png" in msgs
    with pytest.raises(BadImageError, match="a_bad.png"):
        SRTrainDataset([folder], gt_size=32, on_bad_image="error")[(0, 0)]
    val = SRValDataset(folder, scale=4)
    with pytest.warns(UserWarning, match="a_bad.png"):
        assert val[0] is None
    with pytest.raises(BadImageError, match="b_bad.png"):
        SRValDataset(folder, scale=4, on_bad_image="error")[1]


@pytest.mark.slow
def test_sr_train_and_evaluate_finish_with_undecodable_images_under_warn(tmp_path):
    from evaluation.run import evaluate

    folder = tmp_path / "imgs"
    _sr_images(folder, n=2)
    _truncated_png(folder / "0_bad.png")
    _bomb_png(folder / "0_bomb.png")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        result = train(
            _sr_cfg(
                tmp_path / "run", folder, ["model.stages=[psnr]", "model.psnr.iters=3", "trainer.val_check_interval=3"]
            )
        )
    assert result["iteration"] == 3 and np.isfinite(result["metrics"]["val/psnr_y"])
    msgs = " ".join(str(w.message) for w in rec)
    assert "0_bad.png" in msgs and "0_bomb.png" in msgs
    cfg = compose_cfg(tmp_path / "eval", ["model=bicubic", f"data.test_dirs=[{folder}]"], config_name="eval")
    with pytest.warns(UserWarning, match="0_bad.png"):
        row = evaluate(cfg)["imgs"]
    assert row["images"] == 2


def test_face_training_and_validation_skip_undecodable_images(tmp_path):
    from datamodules.face_datamodule import FaceDataModule
    from datamodules.image_io import BadImageError

    faces = _faces(tmp_path / "faces", n=4)
    _truncated_png(faces / "000.png", size=128)  # replaces a good face
    _truncated_png(faces / "001.png", size=128)
    dm = FaceDataModule(str(faces), num_val=0, resolution=128, batch_size=2, num_workers=0, synthesis=False)
    dm.setup("fit")
    with pytest.warns(UserWarning) as rec:
        item = dm.train_set[(0, 0)]  # 000 and 001 are bad: 002
    assert int(item["index"]) == 2 and "000.png" in str(rec[0].message) and "001.png" in str(rec[1].message)
    val = dm._dataset(dm.train_set.files, train=False)
    with pytest.warns(UserWarning, match="000.png"):
        assert val[0] is None
    loader = dm._loader(val, 2, train=False)
    with pytest.warns(UserWarning):
        batches = list(loader)
    assert batches[0] is None and batches[1]["image"].shape[0] == 2  # the all-bad batch is dropped
    dm_err = FaceDataModule(str(faces), num_val=0, resolution=128, num_workers=0, synthesis=False, on_bad_image="error")
    dm_err.setup("fit")
    with pytest.raises(BadImageError, match="000.png"):
        dm_err.train_set[(0, 0)]
