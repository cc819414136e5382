"""python -m rmsnorm_cpu info|bench, run as users run it (a subprocess)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from rmsnorm_cpu import __main__ as cli
from rmsnorm_cpu import config

TINY = ["--shapes", "1x8", "2x16", "--dtypes", "float32", "--min-time", "0.001"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "rmsnorm_cpu", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_info():
    result = _run("info")
    assert result.returncode == 0, result.stderr
    assert config()["isa"] in result.stdout and "openmp" in result.stdout


def test_bench_json_plot_and_progress(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (needed for --plot)")
    png = tmp_path / "bench.png"
    result = _run("bench", *TINY, "--json", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["isa"] == config()["isa"]
    rows = [r for r in report["rows"] if not r["case"].startswith("torch")]
    assert [(tuple(r["shape"]), r["case"]) for r in rows] == [((1, 8), "fresh"), ((1, 8), "out="),
                                                              ((2, 16), "fresh"), ((2, 16), "out=")]
    torch_rows = [r for r in report["rows"] if r["case"].startswith("torch")]
    if importlib.util.find_spec("torch"):  # rmsnorm_cpu.torch against torch's own calls, for each case
        assert [(r["case"], tuple(r["shape"])) for r in torch_rows] == [
            (case, shape) for shape in [(1, 8), (2, 16)] for case in ("torch fn", "torch module", "torch add_")]
        assert all(r["dtype"] == "float32" and r["torch"] > 0 for r in torch_rows)
    else:
        assert torch_rows == []
    assert all(r["dtype"] == "float32" and r["threads"] == 1 and r["ours_us"] > 0 and r["bound"] > 0 for r in rows)
    assert all(r["numpy"] > 0 for r in rows if r["case"] == "fresh")
    assert "[1/2] 1x8 float32 threads=1" in result.stderr and "[2/2]" in result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_table_for_one_case_has_no_progress():
    result = _run("bench", "--shapes", "1x8", "--dtypes", "float64", "--min-time", "0.001")
    assert result.returncode == 0, result.stderr
    assert "ours (us)" in result.stdout and "(1, 8)" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("args, message", [(["--shapes", "0x8"], "shape"), (["--threads", "0"], "positive"),
                                           (["--dtypes", "int8"], "invalid choice")])
def test_bad_arguments_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bandwidth_from_a_row():
    row = {"case": "fresh", "shape": (1000, 1000), "dtype": "float32", "threads": 1, "ours_us": 1000.0,
           "bound": 0.5, "numpy": 4.0}
    speeds = cli.bandwidth(row)
    assert speeds == pytest.approx({"rmsnorm_cpu": 8.0, "bound": 16.0, "numpy": 2.0})
