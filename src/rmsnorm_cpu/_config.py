"""config() / show_config(): what this build compiled and what it runs now."""

from . import _runtime


def config():
    """The build and runtime configuration as a dict.

    Keys: ``version``, ``isa`` (tier in use), ``isa_compiled``, ``isa_supported``
    (lists of tier names), ``isa_extensions`` (extensions of the tier in use
    this CPU has and the kernels use, e.g. ``["avx512_bf16"]``), ``openmp``
    (bool), ``openmp_runtime`` (e.g. ``"libgomp"`` or None),
    ``n_threads_default``, ``compiler``, ``stream_stores`` (how large outputs
    preallocated by the caller are written: ``"trying"`` until the first few
    such calls have timed both kinds of stores, then ``"non-temporal"`` or
    ``"plain"``, whichever was faster on this machine).
    """
    from . import __version__

    info = _runtime.build_info()
    return {
        "version": __version__,
        "isa": info["isa"],
        "isa_compiled": info["isa_compiled"],
        "isa_supported": info["isa_supported"],
        "isa_extensions": info["isa_extensions"],
        "openmp": info["openmp"],
        "openmp_runtime": _openmp_runtime() if info["openmp"] else None,
        "n_threads_default": info["n_threads_default"],
        "compiler": info["compiler"],
        "stream_stores": info["stream_stores"],
    }


def _openmp_runtime():
    """Name of the OpenMP library this extension loaded, as threadpoolctl sees it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl to see it)"
    for lib in threadpool_info():
        if lib.get("user_api") == "openmp":
            return lib.get("prefix")
    return None


def show_config():
    """Print config(), one key per line."""
    for key, value in config().items():
        print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
