"""The docstring examples run (numpydoc Examples sections are doctests)."""

import doctest

import pytest

import rmsnorm_cpu
from rmsnorm_cpu import _api, layer


@pytest.mark.parametrize("module", [_api, layer], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_public_names():
    assert set(rmsnorm_cpu.__all__) <= set(dir(rmsnorm_cpu))
