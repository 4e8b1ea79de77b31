"""Every check and conversion of user data: the one place that refuses bad arguments.

:func:`~portprop.fit`, :func:`~portprop.evaluate` and :func:`~portprop.predict` call it,
and so do the scikit-learn estimators and the command line.  It checks the arguments
(:func:`number`, :func:`positive_int`, :func:`check_metrics`, :func:`check_model`,
:func:`check_loss`, :func:`check_optimizer`, :func:`check_lengths`), reads data of any
library or nested lists (:func:`as_array`, :func:`kind_of`, :func:`require_numbers`,
:func:`require_2d`), converts it once to the model's backend, device and dtype
(:func:`as_features`, :func:`convert`), and queues the checks of its values (NaN,
infinity, labels out of range) on a :class:`Checks`, which reads them all back with a
single host-device synchronization.  Every error names the argument, the value expected
and the value found (see the Notes of :func:`portprop.fit`).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence, Sized
from typing import Any

from portprop.backend import Backend, backend_of, dtype_name, get_backend, is_array
from portprop.losses import BCEWithLogitsLoss, CrossEntropyLoss
from portprop.module import Module, Parameter, rank_hint
from portprop.training.metrics import METRICS

__all__ = [
    "Checks",
    "accuracy_kind",
    "as_array",
    "as_features",
    "check_lengths",
    "check_loss",
    "check_metrics",
    "check_model",
    "check_optimizer",
    "convert",
    "first_value",
    "index_dtype",
    "kind_of",
    "number",
    "positive_int",
    "require_2d",
    "require_features",
    "require_finite",
    "require_numbers",
    "require_samples",
]

Array = Any


# --------------------------------------------------------------------------------------
# Argument checks (all of them run before any computation)
# --------------------------------------------------------------------------------------


def number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {value!r}"
        raise TypeError(msg)
    return float(value)


def positive_int(value: Any, name: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int >= {low}, got {value!r} of type {type(value).__name__}"
        raise TypeError(msg)
    if value < low:
        msg = f"{name} must be an int >= {low}, got {value}"
        raise ValueError(msg)
    return int(value)


def check_metrics(metrics: Any) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else metrics
    try:
        names = tuple(names)
    except TypeError:
        msg = f"metrics must be a sequence of names from {METRICS}, got {metrics!r}"
        raise TypeError(msg) from None
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        msg = f"unknown metric(s) {unknown} in metrics={metrics!r}; the metrics are {METRICS}"
        raise ValueError(msg)
    return tuple(m for m in METRICS if m == "loss" or m in names)


def check_model(model: Any) -> Module:
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    return model


def check_loss(loss: Any) -> None:
    for method in ("forward", "backward"):
        if not callable(getattr(loss, method, None)):
            msg = (
                f"loss must be a portprop loss (CrossEntropyLoss, MSELoss, ...) with forward "
                f"and backward methods, got {type(loss).__name__}"
            )
            raise TypeError(msg)
    if getattr(loss, "reduction", None) == "none":
        msg = (
            "loss has reduction='none', but fit needs one scalar loss per batch: build it "
            "with reduction='mean' or 'sum'"
        )
        raise ValueError(msg)


def check_optimizer(optimizer: Any, model: Module) -> None:
    if not callable(getattr(optimizer, "step", None)):
        msg = f"optimizer must have a step() method (pp.SGD, ...), got {type(optimizer).__name__}"
        raise TypeError(msg)
    params = getattr(optimizer, "params", None)
    if isinstance(params, list) and all(isinstance(p, Parameter) for p in params):
        own = {id(p) for p in model.parameters()}
        if own and not any(id(p) in own for p in params):
            msg = (
                "optimizer holds none of the model's parameters; build it with "
                "pp.SGD(model.parameters(), ...)"
            )
            raise ValueError(msg)


def _sample_count(x: Any) -> int | None:
    """The number of samples of ``x`` without moving it, or ``None`` where it has none
    (a 0-d array, a scalar: the checks of its rank say what is wrong with it later)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) > 0 and shape[0] is not None else None
    try:
        return len(x)
    except TypeError:
        return None


