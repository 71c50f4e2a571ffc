"""Seeded evaluation mask sets: synthesis/mask_presets.py and `python -m scripts.make_eval_masks`."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from synthesis.mask_presets import LAMA_PRESETS, LamaMask, build_preset, coverage_bin, lama_params
from synthesis.masks import sample_rng


def run_cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.make_eval_masks", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def read_set(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    run_cli("--preset", "thin", "--num", 6, "--size", 64, "--seed", 3, "--out", tmp_path / "a")
    run_cli("--preset", "thin", "--num", 6, "--size", 64, "--seed", 3, "--out", tmp_path / "b")
    run_cli("--preset", "thin", "--num", 6, "--size", 64, "--seed", 4, "--out", tmp_path / "c")
    a, b, c = read_set(tmp_path / "a"), read_set(tmp_path / "b"), read_set(tmp_path / "c")
    assert len(a) == 7 and a.keys() == b.keys()
    for name in a:
        if name != "manifest.json":  # the manifest records --out
            assert a[name] == b[name], name
    assert any(a[n] != c[n] for n in a if n != "manifest.json")


def test_mask_depends_on_index_not_batch():
    module, _ = build_preset("medium", 64)
    whole = module(torch.zeros(5, 1, 64, 64), torch.arange(5), seed=1)
    alone = module(torch.zeros(1, 1, 64, 64), torch.tensor([3]), seed=1)
    assert torch.equal(whole[3], alone[0])


def test_manifest_matches_files(tmp_path):
    out = tmp_path / "ff"
    run_cli("--preset", "free_form", "--num", 8, "--size", 64, "--seed", 0, "--out", out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["preset"] == "free_form" and man["seed"] == 0 and man["num"] == 8 and man["size"] == [64, 64]
    assert man["generator_version"] and "source" in man["parameters"]
    assert sorted(f["file"] for f in man["files"]) == sorted(p.name for p in out.glob("*.png"))
    counts = {}
    for f in man["files"]:
        data = (out / f["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        arr = np.asarray(Image.open(out / f["file"]))
        assert arr.shape == (64, 64) and set(np.unique(arr)) <= {0, 255}
        assert f["coverage"] == pytest.approx((arr == 255).mean(), abs=0)
        counts[f["bin"]] = counts.get(f["bin"], 0) + 1
    assert {k: v for k, v in man["counts_per_bin"].items() if v} == counts
    assert sum(man["counts_per_bin"].values()) == 8


@pytest.mark.parametrize("preset", ["thin", "medium", "thick"])
def test_lama_presets_respect_bounds(preset):
    p, _ = lama_params(preset, 256)
    module = LamaMask(p)
    masks = module(torch.zeros(24, 1, 256, 256), torch.arange(24), seed=0)
    cov = masks.flatten(1).mean(1)
    assert (cov <= 0.5).all() and (cov > 0).all()
    # The sampled geometry within LaMa's ranges (masks.py: widths 5 + randint(max_width), 10 + randint(max_len),
    # min_times .. max_times + 1 strokes of 1-5 segments, ends truncated to int: +-1.5 px; boxes of
    # bbox_min_size .. bbox_max_size px).
    kinds = set()
    for i in range(60):
        kind, rows = module.sample(sample_rng(0, i, 0, 0, 20), 256, 256)
        kinds.add(kind)
        if kind == "strokes":
            assert p.min_times <= len(rows) and len(rows) <= 5 * (p.max_times + 1)
            for x0, y0, x1, y1, w in rows:
                assert 5 <= w <= p.max_width + 4
                length = math.hypot(x1 - x0, y1 - y0)
                assert 10 - 1.5 <= length <= p.max_len + 9 + 1.5 or x1 in (0, 256) or y1 in (0, 256)
        else:
            assert p.box_min_times <= len(rows) <= p.box_max_times
            for x, _y, bw, bh in rows:
                assert p.bbox_min_size <= bw <= p.bbox_max_size and p.bbox_min_size <= bh <= p.bbox_max_size
                assert x >= p.box_margin and x + bw <= 256 - p.box_margin
    assert kinds == ({"strokes"} if preset == "thin" else {"strokes", "boxes"})


def test_thin_is_thinner_than_thick():
    thin = LamaMask(lama_params("thin", 256)[0])
    thick = LamaMask(lama_params("thick", 256)[0])
    w_thin = [r[4] for i in range(20) for r in thin.sample(sample_rng(0, i, 0, 0, 20), 256, 256)[1]]
    w_thick = [r[4] for i in range(20) for r in thick.sample(sample_rng(0, i, 0, 0, 20), 256, 256)[1] if len(r) == 5]
    assert max(w_thin) <= 14 and np.mean(w_thick) > 3 * np.mean(w_thin)


def test_box_raster_is_the_drawn_boxes():
    module = LamaMask(lama_params("thick", 256)[0])
    for i in range(40):
        kind, rows = module.sample(sample_rng(0, i, 0, 0, 20), 256, 256)
        if kind == "boxes":
            break
    expect = np.zeros((256, 256), bool)
    for x, y, bw, bh in rows:
        expect[y : y + bh, x : x + bw] = True
    assert np.array_equal(module._render(kind, rows, 256, 256)[0, 0].numpy(), expect)


def test_sizes_use_lama_configs_or_scale():
    assert lama_params("thick", 512)[0] is LAMA_PRESETS["thick", 512]
    p, source = lama_params("thin", 128)
    assert p.max_width == 5 and p.max_len == 20 and p.max_times == 50 and "128/256" in source


def test_coverage_bins():
    assert [coverage_bin(c) for c in (0.0, 0.05, 0.1, 0.1000001, 0.5, 0.55, 1.0)] == [0, 0, 0, 1, 4, 5, 9]


def test_user_strokes_preset(tmp_path):
    run_cli("--preset", "user_strokes", "--num", 3, "--size", 128, "--out", tmp_path / "u")
    man = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert all(0 < f["coverage"] < 0.2 for f in man["files"])


def test_existing_output_refused_and_kept(tmp_path):
    out = tmp_path / "thin"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    proc = run_cli("--preset", "thin", "--num", 2, "--size", 64, "--out", out, check=False)
    assert proc.returncode != 0 and str(out) in proc.stderr and "--overwrite" in proc.stderr
    proc = run_cli("--preset", "thin", "--num", 2, "--size", 64, "--out", out, "--overwrite", check=False)
    assert proc.returncode != 0 and "not a mask set" in proc.stderr
    assert (out / "mine.txt").read_text() == "keep"


def test_overwrite_replaces_own_set(tmp_path):
    out = tmp_path / "m"
    run_cli("--preset", "thin", "--num", 3, "--size", 64, "--out", out)
    run_cli("--preset", "thin", "--num", 2, "--size", 64, "--out", out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left


@pytest.mark.parametrize(
    "args, named",
    [
        (["--preset", "wide", "--num", 2], "--preset 'wide'"),
        (["--preset", "thin", "--num", 0], "--num 0"),
        (["--preset", "thin", "--num", 2, "--size", 8], "--size 8"),
        (["--preset", "thin", "--num", 2, "--seed", -1], "--seed -1"),
    ],
)
def test_bad_args_named(tmp_path, args, named):
    proc = run_cli(*args, "--out", tmp_path / "x", check=False)
    assert proc.returncode != 0 and named in proc.stderr
    assert not (tmp_path / "x").exists()
