"""The command that renders Real-ESRGAN's degraded training LR beside its GT (issue 15 item 7)."""

import numpy as np
import pytest
from conftest import compose_cfg
from PIL import Image

from ops.image_grid import LABEL_HEIGHT


def test_render_degradations_shows_degraded_lr_beside_gt(tmp_path):
    from scripts.render_degradations import render

    out = tmp_path / "deg.png"
    args = ["data=realesrgan_demo", f"out={out}", "num_images=3", "data.crop_pad_size=64", "data.gt_size=32"]
    cfg = compose_cfg(tmp_path, args, config_name="render_degradations")
    assert render(cfg) == str(out)
    grid = np.array(Image.open(out))
    assert grid.shape == (LABEL_HEIGHT + 3 * 32, 3 * 32, 3) and grid.dtype == np.uint8
    assert all(grid[:LABEL_HEIGHT, j * 32 : (j + 1) * 32].any() for j in range(3))  # labelled columns
    for i in range(3):
        y = LABEL_HEIGHT + i * 32
        nearest, bicubic, gt = (grid[y : y + 32, j * 32 : (j + 1) * 32].astype(float) for j in range(3))
        assert gt.std() > 0 and np.abs(bicubic - gt).mean() > 1  # degraded: not the GT
        # nearest x4: constant 4x4 blocks of the LR
        assert np.array_equal(nearest, np.repeat(np.repeat(nearest[::4, ::4], 4, 0), 4, 1))
    with pytest.raises(FileExistsError, match="deg.png"):  # predict.py's rules: overwrite=true to replace
        render(cfg)
    with pytest.raises(ValueError, match="Real-ESRGAN data config"):
        render(compose_cfg(tmp_path, ["data=sr_demo", f"out={tmp_path / 'x.png'}"], config_name="render_degradations"))
