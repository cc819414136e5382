"""rmsnorm_cpu: fast, bitwise-predictable RMSNorm for CPUs.

See README.md for the contract; ``rmsnorm_cpu.config()`` for what this build runs.
"""

from ._api import (add_rms_norm, output_spec, rms_norm, rms_norm_backward, rms_norm_gated, rms_norm_gated_backward,
                   rms_norm_quant)
from ._config import config, show_config
from ._gufunc import rms_norm_gufunc
from .layer import RMSNorm

__version__ = "0.1.0"

__all__ = ["rms_norm", "rms_norm_backward", "add_rms_norm", "rms_norm_gated", "rms_norm_gated_backward",
           "rms_norm_quant", "output_spec", "rms_norm_gufunc", "RMSNorm", "config", "show_config", "__version__"]
