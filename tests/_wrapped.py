"""A tiny third-party array library for the registry tests.

``wrapped`` is an array API namespace that portprop does not know: its arrays hold a
NumPy array and return this module from ``__array_namespace__``.  It implements only
what portprop's layers, losses and optimizers call, so a missing function shows up as a
test failure.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")


class Device:
    def __init__(self, name: str = "wrapped_cpu") -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def __str__(self) -> str:
        return self.name


DEFAULT = Device()


def _unwrap(x: Any) -> Any:
    return x.a if isinstance(x, WArray) else x


def _wrap(a: Any) -> WArray:
    return WArray(np.asarray(a))


class WArray:
    """A NumPy array in disguise."""

    __array_priority__ = 1000

    def __init__(self, a: Any) -> None:
        self.a = a

    def __array_namespace__(self, api_version: str | None = None) -> types.ModuleType:
        return sys.modules[__name__]

    shape = property(lambda self: self.a.shape)
    ndim = property(lambda self: self.a.ndim)
    dtype = property(lambda self: self.a.dtype)
    device = property(lambda self: DEFAULT)
    T = property(lambda self: WArray(self.a.T))

    def to_device(self, device: Any, /, *, stream: Any = None) -> WArray:
        return self

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self.a.__dlpack_device__()

    def __getitem__(self, key: Any) -> WArray:
        return _wrap(self.a[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.a[key] = _unwrap(value)

    def __float__(self) -> float:
        return float(self.a)

    def __int__(self) -> int:
        return int(self.a)

    def __bool__(self) -> bool:
        return bool(self.a)

    def __neg__(self) -> WArray:
        return WArray(-self.a)

    def __repr__(self) -> str:
        return f"WArray({self.a!r})"


def _binary(name: str, inplace: bool = False) -> Any:
    op = getattr(np.ndarray, name)

    def method(self: WArray, other: Any) -> Any:
        result = op(self.a, _unwrap(other))
        if result is NotImplemented:
            return NotImplemented
        if inplace:
            return self
        return _wrap(result)

    return method


for _name in ("add", "sub", "mul", "truediv", "matmul", "pow"):
    setattr(WArray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(WArray, f"__r{_name}__", _binary(f"__r{_name}__"))
    setattr(WArray, f"__i{_name}__", _binary(f"__i{_name}__", inplace=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne", "and", "or"):
    setattr(WArray, f"__{_name}__", _binary(f"__{_name}__"))
WArray.__hash__ = None  # type: ignore[assignment]


class _Info:
    def default_device(self) -> Device:
        return DEFAULT

    def devices(self) -> list[Device]:
        return [DEFAULT]

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, Any]:
        if kind == "real floating":
            return {"float32": float32, "float64": float64}
        return {"float32": float32, "float64": float64, "int64": int64, "bool": bool_}


def __array_namespace_info__() -> _Info:
    return _Info()


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> WArray:
    a = (
        np.array(_unwrap(obj), dtype=dtype, copy=True)
        if copy
        else np.asarray(_unwrap(obj), dtype=dtype)
    )
    return WArray(a)


def from_dlpack(x: Any, /, **kwargs: Any) -> WArray:
    return WArray(np.from_dlpack(x))


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> WArray:
    return WArray(np.zeros(shape, dtype=dtype))


def zeros_like(x: WArray, /, *, dtype: Any = None, device: Any = None) -> WArray:
    return WArray(np.zeros_like(x.a, dtype=dtype))


def empty_like(x: WArray, /, *, dtype: Any = None, device: Any = None) -> WArray:
    return WArray(np.empty_like(x.a, dtype=dtype))


def arange(stop: int, /, *, dtype: Any = None, device: Any = None) -> WArray:
    return WArray(np.arange(stop, dtype=dtype))


def astype(x: WArray, dtype: Any, /, *, copy: bool = True, device: Any = None) -> WArray:
    return WArray(x.a.astype(dtype, copy=copy))


def reshape(x: WArray, shape: Any, /, *, copy: Any = None) -> WArray:
    return WArray(np.reshape(x.a, shape))


def where(cond: WArray, x1: Any, x2: Any, /) -> WArray:
    return _wrap(
        np.where(_unwrap(cond), _unwrap(x1), _unwrap(x2)).astype(
            (x1 if isinstance(x1, WArray) else x2).dtype, copy=False
        )
    )


def isdtype(dtype: Any, kind: str) -> bool:
    return {
        "real floating": np.issubdtype(dtype, np.floating),
        "integral": np.issubdtype(dtype, np.integer),
        "bool": dtype == bool_,
    }[kind]


def _unary(fn: Any) -> Any:
    return lambda x, /: _wrap(fn(x.a))


tanh = _unary(np.tanh)
exp = _unary(np.exp)
log = _unary(np.log)
log1p = _unary(np.log1p)
abs = _unary(np.abs)


def _reduction(fn: Any) -> Any:
    def reduce(x: WArray, /, *, axis: Any = None, keepdims: bool = False, **kwargs: Any) -> WArray:
        return _wrap(fn(x.a, axis=axis, keepdims=keepdims))

    return reduce


sum = _reduction(np.sum)
max = _reduction(np.max)
min = _reduction(np.min)
mean = _reduction(np.mean)


def argmax(x: WArray, /, *, axis: Any = None, keepdims: bool = False) -> WArray:
    return _wrap(np.argmax(x.a, axis=axis, keepdims=keepdims))