def check_lengths(X: Any, y: Any, xname: str, yname: str) -> None:
    """Raise unless ``X`` and ``y`` hold as many samples, where both counts are known."""
    nx, ny = _sample_count(X), _sample_count(y)
    if nx is not None and ny is not None and nx != ny:
        msg = f"{xname} and {yname} must hold as many samples: {xname} has {nx}, {yname} has {ny}"
        raise ValueError(msg)


# --------------------------------------------------------------------------------------
# Conversion to the model's backend, and the checks of the values
# --------------------------------------------------------------------------------------


def require_2d(X: Any, argname: str) -> None:
    """Raise unless ``X`` is 2-D; objects without a shape (lists) pass until converted."""
    shape = getattr(X, "shape", None)
    if shape is None and isinstance(X, numbers.Number):
        shape = ()
    if shape is None or len(shape) == 2:
        return
    ndim = len(shape)
    shown = f"shape {tuple(shape)}" + ("" if ndim else " (a single value)")
    msg = f"{argname} must be 2-D (samples, features), got {shown}.{rank_hint(argname, ndim)}"
    raise ValueError(msg)


def _refuse_masked(x: Any, argname: str | None) -> None:
    """Refuse a NumPy masked array, as SciPy does: its mask would be dropped (the masked
    entries' hidden values used as data, as ``numpy.asarray`` and scikit-learn do) or
    would break the matrix products.  Known by its class, without importing NumPy."""
    if not any(
        cls.__name__ == "MaskedArray" and getattr(cls, "__module__", "").startswith("numpy.ma")
        for cls in type(x).__mro__
    ):
        return
    masked = int(x.mask.sum())  # numpy.ma.nomask, no mask, sums to 0 too
    msg = (
        f"{argname or 'an input'} is a NumPy masked array ({masked} masked value"
        f"{'s' if masked != 1 else ''}), which portprop does not take: fill the masked "
        f"values first, {argname or 'x'}.filled(value) with a value that means something "
        "for your data, or drop the samples that hold them"
    )
    raise TypeError(msg)


def as_array(x: Any, argname: str) -> Array:
    """``x`` itself when it is an array of any backend; else (lists, tuples, pandas
    objects, other array-likes) a NumPy array built on the host, where the data is.
    A NumPy masked array is refused (``TypeError``)."""
    if is_array(x):
        _refuse_masked(x, argname)
        return x
    try:
        return get_backend(backend="numpy").xp.asarray(x)
    except (ValueError, TypeError) as exc:
        raise _unreadable(x, argname, exc) from None


def _unreadable(x: Any, argname: str, exc: Exception) -> Exception:
    """The error for data NumPy cannot turn into an array: ragged rows, most often."""
    if isinstance(x, Sequence) and not isinstance(x, str):
        lengths = [len(row) if isinstance(row, Sized) else None for row in x]
        for i, n in enumerate(lengths):
            if n != lengths[0]:
                first = "not a sequence" if lengths[0] is None else f"{lengths[0]} values"
                here = "not a sequence" if n is None else f"{n} values"
                msg = (
                    f"{argname} is ragged: its rows must all have the same length, but row 0 "
                    f"has {first} and row {i} has {here}; pass a rectangular array"
                )
                return ValueError(msg)
    msg = f"{argname} cannot be read as an array of numbers: {exc}"
    return ValueError(msg)


def kind_of(x: Array, argname: str | None = None) -> str:
    """What ``x`` holds: ``"bool"``, ``"integer"``, ``"floating"``, ``"complex"``,
    ``"strings"``, ``"objects"``, or else the name of its dtype.  A NumPy masked array
    is refused here too (``TypeError``): every reader of user data asks this question,
    the scikit-learn estimators included, which leave NumPy arrays to scikit-learn."""
    _refuse_masked(x, argname)
    dtype = x.dtype
    code = getattr(dtype, "kind", None)  # NumPy's one-letter code; other libraries lack it
    if code in ("U", "S", "T"):
        return "strings"
    if code == "O":
        return "objects"
    xp = backend_of(x).xp
    for kind, label in (
        ("bool", "bool"),
        ("integral", "integer"),
        ("real floating", "floating"),
        ("complex floating", "complex"),
    ):
        with contextlib.suppress(TypeError, ValueError):
            if xp.isdtype(dtype, kind):
                return label
    return dtype_name(dtype)


