"""The inference entry points set ``OMP_WAIT_POLICY=PASSIVE`` (issue 21; figures: benchmarks/omp_wait_policy.py)
before anything loads torch (libgomp reads the variable once, when it loads), and keep a value the user set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["predict.py", "app.py", "benchmarks/cpu_inference.py", "benchmarks/app_edit.py"]

# Runs a script as `python SCRIPT` would, and stops it at its first import outside the standard library (tv_compat,
# which loads torch; or anything else that could load libgomp), printing OMP_WAIT_POLICY as it is at that moment.
PROBE = """
import os, runpy, sys

class Stop(Exception):
    pass

class Probe:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in sys.stdlib_module_names:
            print("FIRST", name, os.environ.get("OMP_WAIT_POLICY"))
            raise Stop

script = sys.argv[1]
sys.argv = [script]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
sys.meta_path.insert(0, Probe())
try:
    runpy.run_path(script, run_name="__main__")
except Stop:
    pass
else:
    print("NO IMPORT")
"""


def _policy_at_first_import(script: str, user_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value is not None:
        env["OMP_WAIT_POLICY"] = user_value
    out = subprocess.run(
        [sys.executable, "-c", PROBE, script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("FIRST")]
    assert lines, out.stdout + out.stderr
    return lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_passive_before_torch_loads(script):
    line = _policy_at_first_import(script, None)
    assert line.endswith(" PASSIVE"), f"{script}: {line}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_users_value_is_kept(script):
    line = _policy_at_first_import(script, "active")
    assert line.endswith(" active"), f"{script}: {line}"
