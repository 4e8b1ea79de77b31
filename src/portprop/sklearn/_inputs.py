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
from sklearn import get_config
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


def dispatch_enabled() -> bool:
    """Whether scikit-learn's ``array_api_dispatch`` is on (``set_config`` or
    ``config_context``): then outputs and fitted attributes stay in the inputs' library
    and on their device."""
    return bool(get_config()["array_api_dispatch"])


def _library_of(x: Any) -> tuple[str, Any] | None:
    """``(library, device)`` of an array of a portprop backend (NumPy included), or
    ``None`` for lists, scalars, SciPy sparse matrices and pandas objects (which
    scikit-learn also leaves out of its namespace check)."""
    if not is_array(x) or hasattr(x, "tocsr"):
        return None
    try:
        backend = backend_of(x)
    except (TypeError, UnknownBackendError):
        return None
    return backend.library, backend.device


def follow_X(X: Any, y: Any) -> Any:
    """Under ``array_api_dispatch``, scikit-learn's rule for several inputs (its
    ``check_array_api_mixed_inputs``): everything follows ``X``, so ``y`` of another
    library or device moves to ``X``'s (to the host when ``X`` is NumPy, a list or
    sparse).  Without dispatch, ``y`` is left as it is (and later read on the host)."""
    if not dispatch_enabled() or _library_of(y) is None:
        return y
    target = _device_backend(X) if _library_of(X) is not None else None
    if target is None:
        return _to_host(y)
    return y if target.owns(y) else target.asarray(y, argname="y")


def fitted_namespace(X: Any) -> tuple[str, str] | None:
    """The library and device of the arrays ``fit`` got (under dispatch), or ``None``
    for NumPy and host inputs, or without dispatch: what ``predict`` must match."""
    if not dispatch_enabled():
        return None
    found = _library_of(X)
    if found is None or found[0] == "numpy":
        return None
    return found[0], str(found[1])


def check_fitted_namespace(estimator: Any, X: Any, method: str) -> None:
    """scikit-learn's ``check_same_namespace``: under dispatch, ``X`` of ``predict``
    (and the other methods) must be of the library and device ``fit`` got; a
    ``ValueError`` with scikit-learn's message otherwise."""
    if not dispatch_enabled():
        return
    fitted = getattr(estimator, "_fitted_namespace", None)
    found = fitted_namespace(X)
    if found == fitted:
        return
    name = type(estimator).__name__
    fit_lib, fit_device = fitted or ("numpy", "cpu")
    now_lib, now_device = found or ("numpy", "cpu")
    if fit_lib != now_lib:
        detail = f"Array namespaces used during fit ({fit_lib}) and {method} ({now_lib}) differ."
    else:
        detail = f"Devices used during fit ({fit_device}) and {method} ({now_device}) differ."
    msg = (
        f"Inputs passed to {name}.{method}() must use the same namespace and the same "
        f"device as those passed to fit(). {detail}"
    )
    raise ValueError(msg)


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
