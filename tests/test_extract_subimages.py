"""`python -m scripts.extract_subimages`: BasicSR's sub-image windows and names, refusal of existing output."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO

from scripts.extract_subimages import crop_starts, sub_name, windows


def run_cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.extract_subimages", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_crop_starts_hand_computed():
    # DIV2K-like 2040 px side, crop 480 step 240: 0..1440 every 240 (1440 + 480 = 1920 < 2040), then 1560 at the border
    assert crop_starts(2040, 480, 240) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert crop_starts(100, 48, 24) == [0, 24, 48, 52]  # 100 - (48 + 48) = 4 > 0 -> border window at 52
    assert crop_starts(96, 48, 24) == [0, 24, 48]  # exact fit: no extra window
    assert crop_starts(100, 48, 24, thresh_size=4) == [0, 24, 48]  # 4 px left <= thresh_size: dropped
    assert crop_starts(47, 48, 24) == []
    assert windows(70, 100, 48, 24, 0) == [(0, 0), (0, 24), (0, 48), (0, 52), (22, 0), (22, 24), (22, 48), (22, 52)]
    assert sub_name(__import__("pathlib").Path("0001x4.png"), 7) == "0001_s007.png"


def test_cli_writes_basicsr_names_and_pixels(tmp_path):
    src, out = tmp_path / "hr", tmp_path / "hr_sub"
    src.mkdir()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(src / "0001.png"), a)
    cv2.imwrite(str(src / "0002.png"), b)
    cv2.imwrite(str(src / "0003.png"), a[:10, :10])  # too small: skipped with a note
    run_cli("--input", src, "--output", out, "--crop-size", 48, "--step", 24, "--workers", 2)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"0001_s{k:03d}.png" for k in range(1, 9)] + ["0002_s001.png"]
    for k, (y, x) in enumerate(windows(70, 100, 48, 24, 0), start=1):
        assert np.array_equal(
            cv2.imread(str(out / f"0001_s{k:03d}.png"), cv2.IMREAD_UNCHANGED), a[y : y + 48, x : x + 48]
        )
    assert np.array_equal(cv2.imread(str(out / "0002_s001.png"), cv2.IMREAD_UNCHANGED), b)
    assert sorted(p.name for p in src.iterdir()) == ["0001.png", "0002.png", "0003.png"]  # input untouched

    # An existing output is refused and kept; --skip-existing completes an interrupted run.
    before = (out / "0001_s001.png").read_bytes()
    proc = run_cli("--input", src, "--output", out, "--crop-size", 48, "--step", 24, check=False)
    assert proc.returncode != 0 and str(out) in proc.stderr
    (out / "0001_s008.png").unlink()
    run_cli("--input", src, "--output", out, "--crop-size", 48, "--step", 24, "--skip-existing", "--workers", 1)
    assert (out / "0001_s008.png").is_file() and (out / "0001_s001.png").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "args, named",
    [
        (["--crop-size", 0], "--crop-size"),
        (["--step", 0], "--step"),
    ],
)
def test_bad_args_named(tmp_path, args, named):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    proc = run_cli("--input", tmp_path / "in", "--output", tmp_path / "o", *args, check=False)
    assert proc.returncode != 0 and named in proc.stderr


def test_missing_input_and_output_inside_input_refused(tmp_path):
    proc = run_cli("--input", tmp_path / "nope", "--output", tmp_path / "o", check=False)
    assert proc.returncode != 0 and "nope" in proc.stderr
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    proc = run_cli("--input", tmp_path / "in", "--output", tmp_path / "in" / "sub", check=False)
    assert proc.returncode != 0 and "inside the input" in proc.stderr
