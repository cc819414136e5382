"""Build of the Cython + C extension.

Environment switches (build time):
  RMSNORM_CPU_NO_OPENMP=1    build without OpenMP (serial); also automatic when
                             the compiler cannot compile and link -fopenmp.
  RMSNORM_CPU_SCALAR_ONLY=1  compile only the scalar kernel tier.
"""

import os
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiles_with_openmp(compiler):
    """True when this compiler compiles and links an OpenMP program."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Adds OpenMP when the compiler has it, and the project's C flags."""

    def build_extensions(self):
        is_msvc = self.compiler.compiler_type == "msvc"
        openmp = not _flag("RMSNORM_CPU_NO_OPENMP") and not is_msvc and _compiles_with_openmp(self.compiler)
        if not openmp:
            print("rmsnorm_cpu: building without OpenMP (serial)", file=sys.stderr)
        for ext in self.extensions:
            if not is_msvc:
                # No FMA contraction: y = (x * rstd) * w + b rounds each step,
                # the same on every tier (include/rmsnorm_cpu/rmsnorm.h).
                # No auto-vectorization, for the whole extension: the scalar tier
                # stays scalar code (so the per-tier tests compare two kinds of
                # code), and the SIMD tiers lose nothing, being intrinsics (their
                # C timings were the same or better without it).  One flag rather
                # than per-function optimize attributes, which GCC documents as
                # unfit for production and Clang ignores.  The few loops marked
                # RMSN_VECTORIZE (exact conversions) are vectorized all the same.
                ext.extra_compile_args += ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-tree-vectorize",
                                           "-fopenmp-simd"]
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
if _flag("RMSNORM_CPU_SCALAR_ONLY"):
    macros.append(("RMSN_SCALAR_ONLY", "1"))

headers = [os.path.join(root, f) for root, _, files in os.walk("include") for f in files]
extensions = [
    Extension(
        f"rmsnorm_cpu.{name}",
        [f"src/rmsnorm_cpu/{name}.pyx"],
        include_dirs=["include", "src/rmsnorm_cpu", numpy.get_include()],
        define_macros=macros,
        depends=headers + ["src/rmsnorm_cpu/_runtime.pxd"],
    )
    for name in ("_runtime", "_core", "_gufunc")
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
