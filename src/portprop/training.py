"""Training loops: :func:`fit`, :func:`evaluate` and :func:`predict`.

They wrap the manual loop of forward, loss, backward and step::

    out = model.forward(X_batch)
    loss.forward(out, y_batch)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    optimizer.step()

and add mini-batching, shuffling, validation, metrics, callbacks, learning-rate
schedules, gradient clipping, a check for divergence and a progress display.

Input data
----------
``X`` and ``y`` may come from any supported library (NumPy, torch, JAX, CuPy,
array-api-strict) or be nested lists, tuples or other array-likes (pandas objects),
which are read on the host with NumPy first.  They are converted **once**, before the
first epoch, to the model's backend, device and dtype:

- data that already lives there, in the model's dtype, is used as is (no copy);
- data of another library on the same device is imported through DLPack (no copy,
  e.g. NumPy into a ``torch:cpu`` model, or torch CUDA tensors into a CuPy model);
- host data (NumPy arrays, lists) for a model on a GPU costs one host-to-device copy;
- floating data of another floating dtype (float64 data for a float32 model) is cast,
  which costs one more copy.  The low-level :meth:`Module.forward` refuses such data;
  these functions convert it for you, the same way on every backend.

The whole data set then stays on the device: a data set that does not fit in device
memory must be batched by hand.  Features ``X`` must be 2-D ``(samples, features)``.
Targets ``y`` are class labels ``(samples,)`` of an integer dtype for
:class:`~portprop.CrossEntropyLoss` (floating or boolean labels holding whole numbers
are converted, a ``(samples, 1)`` column is flattened); for other losses they are cast
to the model's dtype, and a 1-D ``y`` becomes a ``(samples, 1)`` column.

Every argument is checked before any computation; the Notes of :func:`fit` list what
is refused and what is converted.

Cost of the divergence check
----------------------------
Before each optimizer step, :func:`fit` checks on the device that the loss and every
gradient are finite (``isfinite`` of the loss plus the sum of every gradient) and reads
that one boolean back to the host, so a NaN or an infinity stops training *before* it
reaches the parameters.  That is one host-device synchronization per batch; everything
else (the running loss, the accuracy) is summed on the device and read back once per
epoch.  With ``clip_grad_norm``, the total norm that clipping returns replaces the sum
of the gradients.

Measured on a shared 2-core CPU (the lecture's 2-25-25-25-2 network, batches of 50,
process time per step, best of 9 runs of 100 steps), compared with no check at all:

==================  ==========  ====================  =====================
backend             no check    the loss alone        loss and gradients
==================  ==========  ====================  =====================
numpy               308 us      +2 us (+1%)           +34 us (+11%)
torch (cpu)         659 us      +16 us (+3%)          +62 us (+9%)
array-api-strict    1968 us     +0 us                 +194 us (+10%)
jax (eager)         6499 us     +104 us (+2%)         +103 us (+2%)
==================  ==========  ====================  =====================

The synchronization itself is cheap on a CPU; the gradient sums cost one reduction per
parameter, a fixed per-operation overhead that matters for small layers only.  On a GPU
the synchronization also stops the host from queueing the next batch's kernels before
the current ones finish (not measured here).  Note that
:class:`~portprop.CrossEntropyLoss` already reads the range of the labels back to the
host in every ``forward``.  A step with finite gradients that overflows the parameters
themselves (``|lr * grad|`` beyond the dtype's range) is not caught before it happens.

Numbering
---------
Epochs and batches given to callbacks and stored in :attr:`History.epoch` count from 0,
as in Keras; the progress display and :class:`~portprop.TrainingDivergedError` count
from 1, and say so.

Progress (``verbose``)
----------------------
``0``: nothing is printed.  ``1`` (default): a tqdm bar per epoch on standard error,
with the loss and metrics in its postfix, when standard error is a terminal and tqdm is
installed; otherwise one summary line per epoch on standard error.  ``2``: one summary
line per epoch, always.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from portprop import optim as _optim
from portprop._backend import (
    Backend,
    _is_array,
    backend_of,
    dtype_name,
    get_backend,
    host_generator,
)
from portprop.errors import TrainingDivergedError
from portprop.losses import BCEWithLogitsLoss, CrossEntropyLoss
from portprop.module import Module, Parameter, rank_hint

__all__ = [
    "METRICS",
    "Callback",
    "EarlyStopping",
    "History",
    "TrainingState",
    "evaluate",
    "fit",
    "predict",
]

Array = Any

#: The metric names that ``metrics=`` accepts.  The loss is always reported.
METRICS = ("loss", "accuracy")

#: Seconds between two updates of the running loss shown by the progress bar.
_POSTFIX_INTERVAL = 0.5


# --------------------------------------------------------------------------------------
# Results and callbacks
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : dict of str to list of float
        One value per epoch for each of ``"loss"``, ``"accuracy"`` (when asked for),
        ``"val_loss"`` and ``"val_accuracy"`` (with validation data), and ``"lr"`` (when
        a ``schedule`` is given: the learning rate of the epoch's last optimizer step,
        which is the epoch's only one for a schedule stepped per epoch).
    epoch : list of int
        The epochs run, counted from 0.
    time_per_epoch : list of float
        Wall-clock seconds of each epoch, validation included.
    params : dict
        ``epochs``, ``batch_size`` and ``steps`` (batches per epoch) of the run.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    time_per_epoch: list[float] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v)
        return f"History(epochs={len(self.epoch)}{', ' if last else ''}{last})"


@dataclass
class TrainingState:
    """What a running :func:`fit` shares with its callbacks (as ``callback.state``).

    Set :attr:`stop_training` to ``True`` to stop: :func:`fit` finishes the current
    epoch (a request from ``on_batch_end`` ends it after that batch) and returns.
    """

    model: Module
    loss: Any
    optimizer: Any
    epochs: int
    batch_size: int
    steps: int
    log_keys: tuple[str, ...]
    history: History
    epoch: int = 0
    stop_training: bool = False


class Callback:
    """Base class of the objects passed in ``fit(..., callbacks=[...])``.

    :func:`fit` sets :attr:`state` (a :class:`TrainingState`) before calling
    :meth:`on_train_begin`.  ``epoch`` and ``batch`` count from 0; ``logs`` maps the
    names of :attr:`TrainingState.log_keys` to floats.  Every hook does nothing by
    default; override the ones you need.
    """

    state: TrainingState | None = None

    def on_train_begin(self, logs: dict[str, float]) -> None:
        """Before the first epoch; raise here to refuse a run (nothing has changed yet)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float]) -> None:
        """Before each epoch."""

    def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        """After each optimizer step; ``logs`` holds the batch's ``"loss"`` and ``"size"``.

        Reading the loss costs a device-to-host copy per batch, so :func:`fit` only does
        it when some callback overrides this method.
        """

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch and its validation; ``logs`` holds the epoch's metrics."""

    def on_train_end(self, logs: dict[str, float]) -> None:
        """After the last epoch (not when training raised)."""


