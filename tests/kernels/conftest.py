"""Fixtures shared by the kernel tests."""

import pytest
from launch_stand_ins import StandInLaunches

from repro.kernels import fast_launch


@pytest.fixture
def launches(monkeypatch):
    """Every launch ``fast_launch`` makes goes to stand-ins for the compiled kernels and the
    driver (``launch_stand_ins.py``); no plan kept from elsewhere, fast launch on, and so after."""
    world = StandInLaunches(monkeypatch)
    yield world
    fast_launch._plans.clear()
    fast_launch.set_fast_launch(True)