def first_value(x: Array) -> str:
    """The first element of ``x`` as shown in a message (error path only)."""
    try:
        host = backend_of(x).to_host(x)
        return repr(host.reshape(-1)[0].item()) if host.size else "none"
    except Exception:  # noqa: BLE001 - a message must not fail
        return "?"


def require_numbers(x: Array, argname: str, what: str) -> str:
    """Raise a ``TypeError`` unless ``x`` holds bool, integer or real floating values;
    return which.  ``what`` says what the values are for (in the message)."""
    kind = kind_of(x, argname)
    if kind in ("bool", "integer", "floating"):
        return kind
    name = dtype_name(x.dtype)
    if kind == "complex":
        detail = (
            f"complex values (dtype {name}); portprop computes with real numbers: pass "
            f"{argname}.real if the imaginary parts are meaningless"
        )
    elif kind == "strings":
        detail = (
            f"strings (dtype {name}, the first is {first_value(x)}); encode them as numbers first"
        )
    elif kind == "objects":
        detail = (
            f"Python objects (dtype object); convert it with numpy.asarray({argname}, "
            "dtype=float) if they are numbers"
        )
    else:
        detail = f"dtype {name}"
    msg = f"{argname} must hold real numbers (bool, integer or floating) as {what}, got {detail}"
    raise TypeError(msg)


