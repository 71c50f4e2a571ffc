"""benchmarks/data_loader.py runs on a small synthetic folder (its figures are printed, not asserted)."""

import sys

import cv2
import numpy as np
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_loader_benchmark_runs_without_shared_data(tmp_path, capsys):
    import data_loader

    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), rng.integers(0, 256, (300, 320, 3), dtype=np.uint8))
    rows = data_loader.main(
        [
            "--sr-dir",
            str(tmp_path),
            "--faces-dir",
            str(tmp_path / "absent"),
            "--items",
            "4",
            "--batch",
            "2",
            "--rounds",
            "1",
            "--no-flops",
        ]
    )
    out = capsys.readouterr().out
    assert set(rows) == {"sr_gt128", "sr_gt256"} and "skipped faces" in out and "load average" in out
    assert all(r["worker_img_s"] > 0 and r["device_part_cpu_img_s"] > 0 for r in rows.values())
