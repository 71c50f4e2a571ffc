"""Summarise a finished (or stopped) Hydra sweep of train.py: ``python -m scripts.sweep_summary <sweep dir>``
writes ``summary.csv`` and prints the table (the same as the end-of-sweep summary of runtime/sweeps.py)."""

import tv_compat

import argparse

from runtime.sweeps import RESULT_FILE, write_summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Summarise a finished (or stopped) Hydra sweep of train.py")
    ap.add_argument("sweep_dir")
    ap.add_argument("--direction", choices=("maximize", "minimize"), default=None)
    args = ap.parse_args(argv)
    if write_summary(args.sweep_dir, args.direction) is None:
        raise SystemExit(f"no {RESULT_FILE} under {args.sweep_dir}")


if __name__ == "__main__":
    main()
