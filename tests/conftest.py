"""Shared fixtures.  ``tv_compat`` must be imported before anything that imports torchvision."""

import tv_compat  # noqa: F401  (must stay first)

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    # Through the environment only, per test: never leak wandb's global mode between tests.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    return path
