"""Checks of the data the estimators receive that scikit-learn's ``validate_data``
does not make, or makes without naming the argument: lists, strings and complex
numbers, arrays of other backends, and ``sample_weight``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from numbers import Real
from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

from portprop.backend import Backend, backend_of, dtype_name, is_array
from portprop.errors import UnknownBackendError
from portprop.module import rank_hint
from portprop.training.validation import as_array, first_value, kind_of

Array = Any


def _device_backend(X: Any) -> Backend | None:
    """The backend of ``X`` when it is an array of a portprop backend other than NumPy
    (checked on its device), else ``None`` (validated by scikit-learn on the host)."""
    try:
        backend = backend_of(X)
    except (TypeError, UnknownBackendError):
        return None
    return None if backend.library == "numpy" else backend


def _to_host(y: Any) -> Any:
    """``y`` as a host (NumPy) array when it is an array of another backend."""
    backend = _device_backend(y)
    return y if backend is None else backend.to_host(y)


def _require_2d_like_sklearn(X: Array) -> None:
    """scikit-learn's "Expected 2D array" error, with a reshape hint for every rank."""
    if X.ndim != 2:
        got = "scalar array" if X.ndim == 0 else f"{X.ndim}D array"
        msg = (
            f"Expected 2D array, got {got} instead (X of shape {tuple(X.shape)})."
            f"{rank_hint('X', X.ndim)}"
        )
        raise ValueError(msg)


def _host_input(x: Any, argname: str, *, numeric: bool) -> Any:
    """Lists and tuples as NumPy arrays (ragged ones refused with a message that names
    ``argname``); with ``numeric``, arrays of strings or complex numbers refused.

    Object arrays and pandas objects are left to scikit-learn, which converts object
    arrays of numbers and keeps the column names of data frames.
    """
    if isinstance(x, list | tuple):
        x = as_array(x, argname)
    if numeric and is_array(x):
        kind = kind_of(x)
        if kind == "complex":
            msg = (
                f"Complex data not supported: {argname} has dtype {dtype_name(x.dtype)}; "
                f"pass {argname}.real if the imaginary parts are meaningless"
            )
            raise ValueError(msg)
        if kind == "strings":
            msg = (
                f"{argname} must hold numbers, got strings (dtype {dtype_name(x.dtype)}, the "
                f"first is {first_value(x)}): could not convert string to float"
            )
            raise ValueError(msg)
    return x


@contextlib.contextmanager
def _named(argname: str) -> Iterator[None]:
    """Put ``argname`` in front of the messages of scikit-learn's checks that do not
    name it ("Expected 2D array, ...", "Found array with 0 sample(s) ..."), so that every
    message says which argument is wrong; the exception itself is unchanged."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        first = exc.args[0] if exc.args else None
        if isinstance(first, str) and not re.search(rf"\b{re.escape(argname)}\b", first):
            exc.args = (f"{argname}: {first}", *exc.args[1:])
        raise


def check_sample_weight(sample_weight: Any, n_samples: int) -> Any:
    """``sample_weight`` as a host float64 vector ``(n_samples,)`` of finite values
    ``>= 0`` with a positive sum, or ``None``; a number weighs every sample alike."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, Real):
        return np.full(n_samples, float(sample_weight))
    with _named("sample_weight"):
        w = check_array(
            _to_host(sample_weight), ensure_2d=False, dtype="float64", input_name="sample_weight"
        )
    if w.shape != (n_samples,):
        msg = f"sample_weight.shape == {w.shape}, expected ({n_samples},)!"
        raise ValueError(msg)
    if (w < 0).any():
        msg = f"sample_weight must be >= 0, got {w.min()!r} (at index {int(w.argmin())})"
        raise ValueError(msg)
    if not w.sum() > 0:
        msg = "sample_weight must have a positive sum, got weights that are all zero"
        raise ValueError(msg)
    return w
