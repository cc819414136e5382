# Type stubs for the public functions (re-exported by rmsnorm_cpu).
from typing import Any, Literal, SupportsIndex, TypeAlias, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

_Axis: TypeAlias = SupportsIndex | tuple[SupportsIndex, ...]
_EpsMode: TypeAlias = Literal["sqrt", "add", "clamp"]
_CastMode: TypeAlias = Literal["fused", "llama"]
_Activation: TypeAlias = Literal["silu", "sigmoid"]
_Array: TypeAlias = NDArray[Any]

__all__ = ["rms_norm", "rms_norm_backward", "add_rms_norm", "rms_norm_gated", "rms_norm_gated_backward",
           "rms_norm_quant", "output_spec"]

@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: Literal[False] = False,
    n_threads: int | None = None,
) -> _Array: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: Literal[True],
    n_threads: int | None = None,
) -> tuple[_Array, _Array]: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: bool = False,
    n_threads: int | None = None,
) -> _Array | tuple[_Array, _Array]: ...
def add_rms_norm(
    x: ArrayLike,
    residual: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    cast_mode: _CastMode = "fused",
    out: _Array | None = None,
    residual_out: _Array | None = None,
    inplace: bool = False,
    n_threads: int | None = None,
) -> tuple[_Array, _Array]: ...
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    rstd: ArrayLike | None = None,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    dx_out: _Array | None = None,
    n_threads: int | None = None,
) -> tuple[_Array, _Array | None, _Array | None]: ...
@overload
def rms_norm_gated(
    x: ArrayLike,
    gate: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    norm_before_gate: bool = True,
    activation: _Activation = "silu",
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: Literal[False] = False,
    n_threads: int | None = None,
) -> _Array: ...
@overload
def rms_norm_gated(
    x: ArrayLike,
    gate: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    norm_before_gate: bool = True,
    activation: _Activation = "silu",
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: Literal[True],
    n_threads: int | None = None,
) -> tuple[_Array, _Array]: ...
@overload
def rms_norm_gated(
    x: ArrayLike,
    gate: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    norm_before_gate: bool = True,
    activation: _Activation = "silu",
    cast_mode: _CastMode = "fused",
    dtype: DTypeLike | None = None,
    out: _Array | None = None,
    return_rstd: bool = False,
    n_threads: int | None = None,
) -> _Array | tuple[_Array, _Array]: ...
def rms_norm_gated_backward(
    dy: ArrayLike,
    x: ArrayLike,
    gate: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    rstd: ArrayLike | None = None,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    norm_before_gate: bool = True,
    activation: _Activation = "silu",
    n_threads: int | None = None,
) -> tuple[_Array, _Array, _Array | None, _Array | None]: ...
def rms_norm_quant(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    residual: ArrayLike | None = None,
    axis: _Axis = -1,
    eps: float = 1e-6,
    groups: int = 1,
    eps_mode: _EpsMode = "sqrt",
    weight_offset: float = 0.0,
    quant_dtype: Literal["int8", "float8_e4m3fn"] | DTypeLike = "int8",
    scale_ub: float | None = None,
    out: _Array | None = None,
    scale_out: _Array | None = None,
    residual_out: _Array | None = None,
    inplace: bool = False,
    n_threads: int | None = None,
) -> tuple[_Array, _Array] | tuple[_Array, _Array, _Array]: ...
def output_spec(
    shape: SupportsIndex | tuple[SupportsIndex, ...],
    dtype: DTypeLike,
    *,
    axis: _Axis = -1,
    groups: int = 1,
    out_dtype: DTypeLike | None = None,
) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]: ...
