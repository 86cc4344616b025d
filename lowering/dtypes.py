"""Element types: one table links NumPy dtypes, the short names of the text form and ONNX enums.

Keeping the three spellings in one table means the printer, the parser and the ONNX bridge can
never disagree about what `f32` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from .errors import UnsupportedError


@dataclass(frozen=True)
class DType:
    name: str  # NumPy name, also the canonical spelling in the Python API
    short: str  # spelling in the text form
    onnx: int  # onnx.TensorProto.DataType


_TABLE = (
    DType("float16", "f16", TensorProto.FLOAT16),
    DType("float32", "f32", TensorProto.FLOAT),
    DType("float64", "f64", TensorProto.DOUBLE),
    DType("int8", "i8", TensorProto.INT8),
    DType("int16", "i16", TensorProto.INT16),
    DType("int32", "i32", TensorProto.INT32),
    DType("int64", "i64", TensorProto.INT64),
    DType("uint8", "u8", TensorProto.UINT8),
    DType("bool", "bool", TensorProto.BOOL),
)

_BY_NAME = {d.name: d for d in _TABLE}
_BY_SHORT = {d.short: d for d in _TABLE}
_BY_ONNX = {d.onnx: d for d in _TABLE}

FLOAT_DTYPES = ("float16", "float32", "float64")


def canonical(dtype: object) -> str:
    """The canonical name ('float32', ...) of a NumPy dtype, dtype name or short name."""
    if isinstance(dtype, str) and dtype in _BY_SHORT:
        return _BY_SHORT[dtype].name
    name = np.dtype(dtype).name  # type: ignore[call-overload]
    if name not in _BY_NAME:
        raise UnsupportedError(f"element type {name} is not supported")
    return name


def short_name(dtype: str) -> str:
    return _BY_NAME[canonical(dtype)].short


def from_short(short: str) -> str:
    if short not in _BY_SHORT:
        raise KeyError(short)
    return _BY_SHORT[short].name


def to_onnx(dtype: str) -> int:
    return _BY_NAME[canonical(dtype)].onnx


def from_onnx(elem_type: int) -> str:
    if elem_type not in _BY_ONNX:
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        raise UnsupportedError(f"ONNX element type {name} is not supported")
    return _BY_ONNX[elem_type].name


def is_float(dtype: str) -> bool:
    return canonical(dtype) in FLOAT_DTYPES


# relative error (to the largest reference magnitude) a result of this type may show against the float64
# reference: float16 rounds every stored value to 11 bits
TOLERANCE = {"float16": 2e-2, "float32": 1e-4, "float64": 1e-10}
