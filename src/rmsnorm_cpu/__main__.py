"""Command line: ``python -m rmsnorm_cpu info`` and ``python -m rmsnorm_cpu bench``."""

import argparse
import json
import math
import sys

import numpy as np

from . import _spec

DTYPES = ["float32", "float16", "bfloat16", "float64"]
ROW_FIELDS = ("case", "shape", "dtype", "threads", "ours_us")


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.lower().replace("x", ",").split(",") if s)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is like 2048x4096, got {text!r}")
    return shape


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _progress(done, total, case, stream=sys.stderr):
    """Which case runs now, on stderr: rewritten in place on a terminal (and
    cleared when case is None, at the end), one line per case otherwise."""
    tty = stream.isatty()
    if case is None:
        text = "\r\033[K" if tty else ""
    else:
        shape, dtype, threads = case
        text = f"[{done + 1}/{total}] {'x'.join(map(str, shape))} {dtype} threads={threads}"
        text = "\r\033[K" + text if tty else text + "\n"
    stream.write(text)
    stream.flush()


def _peers(rows):
    """Ratio keys of the rows (their time / our time), the bound first."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in ROW_FIELDS and k not in keys]
    return sorted(keys, key=lambda k: k != "bound")


def bandwidth(row):
    """GB/s achieved by us and each peer for a row: the bytes of x read and y written
    (the weight is negligible) over each one's time."""
    nbytes = 2 * math.prod(row["shape"]) * np.dtype(_spec.dtype_by_name(row["dtype"])).itemsize
    ours = row["ours_us"] * 1e-6
    speeds = {"rmsnorm_cpu": nbytes / ours / 1e9}
    for peer in _peers([row]):
        speeds[peer] = nbytes / (row[peer] * ours) / 1e9
    return speeds


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot(rows, path, plt):
    """Grouped bars of achieved GB/s per case; the copy bound as a marker."""
    speeds = [bandwidth(r) for r in rows]
    series = ["rmsnorm_cpu"] + [p for p in _peers(rows) if p != "bound"]
    labels = [f"{r['case']}\n{'x'.join(map(str, r['shape']))}\n{r['dtype']} t={r['threads']}" for r in rows]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4.5))
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [s.get(name, float("nan")) for s in speeds], width, label=name)
    if any("bound" in s for s in speeds):
        ax.plot(range(len(rows)), [s.get("bound", float("nan")) for s in speeds], "k_", markersize=30,
                markeredgewidth=2, label="bound (fresh: a NumPy pass into a new array; out=: np.copyto)")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("GB/s (x read + y written)")
    ax.set_title("rms_norm achieved bandwidth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench(args, out=print):
    from . import _bench, config

    plt = _pyplot() if args.plot else None  # before the run, not after it
    shapes = args.shapes or _bench.DEFAULT_SHAPES
    dtypes = args.dtypes or _bench.DEFAULT_DTYPES
    try:  # dtype objects: numpy knows "bfloat16" only as ml_dtypes' dtype
        dtypes = [_spec.dtype_by_name(d) for d in dtypes]
    except TypeError as e:
        raise SystemExit(str(e)) from None
    cases = [(tuple(s), d, n) for d in dtypes for s in shapes for n in args.threads]
    rows, header = [], []
    for i, case in enumerate(cases):
        if len(cases) > 1:
            _progress(i, len(cases), case)
        printed = []
        rows += _bench.run([case[0]], [case[1]], [case[2]], args.min_time, out=printed.append)
        rows += _bench.bench_torch(case[0], case[1].name, case[2], args.min_time)  # [] without torch
        header = header or printed[:1]
    if len(cases) > 1:
        _progress(len(cases), len(cases), None)
    if args.json:
        out(json.dumps({"config": config(), "rows": rows}, indent=1))
    else:
        out("\n".join(header))
        out(_bench.format_table(rows))
    if args.plot:
        plot(rows, args.plot, plt)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rmsnorm_cpu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration")
    b = sub.add_parser("bench", help="time rms_norm as users call it (fresh output, out=) against its peers and bounds")
    b.add_argument("--shapes", type=_shape, nargs="+", help="e.g. 1x4096 2048x4096")
    b.add_argument("--dtypes", nargs="+", choices=DTYPES, help="default: float32 float16")
    b.add_argument("--threads", type=_positive(int), nargs="+", default=[1], help="a sweep, e.g. 1 2 4")
    b.add_argument("--min-time", type=_positive(float), default=0.2, help="seconds per measurement")
    b.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    b.add_argument("--plot", metavar="FILE.png", help="draw achieved GB/s against the copy bound (matplotlib)")
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config
        show_config()
    else:
        bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
