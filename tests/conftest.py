"""Shared fixtures: every numeric test runs once per ISA tier this machine has."""

import numpy as np
import pytest

from rmsnorm_cpu import _core

SUPPORTED_TIERS = _core.build_info()["isa_supported"]


@pytest.fixture(params=SUPPORTED_TIERS)
def isa(request):
    """Force one kernel tier for the test, then restore the previous one."""
    previous = _core.set_isa(request.param)
    yield request.param
    _core.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
