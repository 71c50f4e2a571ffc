"""The command that renders a batch's synthesised SC-FEGAN inputs to a PNG."""

import numpy as np
from PIL import Image

from conftest import compose_cfg


def test_render_writes_a_grid_of_all_channels(tmp_path):
    from scripts.render_synthesis import render

    out = tmp_path / "grid.png"
    cfg = compose_cfg(tmp_path, ["data=faces_demo", f"out={out}", "num_images=3", "split=val"],
                      config_name="render_synthesis")
    assert render(cfg) == str(out)
    grid = np.array(Image.open(out))
    assert grid.shape == (3 * 128, 6 * 128, 3) and grid.dtype == np.uint8
    cols = [grid[:128, i * 128:(i + 1) * 128] for i in range(6)]
    mask = cols[2][..., 0] > 127
    assert 0 < mask.mean() < 1  # a real mask
    assert np.all(cols[1][mask] == 255)  # masked input is white where erased
    assert np.all(cols[3][~mask] == 0) and np.all(cols[4][~mask] == 0)  # sketch and colour only inside the mask
    # the validation masks are fixed: rendering again gives the same picture
    render(cfg)
    assert np.array_equal(np.array(Image.open(out)), grid)
