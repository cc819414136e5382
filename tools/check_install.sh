#!/usr/bin/env bash
# Clean install check: `python -m build` makes an sdist and a wheel; the sdist
# holds the Cython sources and C headers and installs into a fresh venv that has
# no Cython (build isolation fetches it from the package index); the wheel
# installs and runs in a fresh venv with no compiler reachable (CC=/bin/false,
# PATH without gcc/cc), and ships py.typed and the .pyi stubs.
#
#   tools/check_install.sh         # PYTHON=... picks the interpreter (needs `build`)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rmsnorm-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m pip install -q build
# BUILD_LOCK=/path: hold that flock(1) lock while compiling (shared machines).
${BUILD_LOCK:+flock "$BUILD_LOCK"} "$PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
sdist=$(ls "$WORK"/dist/*.tar.gz)
wheel=$(ls "$WORK"/dist/*.whl)
echo "check_install.sh: built $(basename "$sdist") and $(basename "$wheel")"

tar -tzf "$sdist" >"$WORK/sdist.txt"
for f in include/rmsnorm_cpu/rmsnorm.h include/rmsnorm_cpu/ops.h include/rmsnorm_cpu/dispatch.h include/rmsnorm_cpu/kernels/slice.h \
         src/rmsnorm_cpu/_runtime.pyx src/rmsnorm_cpu/_runtime.pxd src/rmsnorm_cpu/_core.pyx src/rmsnorm_cpu/_gufunc.pyx \
         src/rmsnorm_cpu/_openmp_helpers.h \
         src/rmsnorm_cpu/py.typed src/rmsnorm_cpu/_api.pyi setup.py pyproject.toml; do
    grep -q "/$f\$" "$WORK/sdist.txt" || { echo "check_install.sh: sdist lacks $f" >&2; exit 1; }
done
if grep -q '\.c$' "$WORK/sdist.txt"; then echo "check_install.sh: sdist ships generated C" >&2; exit 1; fi
"$PYTHON" -m zipfile -l "$wheel" >"$WORK/wheel.txt"
for f in rmsnorm_cpu/py.typed rmsnorm_cpu/_api.pyi rmsnorm_cpu/_config.pyi; do
    grep -q "$f" "$WORK/wheel.txt" || { echo "check_install.sh: wheel lacks $f" >&2; exit 1; }
done

SMOKE='
import numpy as np, rmsnorm_cpu as rn
y = rn.rms_norm(np.array([[3.0, 4.0]]), eps=0.0)
assert np.allclose(y, [[0.84852814, 1.13137085]]), y
dx, dw, db = rn.rms_norm_backward(np.ones((2, 8), np.float32), np.ones((2, 8), np.float32), np.ones(8, np.float32))
h, r = rn.add_rms_norm(np.ones((2, 8), np.float16), np.ones((2, 8), np.float16))
print("  ok:", rn.config()["isa"], "openmp" if rn.config()["openmp"] else "serial", rn.__file__)
'

# sdist -> fresh venv without Cython; pip's build isolation brings it.
"$PYTHON" -m venv "$WORK/sdist-venv"
${BUILD_LOCK:+flock "$BUILD_LOCK"} "$WORK/sdist-venv/bin/python" -m pip install -q "$sdist"
if "$WORK/sdist-venv/bin/python" -c "import Cython" 2>/dev/null; then
    echo "check_install.sh: Cython leaked into the sdist venv" >&2; exit 1
fi
(cd "$WORK" && "$WORK/sdist-venv/bin/python" -c "$SMOKE")
echo "check_install.sh: sdist installs without Cython preinstalled"

# wheel -> fresh venv, no compiler anywhere on PATH; binary dependencies only.
"$PYTHON" -m venv "$WORK/wheel-venv"
mkdir "$WORK/nocc"
for f in cc gcc c++ g++ clang; do ln -s /bin/false "$WORK/nocc/$f"; done
(
    cd "$WORK"
    export PATH="$WORK/nocc:$WORK/wheel-venv/bin:/bin" CC=/bin/false CXX=/bin/false LDSHARED=/bin/false
    if command -v gcc >/dev/null && gcc --version >/dev/null 2>&1; then echo "gcc still reachable" >&2; exit 1; fi
    python -m pip install -q --only-binary :all: "$wheel"
    python -c "$SMOKE"
)
echo "check_install.sh: wheel installs and runs with no compiler"
