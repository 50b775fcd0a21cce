"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRAD_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
NO_DATA_REASON = f"real chest X-rays not found at {SHARED_DATA} (set CXRAD_SHARED_DATA)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``data`` skip, with the reason, when ../shared/data is absent."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=NO_DATA_REASON)
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data (``../shared/data``); tests using it must be marked ``data``."""
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_DATA_REASON)
    return SHARED_DATA


@pytest.fixture(scope="session")
def pediatric_root(shared_data: Path) -> Path:
    return shared_data / "kaggle-pediatric-pneumonia"


@pytest.fixture(scope="session")
def fixtures_root(shared_data: Path) -> Path:
    return shared_data / "fixtures"
