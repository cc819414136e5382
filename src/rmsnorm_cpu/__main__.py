"""Command line: ``python -m rmsnorm_cpu info`` and ``python -m rmsnorm_cpu bench``."""

import argparse
import sys


def _shape(text):
    try:
        return tuple(int(s) for s in text.lower().replace("x", ",").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is like 2048x4096, got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rmsnorm_cpu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration")
    bench = sub.add_parser("bench", help="time rms_norm against NumPy, PyTorch and the copy bound")
    bench.add_argument("--shapes", type=_shape, nargs="+", help="e.g. 1x4096 2048x4096")
    bench.add_argument("--dtypes", nargs="+", help="float32 float16 bfloat16 float64")
    bench.add_argument("--threads", type=int, nargs="+", default=[1])
    bench.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config
        show_config()
    else:
        from . import _bench
        _bench.run(args.shapes, args.dtypes, args.threads, args.min_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
