"""Logs a person reads (issue 15 item 6): the validation grid of every validation image (capped), labelled, with the
raw G beside the EMA G; wandb runs grouped by experiment and named by run, the model keys once in the config; a
progress bar that does not read ``Epoch 0/-2``."""

import glob
import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_ESRGAN, compose_cfg

from ops.image_grid import LABEL_HEIGHT, labelled_grid

SET5 = REPO / "data" / "demo" / "val" / "Set5"


def test_labelled_grid_aligns_rows_of_different_sizes_under_labels():
    a = torch.full((3, 4, 6), 1.0)
    b = torch.zeros(3, 8, 5, dtype=torch.uint8).permute(1, 2, 0) + 7  # HxWx3 uint8 taken as is
    grid = labelled_grid([[a, a], [b, b]], ["left", "right"])
    assert grid.dtype == torch.uint8 and grid.shape == (LABEL_HEIGHT + 2 * 8, 2 * 6, 3)
    assert (grid[LABEL_HEIGHT : LABEL_HEIGHT + 4, 6:12] == 255).all()  # row 0, column 1, top-left of its cell
    assert (grid[LABEL_HEIGHT + 4 : LABEL_HEIGHT + 8, 0:6] == 0).all()  # padding below the smaller image
    assert (grid[LABEL_HEIGHT + 8 :, 0:5] == 7).all()
    assert grid[:LABEL_HEIGHT].any()  # the labels are drawn
    with pytest.raises(ValueError, match="left | right"):
        labelled_grid([[a]], ["left", "right"])
    big = labelled_grid([[torch.ones(3, 40, 20)]], ["x"], max_side=10)  # 2K images do not make a 265 MB grid
    assert big.shape == (LABEL_HEIGHT + 10, 5, 3)


def test_progress_bar_does_not_read_epoch_minus_two():
    from runtime.training import instantiate_callbacks

    cfg = compose_cfg(Path("/tmp/unused"), ["experiment=demo"])
    (bar,) = [c for c in instantiate_callbacks(cfg.callbacks) if "ProgressBar" in type(c).__name__]
    bar._trainer = SimpleNamespace(max_epochs=-1, lightning_module=SimpleNamespace(total_iters=1600))
    text = bar._get_train_description(0)
    assert "-2" not in text and text.strip() == "Epoch 0 (run: 1600 iterations)"


@pytest.mark.slow
def test_grid_of_every_validation_image_labelled_and_wandb_run_named_once(tmp_path, monkeypatch):
    from runtime.training import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    cfg = compose_cfg(
        run,
        [
            *[a for a in TINY_ESRGAN if a != "logger=none"],
            "logger=wandb",
            f"data.val_dirs=[{SET5}]",
            "model.psnr.iters=2",
            "model.gan.iters=1",
            "trainer.val_check_interval=2",
        ],
    )
    train(cfg)

    # Every Set5 image, one row each: bicubic | SR (EMA G) | SR (raw G) | HR, cells of the largest size.
    hrs, mod = [], int(cfg.data.gt_mod)  # validation HR is mod-cropped (BasicSR GTmod12)
    for f in sorted(SET5.iterdir()):
        img = cv2.imread(str(f))[..., ::-1]
        hrs.append(img[: img.shape[0] // mod * mod, : img.shape[1] // mod * mod])
    cell_h, cell_w = max(h.shape[0] for h in hrs), max(h.shape[1] for h in hrs)
    png = sorted((run / "samples").glob("iter*_Set5.png"))[-1]
    grid = cv2.imread(str(png))[..., ::-1]
    assert grid.shape == (LABEL_HEIGHT + len(hrs) * cell_h, 4 * cell_w, 3)
    rows_hr = []
    for i in range(len(hrs)):
        y = LABEL_HEIGHT + i * cell_h
        rows_hr.append(grid[y : y + cell_h, 3 * cell_w : 4 * cell_w])
    for hr in hrs:  # each image's HR is in some row's last column
        assert any(np.array_equal(r[: hr.shape[0], : hr.shape[1]], hr) for r in rows_hr)
    assert all(grid[:LABEL_HEIGHT, j * cell_w : (j + 1) * cell_w].any() for j in range(4))  # four labels

    # wandb: group = the experiment, name = the run folder; the model keys only under `model`.
    from test_wandb import read_wandb_run

    run_dir = Path(glob.glob(str(run / "wandb" / "offline-run-*"))[0])
    record = read_wandb_run(next(run_dir.glob("run-*.wandb")))
    config = record["config"]
    assert "generator" not in config and "psnr" not in config and config["model"]["psnr"]["iters"] == 2
    assert set(config) >= {"model", "data", "trainer"}
    info = __import__("json").loads((run / "wandb_run.json").read_text())
    assert info["group"] == "demo" and info["name"] == os.path.basename(run)
    assert (record["run"].run_group, record["run"].display_name) == ("demo", os.path.basename(run))
