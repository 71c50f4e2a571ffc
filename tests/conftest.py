"""Shared fixtures.  ``tv_compat`` must be imported before anything that imports torchvision."""

import tv_compat  # must stay first

import os
from pathlib import Path

import pytest

# TEST_TORCH_THREADS=N runs the suite with torch.set_num_threads(N) in this process and N intra-op threads in every
# subprocess it starts (train.py, predict.py, DDP workers: torch reads OMP_NUM_THREADS / MKL_NUM_THREADS at start).
# Float results must not depend on it (issue 23): check with N=1 and N=2, and with ATEN_CPU_CAPABILITY=default.
if os.environ.get("TEST_TORCH_THREADS"):
    import torch

    _threads = int(os.environ["TEST_TORCH_THREADS"])
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    # Through the environment only, per test: never leak wandb's global mode between tests.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    return path


CONF_DIR = REPO / "conf"


def compose_cfg(tmp_path: Path, overrides: list[str] = (), config_name: str = "train"):
    """Compose a config as `python train.py ...` would, with outputs under ``tmp_path``.

    Sets HydraConfig so that ``${hydra:...}`` interpolations resolve outside ``@hydra.main``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from runtime.training import register

    register()  # the config resolvers, as train.py registers them before Hydra composes
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.runtime.cwd = str(REPO)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


# A tiny ESRGAN that trains in seconds on CPU.  The perceptual VGG is RANDOM (pretrained weights cannot
# be downloaded here): the loss is then not perceptual, but the code path is the real one.
TINY_ESRGAN = [
    "experiment=demo",
    "logger=none",
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
]


def write_png(path: Path, array) -> Path:
    """Write a uint8/uint16 array as PNG (grayscale HxW, RGB HxWx3 or RGBA HxWx4)."""
    import cv2
    import numpy as np

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr))
    return path
