"""Thread policy: determinism across thread counts, threadpoolctl, cgroups, fork, Python threads."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rmsnorm_cpu as rn
from rmsnorm_cpu import _cpus, _runtime

OPENMP = rn.config()["openmp"]
needs_openmp = pytest.mark.skipif(not OPENMP, reason="built without OpenMP (serial)")
BIG = 1 << 30  # elements: always above the serial threshold


def _bits(a):
    return np.ascontiguousarray(np.atleast_1d(a)).view(np.uint8)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bitwise_same_for_any_thread_count_and_batch(rng, dtype):
    x = rng.standard_normal((333, 1031)).astype(dtype)
    dy = rng.standard_normal((333, 1031)).astype(dtype)
    w = rng.standard_normal(1031).astype(np.float32)
    one = rn.rms_norm(x, w, n_threads=1)
    two = rn.rms_norm(x, w, n_threads=2)
    np.testing.assert_array_equal(_bits(one), _bits(two))
    np.testing.assert_array_equal(_bits(one[100:101]), _bits(rn.rms_norm(x[100:101], w)))
    cols = rn.rms_norm(np.asfortranarray(x), w, n_threads=2)  # column kernel, chunked over positions
    np.testing.assert_array_equal(_bits(cols), _bits(rn.rms_norm(np.asfortranarray(x), w, n_threads=1)))
    for a, b in zip(rn.rms_norm_backward(dy, x, w, 0.0, n_threads=1), rn.rms_norm_backward(dy, x, w, 0.0, n_threads=2)):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    r = rng.standard_normal((333, 1031)).astype(dtype)
    for a, b in zip(rn.add_rms_norm(x, r, w, n_threads=1), rn.add_rms_norm(x, r, w, n_threads=2)):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def test_n_threads_above_the_default_is_capped(rng):
    # A team of 100000 threads would crash the process and 2**40 overflows a C
    # int: a request above the OpenMP default runs the default.
    x = rng.standard_normal((300, 512)).astype(np.float32)
    expected = rn.rms_norm(x, n_threads=1)
    for n_threads in (100_000, 2**40):
        np.testing.assert_array_equal(rn.rms_norm(x, n_threads=n_threads), expected)
        dx, _, _ = rn.rms_norm_backward(x, x, n_threads=n_threads)
        np.testing.assert_array_equal(dx, rn.rms_norm_backward(x, x, n_threads=1)[0])
        np.testing.assert_array_equal(rn.add_rms_norm(x, x, n_threads=n_threads)[0],
                                      rn.add_rms_norm(x, x, n_threads=1)[0])


def test_small_calls_stay_serial():
    assert _runtime.team_size(work=4096) == 1
    assert _runtime.team_size(work=32 * 4096) == 1  # (32, 4096): the largest decode batch


@needs_openmp
def test_team_size_follows_limits():
    cpus = _cpus.available_cpus()
    assert _runtime.team_size() == min(cpus, rn.config()["n_threads_default"])
    assert _runtime.team_size(n_threads=1) == 1
    assert _runtime.team_size(n_threads=10_000) == _runtime.team_size()


@needs_openmp
def test_threadpoolctl_sees_and_limits_our_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    libs = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "openmp"]
    assert libs, "the extension's OpenMP runtime is not visible to threadpoolctl"
    assert rn.config()["openmp_runtime"] in {lib["prefix"] for lib in libs}
    team = _runtime.team_size()
    assert team == min(_cpus.available_cpus(), rn.config()["n_threads_default"])
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _runtime.team_size() == 1
        assert rn.config()["n_threads_default"] == 1
    assert _runtime.team_size() == team  # the limit lifted, the policy's team again


def _run_script(code, env=None, timeout=120):
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_openmp
def test_omp_num_threads_env():
    assert _run_script("from rmsnorm_cpu import _runtime; print(_runtime.team_size())",
                       env={"OMP_NUM_THREADS": "1"}).strip() == "1"


def test_fork_after_parallel_call_does_not_deadlock():
    out = _run_script("""
        import multiprocessing, os
        import numpy as np, rmsnorm_cpu as rn
        from rmsnorm_cpu import _runtime
        x = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32)
        expected = rn.rms_norm(x, n_threads=2)      # the parent opens a team
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(rn.rms_norm(x, n_threads=2), expected) and _runtime.team_size() == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(rn.rms_norm, [x, x, x])
        assert all(np.array_equal(r, expected) for r in results)
        print("ok")
    """, timeout=120)
    assert out.strip() == "ok"


def test_many_python_threads(rng):
    xs = [rng.standard_normal((64, 4096)).astype(np.float32) for _ in range(16)]
    expected = [rn.rms_norm(x, n_threads=1) for x in xs]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            got = list(pool.map(rn.rms_norm, xs))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("files, expected", [
    ({"proc": "0::/\n", "cpu.max": "max 100000"}, None),
    ({"proc": "0::/\n", "cpu.max": "150000 100000"}, 2),
    ({"proc": "0::/a/b\n", "a/cpu.max": "100000 100000", "a/b/cpu.max": "max 100000"}, 1),
    ({"proc": "4:cpu,cpuacct:/\n", "cpu,cpuacct/cpu.cfs_quota_us": "-1",
      "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None),
    ({"proc": "4:cpu,cpuacct:/docker/x\n", "cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),
    ({"proc": "garbage\n"}, None),
])
def test_cgroup_quota_parsing(tmp_path, files, expected):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = tmp_path / "proc_cgroup" if name == "proc" else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _cpus.cgroup_cpu_limit(str(root), str(tmp_path / "proc_cgroup")) == expected