class EarlyStopping(Callback):
    """Stop training when a monitored quantity stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs (``"loss"``, ``"accuracy"``, ``"val_loss"``, ...).
    patience : int, default 5
        Epochs without improvement after which training stops.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether smaller or larger is better; ``"auto"`` picks ``"max"`` for accuracies
        and ``"min"`` otherwise.
    restore_best_weights : bool, default True
        At the end of training, copy back the parameters of the best epoch.  Each
        improvement keeps a copy of every parameter (``xp.asarray(p.data, copy=True)``).
        The optimizer's state (momentum, moment estimates) is not restored.

    Attributes
    ----------
    best : float
        The best value seen.
    best_epoch, stopped_epoch : int or None
        Counted from 0; ``stopped_epoch`` is ``None`` unless this callback stopped.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if not isinstance(monitor, str):
            msg = f"monitor must be a log key such as 'val_loss', got {monitor!r}"
            raise TypeError(msg)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            msg = f"patience must be an int >= 0, got {patience!r}"
            raise ValueError(msg)
        delta = _number(min_delta, "min_delta")
        if delta < 0:
            msg = f"min_delta must be >= 0, got {min_delta!r}"
            raise ValueError(msg)
        if mode not in ("auto", "min", "max"):
            msg = f"mode must be 'auto', 'min' or 'max', got {mode!r}"
            raise ValueError(msg)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor = monitor
        self.patience = patience
        self.min_delta = delta
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_weights: list[Array] | None = None
        self._last_epoch: int | None = None

    def _state(self) -> TrainingState:
        if self.state is None:
            msg = "EarlyStopping is used by portprop.fit(callbacks=[...]), which sets its state"
            raise RuntimeError(msg)
        return self.state

    def on_train_begin(self, logs: dict[str, float]) -> None:  # noqa: ARG002
        state = self._state()
        if self.monitor not in state.log_keys:
            msg = (
                f"EarlyStopping(monitor={self.monitor!r}): fit logs only "
                f"{', '.join(repr(k) for k in state.log_keys)}; pass validation_data= or "
                "validation_split= for 'val_*' keys, and metrics=('loss', 'accuracy') for "
                "accuracies"
            )
            raise ValueError(msg)
        self._reset()

    def _improved(self, current: float) -> bool:
        if math.isnan(current):
            return False
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        state = self._state()
        self._last_epoch = epoch
        current = logs[self.monitor]
        if self._improved(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _copy_parameters(state.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            state.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:  # noqa: ARG002
        state = self._state()
        weights = self.best_weights
        if weights is None or not self.restore_best_weights or self.best_epoch == self._last_epoch:
            return
        model = state.model
        with model.backend.scope():
            for p, best in zip(model.parameters(), weights, strict=True):
                p.data = model.backend.xp.asarray(best, copy=True)
                p.grad = None

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, mode={self.mode!r}, "
            f"restore_best_weights={self.restore_best_weights})"
        )


def _copy_parameters(model: Module) -> list[Array]:
    xp = model.backend.xp
    with model.backend.scope():
        return [xp.asarray(p.data, copy=True) for p in model.parameters()]


# --------------------------------------------------------------------------------------
# Argument checks (all of them run before any computation)
# --------------------------------------------------------------------------------------


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {value!r}"
        raise TypeError(msg)
    return float(value)


def _positive_int(value: Any, name: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int >= {low}, got {value!r} of type {type(value).__name__}"
        raise TypeError(msg)
    if value < low:
        msg = f"{name} must be an int >= {low}, got {value}"
        raise ValueError(msg)
    return int(value)


def _check_metrics(metrics: Any) -> tuple[str, ...]:
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


def _check_model(model: Any) -> Module:
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    return model


def _check_loss(loss: Any) -> None:
    for method in ("forward", "backward"):
        if not callable(getattr(loss, method, None)):
            msg = (
                f"loss must be a portprop loss (CrossEntropyLoss, MSELoss, ...) with forward "
                f"and backward methods, got {type(loss).__name__}"
            )
            raise TypeError(msg)


def _check_optimizer(optimizer: Any, model: Module) -> None:
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


def _sample_count(x: Any, argname: str) -> int | None:
    """The number of samples of ``x`` without moving it, or ``None`` if unknown yet."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            msg = f"{argname} must hold one row per sample, got a 0-d array"
            raise ValueError(msg)
        return int(shape[0])
    try:
        return len(x)
    except TypeError:
        msg = f"{argname} must be an array or a sequence of samples, got {type(x).__name__}"
        raise TypeError(msg) from None


