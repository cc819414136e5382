"""The full table of issue 7: rms_norm against NumPy, PyTorch eager, ONNX Runtime
and the np.copyto bound, every shape and dtype, single-threaded by default.

    python bench/bench_forward.py [--threads 1 2] [--min-time 0.3] [--json rows.json]

On a shared machine run it alone (e.g. under `flock /tmp/rmsnorm-bench.lock`).
Ratios are "their time / our time", all measured in the same run.
"""

import argparse
import json

from rmsnorm_cpu import _bench


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--dtypes", nargs="+", default=_bench.ISSUE_DTYPES)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = _bench.run(_bench.ISSUE_SHAPES, args.dtypes, args.threads, args.min_time,
                      nchw_shapes=_bench.NCHW_SHAPES, backward_shapes=_bench.BACKWARD_SHAPES)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
