"""The command that renders a batch's synthesised SC-FEGAN inputs to a PNG."""

import numpy as np
import pytest
from conftest import compose_cfg
from PIL import Image


@pytest.mark.slow
def test_render_writes_a_grid_of_all_channels(tmp_path):
    from scripts.render_synthesis import render

    out = tmp_path / "grid.png"
    cfg = compose_cfg(
        tmp_path, ["data=faces_demo", f"out={out}", "num_images=3", "split=val"], config_name="render_synthesis"
    )
    assert render(cfg) == str(out)
    grid = np.array(Image.open(out))
    assert grid.shape == (3 * 128, 6 * 128, 3) and grid.dtype == np.uint8
    cols = [grid[:128, i * 128 : (i + 1) * 128] for i in range(6)]
    mask = cols[2][..., 0] > 127
    assert 0 < mask.mean() < 1  # a real mask
    assert np.all(cols[1][mask] == 255)  # masked input is white where erased
    assert np.all(cols[3][~mask] == 0) and np.all(cols[4][~mask] == 0)  # sketch and colour only inside the mask
    # the validation masks are fixed: rendering again gives the same picture (replacing it needs overwrite=true)
    with pytest.raises(FileExistsError, match="grid.png"):
        render(cfg)
    render(
        compose_cfg(
            tmp_path,
            ["data=faces_demo", f"out={out}", "num_images=3", "split=val", "overwrite=true"],
            config_name="render_synthesis",
        )
    )
    assert np.array_equal(np.array(Image.open(out)), grid)


@pytest.mark.slow
def test_render_writes_stats_json(tmp_path):
    import json

    import torch

    from scripts.render_synthesis import render

    out = tmp_path / "grid.png"
    cfg = compose_cfg(
        tmp_path, ["data=faces_demo", f"out={out}", "num_images=3", "split=val"], config_name="render_synthesis"
    )
    render(cfg)
    stats = json.loads((tmp_path / "grid_stats.json").read_text())
    grid = np.array(Image.open(out))
    assert stats["images"] == 3 and stats["resolution"] == [128, 128]
    cov = stats["mask_coverage"]
    for i in range(3):  # the mask column of the grid has the recorded coverage
        mask = grid[i * 128 : (i + 1) * 128, 2 * 128 : 3 * 128, 0] > 127
        assert cov["per_image"][i] == mask.mean()
    assert sum(b["count"] for b in cov["histogram"]) == 3
    assert [b["range"] for b in cov["histogram"]][1:7] == [
        [0.01, 0.1],
        [0.1, 0.2],
        [0.2, 0.3],
        [0.3, 0.4],
        [0.4, 0.5],
        [0.5, 0.6],
    ]
    assert all(0 <= d <= 1 for d in stats["edge_density"]["per_image"])
    assert all(r >= 1 for r in stats["color_regions"]["per_image"])
    # the user-stroke (evaluation) masks render too, much smaller than the training ones
    render(
        compose_cfg(
            tmp_path / "u",
            ["data=faces_demo", f"out={tmp_path / 'u.png'}", "num_images=3", "split=val", "masks=user_strokes"],
            config_name="render_synthesis",
        )
    )
    user = json.loads((tmp_path / "u_stats.json").read_text())
    assert user["masks"] == "user_strokes" and max(user["mask_coverage"]["per_image"]) < 0.15
    assert torch.tensor(user["mask_coverage"]["per_image"]).gt(0).all()


def test_coverage_histogram_and_region_count_on_constructed_cases():
    import torch

    from synthesis.stats import count_color_regions, coverage_histogram

    hist = coverage_histogram([0.0, 0.005, 0.01, 0.05, 0.1, 0.35, 0.6, 0.9])
    counts = {tuple(b["range"]): b["count"] for b in hist}
    assert counts[(0.0, 0.01)] == 3 and counts[(0.01, 0.1)] == 2 and counts[(0.3, 0.4)] == 1
    assert counts[(0.5, 0.6)] == 1 and counts[(0.6, 1.0)] == 1 and sum(counts.values()) == 8
    # two same-coloured squares apart = two regions, plus the background around them
    c = torch.zeros(3, 32, 32)
    c[:, 2:8, 2:8] = 0.5
    c[:, 20:30, 20:30] = 0.5
    assert count_color_regions(c) == 3
    c[0, 20:30, 25:30] = 0.7  # a different colour in one square: one more region
    assert count_color_regions(c) == 4
    # a checkerboard of 8x8 blocks: 16 regions (diagonal neighbours are not connected)
    yy, xx = np.mgrid[0:32, 0:32]
    board = (((yy // 8) + (xx // 8)) % 2).astype(np.float32)
    assert count_color_regions(np.stack([board] * 3, -1)) == 16
    assert count_color_regions(np.zeros((8, 8, 3))) == 1


@pytest.mark.slow
def test_render_draws_with_the_data_configs_sketch_detector(tmp_path):
    """data.synthesis.sketch.hed_weights=... renders HED sketches (how docs/synthesis_demo.png is made, issue 22); the
    statistics say which detector drew, and the sketch row differs from the classic detector's."""
    import json

    import torch

    from archs.hed import HED
    from scripts.render_synthesis import render

    torch.manual_seed(0)
    hed_file = tmp_path / "network-bsds500.pytorch"  # random weights in the sniklaus/pytorch-hed layout
    torch.save(HED().state_dict(), hed_file)
    grids, stats = {}, {}
    for name, extra in (("classic", []), ("hed", [f"data.synthesis.sketch.hed_weights={hed_file}"])):
        out = tmp_path / f"{name}.png"
        args = ["data=faces_demo", f"out={out}", "num_images=2", "split=val", *extra]
        render(compose_cfg(tmp_path / name, args, config_name="render_synthesis"))
        grids[name] = np.array(Image.open(out))
        stats[name] = json.loads((tmp_path / f"{name}_stats.json").read_text())
    assert stats["classic"]["sketch_detector"] == "classic" and stats["hed"]["sketch_detector"] == "hed"
    assert str(hed_file) in stats["hed"]["sketch_detector_reason"]
    same = [slice(None), slice(0, 3 * 128)]  # image, masked input and mask columns: the same masks
    assert np.array_equal(grids["hed"][tuple(same)], grids["classic"][tuple(same)])
    assert not np.array_equal(grids["hed"][:, 3 * 128 : 4 * 128], grids["classic"][:, 3 * 128 : 4 * 128])