def _check_lengths(X: Any, y: Any, xname: str, yname: str) -> None:
    nx, ny = _sample_count(X, xname), _sample_count(y, yname)
    if nx is not None and ny is not None and nx != ny:
        msg = f"{xname} and {yname} must hold as many samples: {xname} has {nx}, {yname} has {ny}"
        raise ValueError(msg)


# --------------------------------------------------------------------------------------
# Conversion to the model's backend, and the checks of the values
# --------------------------------------------------------------------------------------


def _require_2d(X: Any, argname: str) -> None:
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


def _as_array(x: Any, argname: str) -> Array:
    """``x`` itself when it is an array of any backend; else (lists, tuples, pandas
    objects, other array-likes) a NumPy array built on the host, where the data is."""
    if _is_array(x):
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


def _kind(x: Array) -> str:
    """What ``x`` holds: ``"bool"``, ``"integer"``, ``"floating"``, ``"complex"``,
    ``"strings"``, ``"objects"``, or else the name of its dtype."""
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


def _first_value(x: Array) -> str:
    """The first element of ``x`` as shown in a message (error path only)."""
    try:
        host = backend_of(x).to_host(x)
        return repr(host.reshape(-1)[0].item()) if host.size else "none"
    except Exception:  # noqa: BLE001 - a message must not fail
        return "?"


def _require_numbers(x: Array, argname: str, what: str) -> str:
    """Raise a ``TypeError`` unless ``x`` holds bool, integer or real floating values;
    return which.  ``what`` says what the values are for (in the message)."""
    kind = _kind(x)
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
            f"strings (dtype {name}, the first is {_first_value(x)}); encode them as numbers first"
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


class _Checks:
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
    checks: _Checks, a: Array, argname: str, column: str, cast: tuple[str, str] | None
) -> None:
    """Queue the check that floating ``a`` holds no NaN or infinity: one reduction."""
    xp = checks.backend.xp
    checks.add(xp.all(xp.isfinite(a)), lambda: _not_finite(xp, a, argname, column, cast))


def _cast_from(X: Array, dtype: Any) -> tuple[str, str] | None:
    source, target = dtype_name(X.dtype), dtype_name(dtype)
    return None if source == target else (source, target)


def _as_features(model: Module, X: Any, argname: str, checks: _Checks) -> Array:
    """``X`` on the model's backend and in its dtype, 2-D with the model's number of
    features (moved only if needed); its finiteness is queued on ``checks``."""
    backend, dtype = model.backend, model.dtype
    _require_2d(X, argname)
    X = _as_array(X, argname)
    _require_numbers(X, argname, "features")
    _require_2d(X, argname)
    cast = _cast_from(X, dtype)
    if not (backend.owns(X) and X.dtype == dtype):
        X = backend.asarray(X, dtype=dtype)
    model._check_input(X, argname)  # the number of features, when the model fixes it
    if X.shape[1] == 0:
        msg = f"{argname} has 0 features (shape {tuple(X.shape)}); the model needs at least 1"
        raise ValueError(msg)
    _check_finite(checks, X, argname, "feature", cast)
    return X


def _index_dtype(backend: Backend) -> Any:
    info = backend.xp.__array_namespace_info__()
    try:
        return info.default_dtypes(device=backend.device)["indexing"]
    except TypeError:
        return info.default_dtypes()["indexing"]


