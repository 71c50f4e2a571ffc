"""benchmarks/device_check.py --quick: the device check's code paths on CPU at toy sizes, and what it writes.

Times are not checked (this CPU says nothing about a GPU); the cases, their keys and the report's structure are.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import device_check

ROW_KEYS = {"case", "kind", "stage", "precision", "channels_last", "compile", "status", "est_s", "wall_s"}
TRAIN_KEYS = {
    "img_s",
    "ms_it",
    "peak_mem_gib",
    "gflop_it",
    "tflops",
    "share_bf16_peak",
    "synthesis_share",
    "first_iter_s",
    "batch",
}


def test_full_plan_covers_the_grid_and_fits_the_budget_in_priority_order():
    cases = device_check.plan(quick=False)
    esr = [(c["stage"], c["precision"], c["channels_last"], c["compile"]) for c in cases if c["kind"] == "esrgan"]
    assert len(esr) == len(set(esr)) == 16  # 2 stages x fp32/bf16 x channels_last x compile
    assert {c["kind"] for c in cases} == {"esrgan", "scfegan", "edit", "realesrgan"}
    first_compiled = next(i for i, c in enumerate(cases) if c["compile"])
    assert all(not c["compile"] for c in cases[:first_compiled])  # every eager case before any compile
    gan_fast = next(c for c in cases if c["kind"] == "esrgan" and c["compile"])
    assert (gan_fast["stage"], gan_fast["precision"], gan_fast["channels_last"]) == ("gan", "bf16-mixed", True)
    assert sum(c["est_s"] for c in cases[: first_compiled + 2]) < 390  # eager grid + the key compiled cases fit


@pytest.mark.slow
def test_quick_run_writes_json_and_markdown(tmp_path, capsys):
    result = device_check.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "estimated" in out and "budget" in out  # the time budget estimate is printed first
    data = json.loads((tmp_path / "device_check.json").read_text())
    assert data["quick"] is True and data["device_type"] == "cpu" and data["rows"]
    assert {r["kind"] for r in data["rows"]} == {"esrgan", "scfegan", "edit", "realesrgan"}
    assert all(r["status"] == "ok" for r in data["rows"]), [r["status"] for r in data["rows"]]
    assert any(r["compile"] for r in data["rows"]) and any(r["channels_last"] for r in data["rows"])
    assert {r["precision"] for r in data["rows"]} == {"32-true", "bf16-mixed"}
    for r in data["rows"]:
        assert ROW_KEYS <= set(r)
        if r["kind"] == "edit":
            assert {"ms", "ms_min", "first_call_s"} <= set(r) and r["ms"] > 0
        else:
            assert TRAIN_KEYS <= set(r) and r["img_s"] > 0 and r["gflop_it"] > 0
            assert 0 <= r["synthesis_share"] and r["share_bf16_peak"] is None  # no peak known for a CPU
    s = data["summary"]
    assert set(s["target_met"]) == set(device_check.TARGETS)
    assert all(v is None for v in s["target_met"].values())  # nothing is claimed from a CPU run
    assert list(s["degradation_share"]) == ["Real-ESRGAN gan fp32"]  # c2's degradation, timed on the device
    assert 0 < s["degradation_share"]["Real-ESRGAN gan fp32"] < 1
    md = (tmp_path / "device_check.md").read_text()
    assert md.startswith("# Device check")
    assert "| case | img/s | ms/it | peak mem GiB | TFLOP/s | share of bf16 peak |" in md
    for r in data["rows"]:
        assert f"| {r['case']} |" in md
    assert "Real-ESRGAN degradation share of an iteration: Real-ESRGAN gan fp32" in md
    assert "target >= 35 %: not measured" in md and "target < 10 ms: not measured" in md
    assert result["rows"] == data["rows"]


def test_budget_skips_cases_that_do_not_fit(tmp_path):
    data = device_check.main(["--quick", "--out", str(tmp_path), "--budget-s", "0"])
    assert data["rows"] and all(r["status"].startswith("skipped (time budget") for r in data["rows"])
    assert "skipped (time budget" in (tmp_path / "device_check.md").read_text()
