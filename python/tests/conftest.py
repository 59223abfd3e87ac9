"""Shared fixtures: one engine for the whole test run."""

import os

import pytest

os.environ.setdefault("NODEVICE_SELECT", "1")

import gpulanes  # noqa: E402


@pytest.fixture(scope="session")
def engine() -> gpulanes.Engine:
    return gpulanes.default_engine()