def _as_labels(
    backend: Backend, y: Any, argname: str, n_classes: int | None, checks: _Checks
) -> Array:
    """Class labels ``(samples,)`` of an integer dtype, for cross-entropy; that they are
    whole, finite and in ``[0, n_classes)`` is queued on ``checks`` (one reduction)."""
    xp = backend.xp
    y = _as_array(y, argname)
    kind = _kind(y)
    if kind == "strings":
        msg = (
            f"{argname} holds strings (dtype {dtype_name(y.dtype)}, the first is "
            f"{_first_value(y)}), but CrossEntropyLoss takes integer class labels 0 to "
            f"n_classes - 1: encode them first (classes, {argname} = "
            f"numpy.unique({argname}, return_inverse=True)), or use "
            "portprop.sklearn.MLPClassifier, which encodes any labels itself"
        )
        raise TypeError(msg)
    _require_numbers(y, argname, "class labels")
    if not backend.owns(y):
        y = backend.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = xp.reshape(y, (-1,))
    if y.ndim != 1:
        msg = (
            f"{argname} must hold one class label per sample, shape (samples,), for "
            f"CrossEntropyLoss; got shape {tuple(y.shape)}"
        )
        raise ValueError(msg)
    index = _index_dtype(backend)
    if kind == "floating":
        good = xp.isfinite(y) & (y == xp.floor(y))
        if n_classes is not None:
            good = good & (y >= 0.0) & (y < float(n_classes))
        labels = xp.astype(xp.where(good, y, xp.zeros_like(y)), index)
        checks.add(xp.all(good), lambda: _bad_labels(xp, y, argname, n_classes))
        return labels
    labels = y if kind == "integer" else xp.astype(y, index)
    if n_classes is not None:
        in_range = (labels >= 0) & (labels < n_classes)
        checks.add(xp.all(in_range), lambda: _bad_labels(xp, labels, argname, n_classes))
    return labels


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
    checks: _Checks,
) -> Array:
    """Targets in the model's dtype, 2-D ``(samples, outputs)`` with the model's number
    of outputs; their finiteness is queued on ``checks``."""
    y = _as_array(y, argname)
    _require_numbers(y, argname, f"targets of {type(loss).__name__}")
    cast = _cast_from(y, dtype)
    if not (backend.owns(y) and y.dtype == dtype):
        y = backend.asarray(y, dtype=dtype)
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


def _convert(
    model: Module, loss: Any, X: Any, y: Any, names: tuple[str, str], checks: _Checks
) -> tuple[Any, Any]:
    """``X`` and ``y`` on the model's backend, checked for everything but their values,
    whose checks are queued on ``checks`` (run them with ``checks.run()``)."""
    backend, dtype = model.backend, model.dtype
    with backend.scope():
        X = _as_features(model, X, names[0], checks)
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


def _require_samples(X: Array, argname: str, caller: str) -> None:
    if X.shape[0] == 0:
        msg = f"{argname} has 0 samples (shape {tuple(X.shape)}); {caller} needs at least 1"
        raise ValueError(msg)


def _accuracy_kind(loss: Any, y: Array, argname: str) -> str:
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


# --------------------------------------------------------------------------------------
# Device-side sums, read back once per epoch
# --------------------------------------------------------------------------------------


class _Totals:
    """The loss and the number of correct predictions, summed on the device."""

    def __init__(self, xp: Any, reduction: str, accuracy: str | None) -> None:
        self.xp = xp
        self.mean = reduction != "sum"
        self.accuracy = accuracy
        self.loss: Array | None = None
        self.correct: Array | None = None
        self.samples = 0
        self.elements = 0

    def add(self, value: Array, out: Array, target: Array) -> None:
        n = out.shape[0]
        # With reduction "mean" the batch loss is a mean over the batch: weighting it by
        # the batch size makes the epoch's loss the mean over every sample.
        weighted = value * float(n) if self.mean else value
        self.loss = weighted if self.loss is None else self.loss + weighted
        self.samples += n
        if self.accuracy is None:
            return
        xp = self.xp
        if self.accuracy == "argmax":
            hits = xp.count_nonzero(xp.argmax(out, axis=1) == target)
            self.elements += n
        elif self.accuracy == "onehot":
            hits = xp.count_nonzero(xp.argmax(out, axis=1) == xp.argmax(target, axis=1))
            self.elements += n
        else:  # logits > 0 against targets > 0.5, elementwise
            hits = xp.count_nonzero((out > 0.0) == (target > 0.5))
            self.elements += n * out.shape[1]
        self.correct = hits if self.correct is None else self.correct + hits

    def running_loss(self) -> float:
        if self.loss is None or self.samples == 0:
            return math.nan
        total = float(self.loss)
        return total / self.samples if self.mean else total

    def read(self, prefix: str = "") -> dict[str, float]:
        """The epoch's metrics as Python floats (the one read-back of the epoch)."""
        logs = {prefix + "loss": self.running_loss()}
        if self.accuracy is not None:
            correct = 0.0 if self.correct is None else float(self.correct)
            logs[prefix + "accuracy"] = correct / self.elements if self.elements else math.nan
        return logs


# --------------------------------------------------------------------------------------
# Modes and batches
# --------------------------------------------------------------------------------------


