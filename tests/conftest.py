"""Shared fixtures: every numeric test runs once per ISA tier this machine has."""

import numpy as np
import pytest

from rmsnorm_cpu import _runtime

SUPPORTED_TIERS = _runtime.build_info()["isa_supported"]


@pytest.fixture(params=SUPPORTED_TIERS)
def isa(request):
    """Force one kernel tier for the test, then restore the previous one."""
    previous = _runtime.set_isa(request.param)
    yield request.param
    _runtime.set_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