class Checks:
    """Conditions on the values of the data, computed on the device as 0-d booleans and
    read back *together*: one host-device synchronization for all of them.  Each comes
    with a function that builds its error, called only when it failed (slow path)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.items: list[tuple[Array, Callable[[], Exception]]] = []

    def add(self, ok: Array, error: Callable[[], Exception]) -> None:
        self.items.append((ok, error))

    def run(self) -> None:
        if not self.items:
            return
        with self.backend.scope():
            ok = self.items[0][0]
            for cond, _ in self.items[1:]:
                ok = ok & cond
            if bool(ok):  # the one synchronization
                return
            for cond, error in self.items:
                if not bool(cond):
                    raise error()


def _position(index: int, shape: tuple[int, ...], column: str) -> str:
    if len(shape) == 2:
        return f"sample {index // shape[1]}, {column} {index % shape[1]}"
    return f"sample {index}"


def _first_true(xp: Any, mask: Array) -> tuple[int, int]:
    """The flat index of the first ``True`` of ``mask`` and how many there are."""
    flat = xp.reshape(mask, (-1,))
    return int(xp.argmax(xp.astype(flat, xp.int8))), int(xp.count_nonzero(flat))


def _not_finite(
    xp: Any, a: Array, argname: str, column: str, cast: tuple[str, str] | None
) -> ValueError:
    """The error for an array holding NaN or infinity (slow path): which, and where."""
    index, count = _first_true(xp, ~xp.isfinite(a))
    value = float(xp.reshape(a, (-1,))[index])
    what = "NaN" if math.isnan(value) else "infinity"
    msg = (
        f"Input {argname} contains {what} (first at {_position(index, tuple(a.shape), column)}; "
        f"{count} NaN or infinite value{'s' if count > 1 else ''} in all): {argname} must hold "
        "finite values"
    )
    if cast is not None and what == "infinity":
        msg += (
            f" (it was cast from {cast[0]} to the model's {cast[1]}, where values beyond "
            f"the range of {cast[1]} become infinite)"
        )
    return ValueError(msg + ".")


def _check_finite(
    checks: Checks, a: Array, argname: str, column: str, cast: tuple[str, str] | None
) -> None:
    """Queue the check that floating ``a`` holds no NaN or infinity: one reduction."""
    xp = checks.backend.xp
    checks.add(xp.all(xp.isfinite(a)), lambda: _not_finite(xp, a, argname, column, cast))


def _cast_from(X: Array, dtype: Any) -> tuple[str, str] | None:
    source, target = dtype_name(X.dtype), dtype_name(dtype)
    return None if source == target else (source, target)


def as_features(model: Module, X: Any, argname: str, checks: Checks) -> Array:
    """``X`` on the model's backend and in its dtype, 2-D with the model's number of
    features (moved only if needed); its finiteness is queued on ``checks``."""
    backend, dtype = model.backend, model.dtype
    require_2d(X, argname)
    X = as_array(X, argname)
    require_numbers(X, argname, "features")
    require_2d(X, argname)
    cast = _cast_from(X, dtype)
    if not (backend.owns(X) and X.dtype == dtype):
        X = backend.asarray(X, dtype=dtype, argname=argname)
    model._check_input(X, argname)  # the number of features, when the model fixes it
    require_features(X, argname, "the model")
    _check_finite(checks, X, argname, "feature", cast)
    return X


def index_dtype(backend: Backend) -> Any:
    info = backend.xp.__array_namespace_info__()
    try:
        return info.default_dtypes(device=backend.device)["indexing"]
    except TypeError:
        return info.default_dtypes()["indexing"]


def _as_labels(
    backend: Backend, y: Any, argname: str, n_classes: int | None, checks: Checks
) -> Array:
    """Class labels ``(samples,)`` of an integer dtype, for cross-entropy; that they are
    whole, finite and in ``[0, n_classes)`` is queued on ``checks`` (one reduction)."""
    xp = backend.xp
    y = as_array(y, argname)
    kind = kind_of(y, argname)
    if kind == "strings":
        msg = (
            f"{argname} holds strings (dtype {dtype_name(y.dtype)}, the first is "
            f"{first_value(y)}), but CrossEntropyLoss takes integer class labels 0 to "
            f"n_classes - 1: encode them first (classes, {argname} = "
            f"numpy.unique({argname}, return_inverse=True)), or use "
            "portprop.sklearn.MLPClassifier, which encodes any labels itself"
        )
        raise TypeError(msg)
    require_numbers(y, argname, "class labels")
    y = backend.asarray(y, argname=argname)  # also the library's own: torch widens uint64
    if y.ndim == 2 and y.shape[1] == 1:
        y = xp.reshape(y, (-1,))
    if y.ndim != 1:
        msg = (
            f"{argname} must hold one class label per sample, shape (samples,), for "
            f"CrossEntropyLoss; got shape {tuple(y.shape)}"
        )
        raise ValueError(msg)
    index = index_dtype(backend)
    if kind == "floating":
        good = xp.isfinite(y) & (y == xp.floor(y))
        if n_classes is not None:
            good = good & (y >= 0.0) & (y < float(n_classes))
        labels = xp.astype(xp.where(good, y, xp.zeros_like(y)), index)
        checks.add(xp.all(good), lambda: _bad_labels(xp, y, argname, n_classes))
        return labels
    if kind != "integer":  # bool
        y = xp.astype(y, index)
    if n_classes is not None:  # on the integers as given, before a cast could wrap them
        in_range = (y >= 0) & (y < n_classes)
        checks.add(xp.all(in_range), lambda: _bad_labels(xp, y, argname, n_classes))
    # one integer dtype for every label array, so that metrics compare them with argmax
    return y if y.dtype == index else xp.astype(y, index)


def _bad_labels(xp: Any, y: Array, argname: str, n_classes: int | None) -> Exception:
    """The error for labels that are not finite, not whole or out of range (slow path)."""
    if xp.isdtype(y.dtype, "real floating"):
        if not bool(xp.all(xp.isfinite(y))):
            return _not_finite(xp, y, argname, "", None)
        fraction = y != xp.floor(y)
        if bool(xp.any(fraction)):
            index, _ = _first_true(xp, fraction)
            msg = (
                f"{argname} must hold integer class labels for CrossEntropyLoss, got dtype "
                f"{dtype_name(y.dtype)} with values that are not whole numbers (the first at "
                f"sample {index}: {float(y[index])!r})"
            )
            return TypeError(msg)
    assert n_classes is not None
    index, count = _first_true(xp, (y < 0) | (y >= n_classes))
    low, high = float(xp.min(y)), float(xp.max(y))
    msg = (
        f"{argname} holds class labels from {low:g} to {high:g}, but the model "
        f"has {n_classes} output{'s' if n_classes > 1 else ''}: CrossEntropyLoss needs labels "
        f"in [0, {n_classes}) ({count} out of range, the first at sample {index}: "
        f"{float(y[index]):g})"
    )
    return ValueError(msg)


def _as_targets(
    backend: Backend,
    dtype: Any,
    y: Any,
    argname: str,
    n_outputs: int | None,
    loss: Any,
    checks: Checks,
) -> Array:
    """Targets in the model's dtype, 2-D ``(samples, outputs)`` with the model's number
    of outputs; their finiteness is queued on ``checks``."""
    y = as_array(y, argname)
    require_numbers(y, argname, f"targets of {type(loss).__name__}")
    cast = _cast_from(y, dtype)
    if not (backend.owns(y) and y.dtype == dtype):
        y = backend.asarray(y, dtype=dtype, argname=argname)
    if y.ndim == 1:
        y = backend.xp.reshape(y, (-1, 1))
    if y.ndim != 2:
        msg = f"{argname} must be 1-D or 2-D (samples, outputs), got shape {tuple(y.shape)}"
        raise ValueError(msg)
    if n_outputs is not None and y.shape[1] != n_outputs:
        msg = (
            f"{argname} has {y.shape[1]} column{'s' if y.shape[1] != 1 else ''} (shape "
            f"{tuple(y.shape)}; a 1-D {argname} is one column), but the model has "
            f"{n_outputs} output{'s' if n_outputs != 1 else ''}: {type(loss).__name__} needs "
            f"targets of shape (samples, {n_outputs})"
        )
        raise ValueError(msg)
    _check_finite(checks, y, argname, "output", cast)
    return y


def _uses_labels(loss: Any) -> bool:
    return isinstance(loss, CrossEntropyLoss)


def convert(
    model: Module, loss: Any, X: Any, y: Any, names: tuple[str, str], checks: Checks
) -> tuple[Any, Any]:
    """``X`` and ``y`` on the model's backend, checked for everything but their values,
    whose checks are queued on ``checks`` (run them with ``checks.run()``)."""
    backend, dtype = model.backend, model.dtype
    with backend.scope():
        X = as_features(model, X, names[0], checks)
        if _uses_labels(loss):
            y = _as_labels(backend, y, names[1], model._n_out(), checks)
        else:
            y = _as_targets(backend, dtype, y, names[1], model._n_out(), loss, checks)
    if X.shape[0] != y.shape[0]:
        msg = (
            f"{names[0]} and {names[1]} must hold as many samples: {names[0]} has "
            f"{X.shape[0]}, {names[1]} has {y.shape[0]}"
        )
        raise ValueError(msg)
    return X, y


def require_samples(X: Array, argname: str, caller: str) -> None:
    """Raise unless ``X`` has at least one sample (row); ``caller`` needs them."""
    if X.shape[0] == 0:
        msg = f"{argname} has 0 samples (shape {tuple(X.shape)}); {caller} needs at least 1"
        raise ValueError(msg)


def require_features(X: Array, argname: str, caller: str) -> None:
    """Raise unless 2-D ``X`` has at least one feature (column); ``caller`` needs them."""
    if X.shape[1] == 0:
        msg = f"{argname} has 0 features (shape {tuple(X.shape)}); {caller} needs at least 1"
        raise ValueError(msg)


def require_finite(a: Array, argname: str, column: str = "feature") -> None:
    """Raise a ``ValueError`` unless floating ``a``, an array of any backend, holds only
    finite values (one reduction; where the first NaN or infinity is, in the message).
    ``column`` names what the columns of a 2-D ``a`` are."""
    checks = Checks(backend_of(a))
    _check_finite(checks, a, argname, column, None)
    checks.run()


def accuracy_kind(loss: Any, y: Array, argname: str) -> str:
    """How accuracy compares outputs and targets: ``"argmax"`` (labels), ``"threshold"``
    (logits against 0/1 targets, elementwise) or ``"onehot"`` (argmax of both)."""
    if _uses_labels(loss):
        return "argmax"
    if isinstance(loss, BCEWithLogitsLoss):
        return "threshold"
    if y.shape[1] > 1:
        return "onehot"
    msg = (
        f"metric 'accuracy' needs class labels (CrossEntropyLoss), 0/1 targets "
        f"(BCEWithLogitsLoss) or one-hot targets with several columns; got "
        f"{type(loss).__name__} with {argname} of shape {tuple(y.shape)}"
    )
    raise ValueError(msg)
