#!/usr/bin/env bash
# The C-level kernel check (tests/c/check_kernels.c): every tier compiled in
# and supported, against the scalar tier.  Runs it
#   - natively (x86-64: scalar, avx2, avx512 as the CPU has them),
#   - built with -DRMSN_SCALAR_ONLY (the scalar-only build's table),
#   - cross-compiled for AArch64 and run under qemu-user (the neon tier), the
#     only place the neon tier runs here: the Python suite needs a native
#     aarch64 Python.  The cross compiler and qemu are installed with apt-get
#     when missing and we are root; otherwise that step is skipped, not failed.
#
#   tools/check_kernels.sh        # CC=... for the native compiler
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/check_kernels
# As setup.py: no FMA contraction (the kernels' rounding depends on it), no
# auto-vectorization (the scalar tier stays scalar).
FLAGS=(-O3 -ffp-contract=off -fno-math-errno -fno-tree-vectorize -fopenmp-simd -Wall -Wextra -Iinclude)
SRC=tests/c/check_kernels.c
mkdir -p "$OUT"

# run LABEL COMMAND...: the command, timed.
run() {
    local label=$1 start=$SECONDS
    shift
    echo "== $label"
    "$@"
    echo "== $label: $((SECONDS - start)) s"
}

"${CC:-cc}" "${FLAGS[@]}" "$SRC" -o "$OUT/native" -lm
run "native ($(uname -m))" "$OUT/native"
"${CC:-cc}" "${FLAGS[@]}" -DRMSN_SCALAR_ONLY "$SRC" -o "$OUT/scalar_only" -lm
run "native, -DRMSN_SCALAR_ONLY" "$OUT/scalar_only"

if [ "$(uname -m)" = aarch64 ]; then
    exit 0 # the native run above was the neon tier
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing gcc-aarch64-linux-gnu, qemu-user (apt-get)"
        { apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; } \
            >"$OUT/apt.log" 2>&1 || { tail -5 "$OUT/apt.log"; echo "apt-get failed"; }
    fi
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    echo "skipped neon: no cross compiler (aarch64-linux-gnu-gcc) or no qemu-aarch64"
    exit 0
fi
# Static: qemu-aarch64 then needs no AArch64 sysroot (-L) to run it.
aarch64-linux-gnu-gcc "${FLAGS[@]}" -static "$SRC" -o "$OUT/aarch64" -lm
run "aarch64 under qemu-user" qemu-aarch64 "$OUT/aarch64"
