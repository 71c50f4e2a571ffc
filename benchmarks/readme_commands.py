"""Each README command as printed, with its exit code, wall time and CPU time (figures, not a test).

    python benchmarks/readme_commands.py [--only REGEX] [--shrink] [--timeout S]

Runs the commands ``tests/test_readme_commands.py`` runs (its ``RUN`` table, the same README parser, the same
fresh copy of the tracked files and the same user inputs such as ``photos/``), but **verbatim**: without the
test's size-shrinking overrides unless ``--shrink`` is given.  CPU time is the command's own (user + system of
the process tree, from ``resource.getrusage(RUSAGE_CHILDREN)``), which says more than wall time on shared cores;
the load average is printed beside each row.
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The README parser and its RUN table live with the test.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from test_readme_commands import REQUIRES, RUN, _user_inputs, argv, shrink
from test_user_commands import repo_copy


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="run only the commands matching this regex")
    p.add_argument("--shrink", action="store_true", help="append the test's size-shrinking overrides")
    p.add_argument("--timeout", type=float, default=3600)
    a = p.parse_args()

    rows = []
    for cmd in RUN:
        if a.only and not re.search(a.only, cmd):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            repo = repo_copy(Path(tmp) / "repo")
            _user_inputs(cmd, repo)
            extra_env, args = argv(cmd)
            if not a.shrink:
                n = len(shrink(cmd))
                args = args[: len(args) - n] if n else args
            env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), **extra_env}
            env.pop("LOCAL_RANK", None)
            if cmd in REQUIRES:  # the command it reads from, first, in the same copy (not counted)
                first_env, first = argv(REQUIRES[cmd])
                if not a.shrink:
                    first = first[: len(first) - len(shrink(REQUIRES[cmd]))]
                subprocess.run(first, cwd=repo, env={**env, **first_env}, capture_output=True, timeout=a.timeout)
            load0 = os.getloadavg()[0]
            cpu0, t0 = children_cpu(), time.time()
            try:
                rc = subprocess.run(args, cwd=repo, env=env, capture_output=True, timeout=a.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            wall, cpu = time.time() - t0, children_cpu() - cpu0
            missing = [pat for pat in RUN[cmd] if not list(repo.glob(pat))]
        rows.append((cmd, rc, wall, cpu, load0, os.getloadavg()[0], missing))
        print(
            f"exit {rc}  {wall:7.1f} s wall  {cpu:7.1f} CPU-s  load {load0:.2f}->{rows[-1][5]:.2f}  {cmd}", flush=True
        )
        if missing:
            print(f"    missing: {missing}", flush=True)

    print(f"\n{'shrunk' if a.shrink else 'verbatim'}, {os.cpu_count()} CPUs")
    print("| command | exit | wall s | CPU s | load (start/end) |\n|---|---|---|---|---|")
    for cmd, rc, wall, cpu, l0, l1, missing in rows:
        flag = f" (missing {', '.join(missing)})" if missing else ""
        print(f"| `{cmd}` | {rc}{flag} | {wall:.0f} | {cpu:.0f} | {l0:.1f} / {l1:.1f} |")


if __name__ == "__main__":
    main()
