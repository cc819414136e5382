"""The full table: rms_norm against its peers, like with like, single-threaded by default.

    python bench/bench_forward.py [--threads 1 2] [--min-time 0.3] [--json rows.json]

Every shape twice: the call as users write it (a fresh output) against peers
that allocate theirs and the fresh-output bound, and the call into a
preallocated out against ONNX Runtime (I/O binding) and np.copyto.  Then a
sweep of row lengths over 64 MiB of float32 rows (out=), the bfloat16-bits
decode call, NCHW channels and the backward (new dx, and dx_out=).  On a
shared machine run it alone (e.g. under `flock /tmp/rmsnorm-bench.lock`).
Ratios are "their time / our time", all measured in the same run.
"""

import argparse
import json

from rmsnorm_cpu import _bench


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--dtypes", nargs="+", default=_bench.FULL_DTYPES)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = _bench.run(_bench.FULL_SHAPES, args.dtypes, args.threads, args.min_time,
                      nchw_shapes=_bench.NCHW_SHAPES, backward_shapes=_bench.BACKWARD_SHAPES)
    sweep = [(_bench.SWEEP_BYTES // (4 * n), n) for n in _bench.ROW_LENGTHS]
    rows += _bench.run(sweep, ["float32"], args.threads, args.min_time, kinds=("out=",))
    extra = [_bench.bench_bfloat16_bits((1, 4096), n, args.min_time) for n in args.threads]
    print(_bench.format_table(extra))
    rows += extra
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
