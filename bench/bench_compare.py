"""Two builds of rmsnorm_cpu side by side: did a change make any call slower?

    python bench/bench_compare.py BASE_SRC NEW_SRC [--rounds 5] [--min-time 0.2]

BASE_SRC and NEW_SRC are `src` directories of two built checkouts (e.g. a
`git worktree` of the previous commit, built in place).  Each round runs
every case once in each build (a subprocess per build, alternating which goes
first), and the table keeps each case's fastest time per build: on a shared,
noisy machine the minimum over rounds is the stable statistic, and alternating
exposes both builds to the same noise.  Ratio = base time / new time (> 1:
the new build is faster).  Single-threaded; run it alone.
"""

import argparse
import json
import os
import subprocess
import sys

# name -> setup code; every case times the statement `call()`.
CASES = {
    "decode (1,4096) f32": "x = rng.standard_normal((1, 4096), np.float32); w = np.ones(4096, np.float32)\n"
                           "call = lambda: rn.rms_norm(x, w)",
    "decode (1,4096) bf16 bits": "x = rng.integers(0, 1 << 15, (1, 4096)).astype(np.uint16)\n"
                                 "call = lambda: rn.rms_norm(x, dtype='bfloat16')",
    "(64,64) axis=0 f32": "x = rng.standard_normal((64, 64), np.float32)\ncall = lambda: rn.rms_norm(x, axis=0)",
    "(32,4096) return_rstd f32": "x = rng.standard_normal((32, 4096), np.float32)\n"
                                 "call = lambda: rn.rms_norm(x, return_rstd=True)",
    "(2048,4096) f32": "x = rng.standard_normal((2048, 4096), np.float32)\ncall = lambda: rn.rms_norm(x)",
    "(2048,4096) f32 out=": "x = rng.standard_normal((2048, 4096), np.float32); y = np.empty_like(x)\n"
                           "call = lambda: rn.rms_norm(x, out=y)",
    "(2048,4096) f16 out=": "x = rng.standard_normal((2048, 4096)).astype(np.float16); y = np.empty_like(x)\n"
                           "call = lambda: rn.rms_norm(x, out=y)",
    "(262144,64) f32 out=": "x = rng.standard_normal((262144, 64), np.float32); y = np.empty_like(x)\n"
                            "call = lambda: rn.rms_norm(x, out=y)",
    "NCHW (8,256,56,56) axis=1 out=": "x = rng.standard_normal((8, 256, 56, 56), np.float32); y = np.empty_like(x)\n"
                                      "call = lambda: rn.rms_norm(x, axis=1, out=y)",
    "add decode (1,4096) f32 inplace": "x = rng.standard_normal((1, 4096), np.float32); r = x.copy()\n"
                                       "call = lambda: rn.add_rms_norm(x, r, inplace=True)",
    "add (2048,4096) f32": "x = rng.standard_normal((2048, 4096), np.float32); r = x.copy()\n"
                           "call = lambda: rn.add_rms_norm(x, r)",
    "backward (2048,4096) f32": "x = rng.standard_normal((2048, 4096), np.float32); dy = x.copy()\n"
                                "w = np.ones(4096, np.float32); y, s = rn.rms_norm(x, w, return_rstd=True)\n"
                                "call = lambda: rn.rms_norm_backward(dy, x, w, rstd=s)",
    "layer (1,4096) f32": "from rmsnorm_cpu import RMSNorm\nm = RMSNorm(4096)\n"
                          "x = rng.standard_normal((1, 4096), np.float32)\ncall = lambda: m(x)",
    "torch rms_norm (1,1,4096) f32": "import torch; import rmsnorm_cpu.torch as rt; torch.set_num_threads(1)\n"
                                     "x = torch.randn(1, 1, 4096); w = torch.ones(4096)\n"
                                     "call = lambda: rt.rms_norm(x, (4096,), w)",
}

RUNNER = r"""
import json, sys, timeit
import numpy as np
import rmsnorm_cpu as rn
rng = np.random.default_rng(0)
cases, min_time = json.loads(sys.argv[1]), float(sys.argv[2])
out = {}
for name, setup in cases.items():
    env = {"np": np, "rn": rn, "rng": rng}
    try:
        exec(setup, env)
    except ImportError:
        continue
    call = env["call"]
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    out[name] = min(timer.repeat(3, number)) / number
print(json.dumps(out))
"""


def run_build(src, cases, min_time):
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases), str(min_time)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--only", nargs="+", help="run the cases whose names contain one of these")
    args = parser.parse_args()
    cases = {name: setup for name, setup in CASES.items() if not args.only or any(s in name for s in args.only)}
    best = {"base": {}, "new": {}}
    for r in range(args.rounds):
        order = [("base", args.base), ("new", args.new)]
        for label, src in order if r % 2 == 0 else order[::-1]:
            for name, t in run_build(src, cases, args.min_time).items():
                best[label][name] = min(t, best[label].get(name, t))
    print("| call | base | new | base / new |\n|---|---|---|---|")
    for name in cases:
        if name in best["base"] and name in best["new"]:
            b, n = best["base"][name], best["new"][name]
            print(f"| {name} | {b * 1e6:.1f} us | {n * 1e6:.1f} us | {b / n:.2f}x |")


if __name__ == "__main__":
    main()