@contextmanager
def _mode(model: Module, training: bool) -> Iterator[None]:
    """Put every module in training or evaluation mode, and restore each one's mode."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


def _clear_caches(model: Module) -> None:
    for m in model.modules():
        m._clear_cache()


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _take(xp: Any, a: Array, start: int, stop: int, order: Array | None) -> Array:
    if order is None:
        return a[start:stop, ...]
    return xp.take(a, order[start:stop], axis=0)


def _run_eval(
    model: Module, loss: Any, X: Array, y: Array, batch_size: int, accuracy: str | None
) -> _Totals:
    totals = _Totals(model.backend.xp, getattr(loss, "reduction", "mean"), accuracy)
    with _mode(model, False), model.backend.scope():
        try:
            for start, stop in _batches(X.shape[0], batch_size):
                out = model.forward(X[start:stop, ...])
                target = y[start:stop, ...]
                totals.add(loss.forward(out, target), out, target)
        finally:
            _clear_caches(model)
    return totals


# --------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------


def _all_finite(xp: Any, value: Array, params: list[Parameter]) -> Array:
    """A 0-d boolean on the device: the loss and every gradient are finite.

    A NaN or an infinity anywhere makes the sum of the loss and of every gradient NaN or
    infinite, so one reduction per parameter and one ``isfinite`` do (``isfinite`` and
    ``all`` per parameter cost up to five times more, on torch and JAX, for the
    lecture's network).  The sum can also overflow while every term is finite: that
    too is divergence.
    """
    total = value
    for p in params:
        if p.grad is not None:
            total = total + xp.sum(p.grad)
    return xp.isfinite(total)


def _diverged(
    model: Module,
    value: Array,
    norm: float | None,
    *,
    epoch: int,
    epochs: int,
    batch: int,
    batches: int,
) -> TrainingDivergedError:
    """The error for a batch whose loss or gradients are not finite (slow path).

    ``norm`` is the total gradient norm that clipping returned, or ``None`` without
    clipping (clipping a non-finite norm has already overwritten the gradients).  The
    data themselves are finite: :func:`fit` checked them before the first epoch.
    """
    xp = model.backend.xp
    bad = (
        []
        if norm is not None
        else [
            n
            for n, p in model.named_parameters()
            if p.grad is not None and not bool(xp.all(xp.isfinite(p.grad)))
        ]
    )
    if not bool(xp.isfinite(value)):
        quantity, shown = "loss", f"the loss is {float(value)}"
    elif norm is not None:
        quantity, shown = "gradients", f"the total norm of the gradients is {norm}"
    elif bad:
        quantity = f"gradient of {bad[0]!r}"
        shown = f"the gradient of parameter {bad[0]!r} is not finite"
    else:
        quantity = "gradients"
        shown = "the gradients are so large that their sum overflows"
    msg = (
        f"training diverged at epoch {epoch} of {epochs}, batch {batch} of {batches} (both "
        f"counted from 1): {shown}. The optimizer step was skipped, so the parameters hold "
        "their values from before this batch. Lower the learning rate, clip gradients with "
        "clip_grad_norm=..., or scale the inputs."
    )
    return TrainingDivergedError(msg, epoch=epoch, batch=batch, quantity=quantity)


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _format(logs: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())


class _Progress:
    """A tqdm bar per epoch, or one line per epoch, or nothing (see the module notes)."""

    def __init__(self, verbose: int, epochs: int, steps: int) -> None:
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.tqdm: Any = None
        if verbose == 1 and _stderr_is_terminal():
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional, loaded when shown
            except ImportError:
                tqdm = None
            self.tqdm = tqdm
        self.bar: Any = None
        self.last_postfix = 0.0

    def begin_epoch(self, epoch: int) -> None:
        if self.tqdm is not None:
            self.bar = self.tqdm(
                total=self.steps,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            self.last_postfix = time.perf_counter()

    def batch_done(self, totals: _Totals) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_postfix > _POSTFIX_INTERVAL:
            # The divergence check has just synchronized, so this read is cheap.
            self.bar.set_postfix(loss=f"{totals.running_loss():.4g}", refresh=False)
            self.last_postfix = now

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(_format(logs), refresh=True)
            self.bar.close()
            self.bar = None
        elif self.verbose:
            line = f"Epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {_format(logs)}\n"
            sys.stderr.write(line)
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------------------
# The public functions
# --------------------------------------------------------------------------------------


def fit(
    model: Module,
    loss: Any,
    optimizer: Any,
    X: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    metrics: Sequence[str] | str = ("loss",),
    callbacks: Sequence[Callback] = (),
    schedule: Any = None,
    clip_grad_norm: float | None = None,
    verbose: int = 1,
) -> History:
    """Train ``model`` on ``(X, y)`` with mini-batch gradient descent.

    Parameters
    ----------
    model : Module
        Trained in place; in training mode during the epochs and in evaluation mode
        during validation (each module's mode is restored at the end).
    loss : Loss
        ``CrossEntropyLoss`` takes integer labels ``(samples,)``; ``MSELoss`` and
        ``BCEWithLogitsLoss`` take targets ``(samples, outputs)`` (a 1-D ``y`` is one
        output).
    optimizer : Optimizer
        Built on ``model.parameters()``.
    X : array or nested sequence, shape (samples, features)
        Of any supported library; converted once to the model's backend, device and
        dtype (see the module notes for what that costs).
    y : array or nested sequence, shape (samples,) or (samples, outputs)
    epochs : int, default 1
        Passes over the data (0 trains nothing).
    batch_size : int, default 32
        Samples per step; the last batch may be smaller.
    shuffle : bool, default True
        Visit the samples in a new random order each epoch.  The permutation is drawn
        on the host and moved as an index array, so a seed gives the same order, and
        the same batches, on every backend.
    seed : int, optional
        Seed of the shuffling generator; ``None`` draws from the global host generator
        (seeded by :func:`portprop.manual_seed`).
    validation_data : tuple (X_val, y_val), optional
        Data evaluated after each epoch (``val_loss``, ``val_accuracy``).
    validation_split : float in [0, 1), default 0.0
        The *last* fraction of ``X`` and ``y``, taken before shuffling, kept aside for
        validation (as in Keras).  Cannot be combined with ``validation_data``.
        Validation runs in batches of ``max(batch_size, 256)``.
    metrics : sequence of str, default ("loss",)
        Among :data:`METRICS`.  The loss is always reported.  ``"accuracy"`` compares
        argmax of the outputs with labels (``CrossEntropyLoss``), logits > 0 with
        targets > 0.5 elementwise (``BCEWithLogitsLoss``), or argmax of outputs with
        argmax of one-hot targets (``MSELoss`` with several columns).
    callbacks : sequence of Callback
        See :class:`Callback` and :class:`EarlyStopping`.
    schedule : Schedule, optional
        Stepped after each batch when its ``interval`` is ``"batch"``
        (:class:`~portprop.schedules.CosineWithWarmup`), else after each epoch.  A
        schedule with ``needs_metric = True`` (:class:`~portprop.schedules.ReduceLROnPlateau`)
        is stepped with the value of its ``monitor`` attribute (default ``"val_loss"`` with validation data,
        else ``"loss"``) from the epoch's logs.  With a schedule, the history also
        records the optimizer's ``lr`` of each epoch's last step.
    clip_grad_norm : float, optional
        Rescale the gradients so that their global norm is at most this value, between
        backward and step (:func:`portprop.optim.clip_grad_norm_`).
    verbose : {0, 1, 2}, default 1
        0: silent; 1: a progress bar on a terminal, else one line per epoch (on standard
        error); 2: one line per epoch.

    Returns
    -------
    History

    Raises
    ------
    TrainingDivergedError
        When the loss or a gradient of a batch is NaN or infinite.  Raised before that
        batch's optimizer step, so the parameters hold their last finite values; the
        message names the epoch and the batch, counted from 1.
    ValueError, TypeError
        For bad arguments and bad data (see the Notes), before anything is computed:
        the model and the optimizer are then left unchanged.

    Notes
    -----
    ``X``, ``y`` and ``validation_data`` are converted to the model's backend, device
    and dtype once, before the first epoch (see the module notes of
    ``portprop.training`` for what that costs).  Floating data of another dtype
    (float64 data for a float32 model, or the reverse) is cast to the model's dtype, on
    every backend alike; only the low-level :meth:`Module.forward` refuses it.

    Before any computation, :func:`fit`, :func:`evaluate` and :func:`predict` refuse,
    with a message that names the argument (``X``, ``y``, ``validation_data[0]``, ...),
    the value expected and the value found:

    - data that is not 2-D (with a hint to reshape it), ragged nested lists, and ``X``
      and ``y`` of different lengths (``ValueError``);
    - data that is not real numbers: strings, Python objects, complex numbers
      (``TypeError``).  Boolean and integer data are converted to the model's floating
      dtype (``True`` is 1.0); integers beyond :math:`2^{24}` in magnitude (float32) or
      :math:`2^{53}` (float64) are rounded to the nearest representable value.  String
      class labels get a ``TypeError`` that says how to encode them as integers, or to
      use :class:`portprop.sklearn.MLPClassifier`, which encodes any labels;
    - ``X`` whose number of features differs from what the model's first layer
      expects ("X has 4 features, but the model expects 3"), targets whose number of
      columns differs from the model's outputs, and class labels outside
      ``[0, outputs)`` (``ValueError``); :func:`fit` and :func:`evaluate` also refuse
      data without samples, while :func:`predict` returns an empty ``(0, outputs)``
      array;
    - NaN or infinity in ``X`` or ``y``, looked for after the cast to the model's dtype
      (so a float64 value beyond float32's range counts as infinity):
      ``ValueError("Input X contains NaN (first at sample 3, feature 1; ...)")``, in
      scikit-learn's words.

    The value checks (NaN and infinity, the range of the labels) cost one reduction
    per array and a single host-device synchronization per call, whatever the number
    of arrays; nothing is added to the batches.
    """
    # ---- every check first: a bad argument must leave model and optimizer unchanged --
    model = _check_model(model)
    _check_loss(loss)
    _check_optimizer(optimizer, model)
    epochs = _positive_int(epochs, "epochs", low=0)
    batch_size = _positive_int(batch_size, "batch_size")
    split = _number(validation_split, "validation_split")
    if not 0.0 <= split < 1.0:
        msg = f"validation_split must lie in [0, 1), got {validation_split!r}"
        raise ValueError(msg)
    if split > 0.0 and validation_data is not None:
        msg = (
            "pass either validation_data or validation_split, not both (got validation_split="
            f"{validation_split!r} and validation_data)"
        )
        raise ValueError(msg)
    names = _check_metrics(metrics)
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if verbose not in (0, 1, 2):
        msg = f"verbose must be 0, 1 or 2, got {verbose!r}"
        raise ValueError(msg)
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            msg = f"callbacks[{i}] must be a portprop Callback, got {type(cb).__name__}"
            raise TypeError(msg)
    clip = None
    max_norm = 0.0
    if clip_grad_norm is not None:
        max_norm = _number(clip_grad_norm, "clip_grad_norm")
        if not max_norm > 0.0 or math.isinf(max_norm):
            msg = f"clip_grad_norm must be a finite number > 0, got {clip_grad_norm!r}"
            raise ValueError(msg)
        clip = _optim.clip_grad_norm_
    if schedule is not None and not callable(getattr(schedule, "step", None)):
        msg = f"schedule must have a step() method, got {type(schedule).__name__}"
        raise TypeError(msg)
    generator = host_generator(seed) if shuffle else None
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            msg = (
                "validation_data must be a pair (X_val, y_val), got "
                f"{type(validation_data).__name__}"
            )
            raise TypeError(msg)
        _require_2d(validation_data[0], "validation_data[0]")
        _check_lengths(*validation_data, "validation_data[0]", "validation_data[1]")
    _require_2d(X, "X")
    _check_lengths(X, y, "X", "y")

    # ---- data: converted and checked once, then split ---------------------------------
    checks = _Checks(model.backend)
    X, y = _convert(model, loss, X, y, ("X", "y"), checks)
    _require_samples(X, "X", "fit")
    Xv: Array | None = None
    yv: Array | None = None
    if validation_data is not None:
        vnames = ("validation_data[0]", "validation_data[1]")
        Xv, yv = _convert(model, loss, *validation_data, vnames, checks)
        _require_samples(Xv, vnames[0], "validation")
    checks.run()  # NaN, infinity, labels out of range: one synchronization in all
    if Xv is None and split > 0.0:
        n_all = X.shape[0]
        cut = math.floor(n_all * (1.0 - split))
        if cut in (0, n_all):
            msg = (
                f"validation_split={validation_split!r} of {n_all} samples leaves "
                f"{cut} for training and {n_all - cut} for validation; both need at least one"
            )
            raise ValueError(msg)
        X, Xv = X[:cut, ...], X[cut:, ...]
        y, yv = y[:cut, ...], y[cut:, ...]
    n = X.shape[0]
    accuracy = _accuracy_kind(loss, y, "y") if "accuracy" in names else None

    log_keys = list(names)
    if Xv is not None:
        log_keys += [f"val_{k}" for k in names]
    needs_metric = False
    per_batch = getattr(schedule, "interval", "epoch") == "batch"
    monitor = ""
    if schedule is not None:
        needs_metric = bool(getattr(schedule, "needs_metric", False))
        if needs_metric:
            monitor = getattr(schedule, "monitor", None) or (
                "val_loss" if Xv is not None else "loss"
            )
            if monitor not in log_keys:
                msg = (
                    f"schedule {type(schedule).__name__} monitors {monitor!r}, but fit logs "
                    f"only {', '.join(repr(k) for k in log_keys)}"
                )
                raise ValueError(msg)
        if isinstance(getattr(optimizer, "lr", None), float):
            log_keys.append("lr")

    steps = -(-n // batch_size)
    history = History(
        history={k: [] for k in log_keys},
        params={"epochs": epochs, "batch_size": batch_size, "steps": steps},
    )
    state = TrainingState(
        model=model,
        loss=loss,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
        steps=steps,
        log_keys=tuple(log_keys),
        history=history,
    )
    for cb in callbacks:
        cb.state = state
    for cb in callbacks:
        cb.on_train_begin({})  # EarlyStopping checks its monitor here

    # ---- training -----------------------------------------------------------------------
    backend = model.backend
    xp = backend.xp
    params = model.parameters()
    reduction = getattr(loss, "reduction", "mean")
    batch_hooks = [cb for cb in callbacks if type(cb).on_batch_end is not Callback.on_batch_end]
    index_name = dtype_name(_index_dtype(backend))
    eval_batch = max(batch_size, 256)
    progress = _Progress(verbose, epochs, steps)
    quiet = backend.quiet
    with _mode(model, True), backend.scope():  # scope: CuPy computes on the current device
        try:
            for epoch in range(epochs):
                state.epoch = epoch
                started = time.perf_counter()
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                progress.begin_epoch(epoch)
                order = None
                if generator is not None:
                    order = backend.asarray(generator.permutation(n).astype(index_name))
                totals = _Totals(xp, reduction, accuracy)
                lr_used = math.nan  # set by every step of a per-batch schedule
                for b, (start, stop) in enumerate(_batches(n, batch_size)):
                    Xb = _take(xp, X, start, stop, order)
                    yb = _take(xp, y, start, stop, order)
                    # fit checks the loss and the gradients itself: NumPy's overflow
                    # warnings would only precede its TrainingDivergedError.
                    with quiet():
                        out = model.forward(Xb)
                        value = loss.forward(out, yb)
                        model.zero_grad()
                        model.backward(loss.backward(), input_grad=False)
                        # The one host-device synchronization per batch, before the step.
                        norm = None
                        if clip is None:
                            finite = bool(_all_finite(xp, value, params))
                        else:
                            # clip_grad_norm_ returns the total norm before clipping: it
                            # covers the gradients (and it synchronizes already).
                            norm = float(clip(params, max_norm))
                            finite = math.isfinite(norm) and bool(xp.isfinite(value))
                        if not finite:
                            raise _diverged(
                                model,
                                value,
                                norm,
                                epoch=epoch + 1,
                                epochs=epochs,
                                batch=b + 1,
                                batches=steps,
                            )
                        optimizer.step()
                    if per_batch:
                        lr_used = optimizer.lr  # the history keeps the last step's lr
                        schedule.step()
                    totals.add(value, out, yb)
                    progress.batch_done(totals)
                    if batch_hooks:
                        batch_logs = {"loss": float(value), "size": float(stop - start)}
                        for cb in batch_hooks:
                            cb.on_batch_end(b, batch_logs)
                        if state.stop_training:
                            break
                logs = totals.read()
                if Xv is not None:
                    logs.update(_run_eval(model, loss, Xv, yv, eval_batch, accuracy).read("val_"))
                if "lr" in history.history:
                    # the lr of the epoch's last step: a per-batch schedule has already
                    # moved optimizer.lr on to the next batch's value
                    logs["lr"] = float(lr_used if per_batch else optimizer.lr)
                seconds = time.perf_counter() - started
                history.epoch.append(epoch)
                history.time_per_epoch.append(seconds)
                for k in log_keys:
                    history.history[k].append(logs[k])
                progress.end_epoch(epoch, logs, seconds)
                if schedule is not None and not per_batch:
                    if needs_metric:
                        schedule.step(logs[monitor])
                    else:
                        schedule.step()
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if state.stop_training:
                    break
        finally:
            progress.close()
            _clear_caches(model)
    final = {k: v[-1] for k, v in history.history.items() if v}
    for cb in callbacks:
        cb.on_train_end(final)
    return history


def evaluate(
    model: Module,
    loss: Any,
    X: Any,
    y: Any,
    *,
    batch_size: int = 256,
    metrics: Sequence[str] | str = ("loss",),
) -> dict[str, float]:
    """The loss (and metrics) of ``model`` on ``(X, y)``, in evaluation mode.

    Batches are only a memory bound: the result equals the loss of one forward pass
    over all of ``X`` up to rounding (batch losses are weighted by their sizes).  ``X``
    and ``y`` are converted and checked as by :func:`fit` (see its Notes).

    Returns
    -------
    dict
        ``{"loss": float}``, plus ``"accuracy"`` when asked for.
    """
    model = _check_model(model)
    _check_loss(loss)
    batch_size = _positive_int(batch_size, "batch_size")
    names = _check_metrics(metrics)
    _require_2d(X, "X")
    _check_lengths(X, y, "X", "y")
    checks = _Checks(model.backend)
    X, y = _convert(model, loss, X, y, ("X", "y"), checks)
    _require_samples(X, "X", "evaluate")
    checks.run()
    accuracy = _accuracy_kind(loss, y, "y") if "accuracy" in names else None
    return _run_eval(model, loss, X, y, batch_size, accuracy).read()


def predict(model: Module, X: Any, *, batch_size: int = 256) -> Array:
    """The outputs of ``model`` for ``X``, ``(samples, outputs)``, on the model's backend.

    Runs in evaluation mode (each module's mode is restored) and in batches of
    ``batch_size``; what the forward passes keep for a backward pass is dropped at the
    end.  ``X`` is converted and checked as by :func:`fit` (see its Notes); ``X``
    without samples gives an empty ``(0, outputs)`` array.
    """
    model = _check_model(model)
    batch_size = _positive_int(batch_size, "batch_size")
    checks = _Checks(model.backend)
    with model.backend.scope():
        X = _as_features(model, X, "X", checks)
    checks.run()
    xp = model.backend.xp
    with _mode(model, False), model.backend.scope():
        try:
            outs = [
                model.forward(X[start:stop, ...])
                for start, stop in _batches(X.shape[0], batch_size)
            ]
            if not outs:  # no samples: one empty batch gives the right shape
                outs = [model.forward(X)]
        finally:
            _clear_caches(model)
    if len(outs) == 1:
        return outs[0]
    with model.backend.scope():
        return xp.concat(outs, axis=0)
