"""The shipped type stubs: they match the runtime signatures, ship with py.typed,
and mypy (where installed) types a user's code with them."""

import ast
import inspect
import pathlib
import sys

import pytest

import rmsnorm_cpu
from rmsnorm_cpu import _api

PACKAGE = pathlib.Path(rmsnorm_cpu.__file__).parent


def _stub_functions(path):
    """name -> the last (most general) stub definition of each function."""
    return {node.name: node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}


def _stub_parameters(node):
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + a.defaults
    params = [(arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for arg, d in zip(positional, defaults)]
    params += [(arg.arg, inspect.Parameter.KEYWORD_ONLY, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [(name, kind, inspect.Parameter.empty if d is None else ast.literal_eval(d)) for name, kind, d in params]


@pytest.mark.parametrize("stub, module", [("_api.pyi", _api), ("_config.pyi", rmsnorm_cpu._config)])
def test_stubs_match_runtime_signatures(stub, module):
    stubs = _stub_functions(PACKAGE / stub)
    public = getattr(module, "__all__", None) or [n for n in stubs]
    assert set(public) <= set(stubs), f"{stub} lacks {set(public) - set(stubs)}"
    for name in public:
        runtime = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(module, name)).parameters.values()]
        assert _stub_parameters(stubs[name]) == runtime, name


def test_stub_files_ship():
    for name in ("py.typed", "_api.pyi", "_config.pyi"):
        assert (PACKAGE / name).is_file(), name


SNIPPET = """
import numpy as np
import rmsnorm_cpu as rn

x = np.ones((2, 4), np.float32)
y = rn.rms_norm(x, np.ones(4), axis=(-1,), eps=1e-5)
y2, rstd = rn.rms_norm(x, return_rstd=True)
dx, dw, db = rn.rms_norm_backward(x, x, rstd=rstd)
h, r = rn.add_rms_norm(x, x, inplace=True)
spec = rn.output_spec((2, 4), "float16")
reveal_type(y)
reveal_type(rstd)
reveal_type(dw)
rn.rms_norm(x, eps_mode="mean")
"""


def test_mypy_types_user_code(tmp_path):
    api = pytest.importorskip("mypy.api")
    src = tmp_path / "user.py"
    src.write_text(SNIPPET)
    stdout, stderr, _ = api.run([str(src), "--follow-imports=silent", "--python-executable", sys.executable,
                                 "--cache-dir", str(tmp_path / "cache"), "--config-file="])
    lines = [line for line in stdout.splitlines() if line.startswith(str(src))]
    notes = [line for line in lines if "Revealed type" in line]
    errors = [line for line in lines if ": error:" in line]
    assert len(notes) == 3 and all("ndarray" in n for n in notes), stdout + stderr
    assert "None" in notes[2]  # dweight may be None
    assert len(errors) == 1 and ":14: error: No overload variant" in errors[0], stdout + stderr  # eps_mode="mean"
