"""Shared fixtures. Real data lives in ../shared/data beside the repository and is
read in place; tests that need it skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a failure there is then reproducible);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (it sits beside the repository, never inside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cnniqa_live(shared_data):
    from certiqa.models import CNNIQA

    return CNNIQA.from_file(shared_data / "models" / "cnniqa-live.pt")
