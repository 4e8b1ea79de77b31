"""The NumPy backend (CPU): array-api-compat's NumPy namespace, with NumPy's own kernels
for the in-place update (``out=`` by position) and the sum (``np.add.reduce``)."""

from __future__ import annotations

import math  # fused optimizer steps (issue 13)
import operator
from collections.abc import Callable  # fused optimizer steps (issue 13)
from typing import Any  # fused optimizer steps (issue 13)

import array_api_compat
import numpy as np

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes
from portprop.backend.random import HostGenerator
from portprop.errors import BackendUnavailableError

__all__ = ["LIBRARY", "add_scaled", "build", "read_only"]


def add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    """``y += alpha * x`` in place, through ``scratch`` without allocating when given."""
    if alpha == 1.0:
        y += x
        return y
    if scratch is None:
        y += alpha * x
        return y
    # out= given by position: keyword parsing costs a NumPy call about 0.15 us
    np.multiply(x, alpha, scratch)
    np.add(y, scratch, y)
    return y


def read_only(x: Array) -> str:
    """Why ``x`` cannot be updated in place (``""`` when it can): NumPy marks views of
    read-only memory (``np.broadcast_to``, a ``bytes`` buffer, a JAX array seen through
    ``np.asarray``) read-only, and anyone may set ``x.flags.writeable = False``."""
    return "" if x.flags.writeable else "a read-only NumPy array (its flags.writeable is False)"


# ---- multi-tensor optimizer updates (issue 13: fused optimizer steps) ------------------
# Each kernel updates a list of parameters in place with the same NumPy operations, in the
# same order, as the optimizer's update of one parameter (portprop.optim), so the results
# are the same bits.  The temporaries go to a few buffers of at most _CHUNK elements kept
# in ``work`` (a dict the optimizer owns): a parameter larger than that is updated a chunk
# at a time, so no parameter-sized buffer outlives the step.

_CHUNK = 1 << 18


def _temporaries(work: dict[Any, Any], x: Array, count: int) -> list[Array]:
    """``count`` buffers of ``work`` shaped and typed like ``x`` (``x.size <= _CHUNK``)."""
    key = (x.dtype, x.shape, count)
    found = work.get(key)
    if found is None:
        flat = _buffers(work, x.dtype, count)
        found = work[key] = [t[: x.size].reshape(x.shape) for t in flat]
    return found


def _buffers(work: dict[Any, Any], dtype: Any, count: int) -> list[Array]:
    """``count`` flat buffers of ``_CHUNK`` elements of ``dtype``, kept in ``work``."""
    key = (dtype, count)
    found = work.get(key)
    if found is None:
        found = work[key] = [np.empty(_CHUNK, dtype=dtype) for _ in range(count)]
    return found


def _chunked(
    work: dict[Any, Any], arrays: list[Array | None], count: int, body: Callable[..., None]
) -> None:
    """``body(*arrays, *temporaries)``, at once or on equal flat chunks of the arrays
    (``None`` entries stay ``None``)."""
    x: Array = arrays[0]
    if x.size <= _CHUNK:
        body(*arrays, *_temporaries(work, x, count))
        return
    if not all(a is None or a.flags.c_contiguous for a in arrays):  # rare: allocate
        body(*arrays, *(np.empty_like(x) for _ in range(count)))
        return
    flats = [None if a is None else a.reshape(-1) for a in arrays]
    buffers = _buffers(work, x.dtype, count)
    for start in range(0, x.size, _CHUNK):
        stop = min(start + _CHUNK, x.size)
        temps = [t[: stop - start] for t in buffers[:count]]
        body(*(None if f is None else f[start:stop] for f in flats), *temps)


def _axpy(y: Array, alpha: float, x: Array, tmp: Array) -> None:
    """``y += alpha * x`` through ``tmp``: :func:`add_scaled`'s operations."""
    if alpha == 1.0:
        y += x
        return
    np.multiply(x, alpha, tmp)
    np.add(y, tmp, y)


def sgd_update(
    ws: list[Array],
    gs: list[Array],
    bufs: list[Array | None],
    work: dict[Any, Any],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    dampening: float,
    nesterov: bool,
) -> list[Array | None]:
    """SGD's update of every parameter of ``ws``, in place; returns the momentum buffers
    (a new one where ``bufs`` has ``None``: the first step)."""
    mu, wd, keep = momentum, weight_decay, 1.0 - dampening
    decay = 1.0 - lr * wd

    def plain(w: Array, g: Array, tmp: Array) -> None:
        if wd != 0.0:
            w *= decay
        _axpy(w, -lr, g, tmp)

    def first(w: Array, g: Array, v: Array, tmp: Array) -> None:
        np.copyto(v, g)
        if wd != 0.0:
            _axpy(v, wd, w, tmp)
        finish(w, g, v, tmp)

    def later(w: Array, g: Array, v: Array, tmp: Array) -> None:
        v *= mu
        _axpy(v, keep, g, tmp)
        if wd != 0.0:
            _axpy(v, keep * wd, w, tmp)
        finish(w, g, v, tmp)

    def finish(w: Array, g: Array, v: Array, tmp: Array) -> None:
        if nesterov:
            if wd != 0.0:
                w *= decay
            _axpy(w, -lr, g, tmp)
            _axpy(w, -lr * mu, v, tmp)
        else:
            _axpy(w, -lr, v, tmp)

    out: list[Array | None] = []
    for w, g, v in zip(ws, gs, bufs, strict=True):
        if mu == 0.0:
            _chunked(work, [w, g], 1, plain)
            out.append(v)
        elif v is None:
            fresh = np.empty_like(g)
            _chunked(work, [w, g, fresh], 1, first)
            out.append(fresh)
        else:
            _chunked(work, [w, g, v], 1, later)
            out.append(v)
    return out


def adam_update(
    ws: list[Array],
    gs: list[Array],
    ms: list[Array],
    vs: list[Array],
    maxs: list[Array] | None,
    work: dict[Any, Any],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step: int,
) -> None:
    """Adam's (AdamW's where ``decoupled``) update of every parameter of ``ws`` at step
    ``step``, in place, with the moments ``ms``, ``vs`` (and ``maxs`` for amsgrad)."""
    wd = weight_decay
    root2 = math.sqrt(1.0 - beta2**step)
    size = -lr / (1.0 - beta1**step)

    def body(
        w: Array, g: Array, m: Array, v: Array, vmax: Array | None, t1: Array, t2: Array
    ) -> None:
        if decoupled:
            if wd != 0.0:
                w *= 1.0 - lr * wd
        elif wd != 0.0:
            np.multiply(w, wd, t1)
            g = np.add(g, t1, t1)
        m *= beta1
        _axpy(m, 1.0 - beta1, g, t2)
        v *= beta2
        np.multiply(g, g, t2)
        _axpy(v, 1.0 - beta2, t2, t2)
        if vmax is not None:
            v = np.maximum(vmax, v, out=vmax)
        np.sqrt(v, t2)
        np.divide(t2, root2, t2)
        t2 += eps
        np.divide(m, t2, t2)
        _axpy(w, size, t2, t2)

    for i, (w, g, m, v) in enumerate(zip(ws, gs, ms, vs, strict=True)):
        _chunked(work, [w, g, m, v, None if maxs is None else maxs[i]], 2, body)


def rmsprop_update(
    ws: list[Array],
    gs: list[Array],
    squares: list[Array],
    averages: list[Array] | None,
    bufs: list[Array] | None,
    work: dict[Any, Any],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
) -> None:
    """RMSprop's update of every parameter of ``ws``, in place: centred where
    ``averages`` is given, with momentum where ``bufs`` is."""
    wd = weight_decay

    def body(
        w: Array, g: Array, s: Array, a: Array | None, b: Array | None, t1: Array, t2: Array
    ) -> None:
        if wd != 0.0:
            np.multiply(w, wd, t1)
            g = np.add(g, t1, t1)
        s *= alpha
        np.multiply(g, g, t2)
        _axpy(s, 1.0 - alpha, t2, t2)
        if a is not None:
            a *= alpha
            _axpy(a, 1.0 - alpha, g, t2)
            np.multiply(a, a, t2)
            np.subtract(s, t2, t2)
            np.sqrt(t2, t2)
        else:
            np.sqrt(s, t2)
        t2 += eps
        np.divide(g, t2, t2)
        if b is not None:
            b *= momentum
            b += t2
            _axpy(w, -lr, b, t2)
        else:
            _axpy(w, -lr, t2, t2)

    for i, (w, g, s) in enumerate(zip(ws, gs, squares, strict=True)):
        a = None if averages is None else averages[i]
        b = None if bufs is None else bufs[i]
        _chunked(work, [w, g, s, a, b], 2, body)


MULTI_UPDATE: dict[str, Callable[..., Any]] = {
    "sgd": sgd_update,
    "adam": adam_update,
    "rmsprop": rmsprop_update,
}


def build(spec: str | None) -> Backend:
    """The NumPy backend; ``spec`` may only be ``"cpu"``."""
    if spec not in (None, "cpu"):
        msg = f"backend 'numpy' has only the device 'cpu', got {spec!r}"
        raise BackendUnavailableError(msg)
    return _backend()


def _backend() -> Backend:
    import array_api_compat.numpy as xp  # noqa: PLC0415 - loaded on first use

    return Backend(
        name="numpy",
        library="numpy",
        xp=xp,
        device="cpu",
        writable=True,
        _array_types=(np.ndarray,),
        _single_device=True,
        _float_dtypes=float_dtypes(xp, "cpu"),
        _low_float_dtypes={"float16": np.dtype("float16")},  # no bfloat16
        _add_scaled=add_scaled,
        _sum=np.add.reduce,
        _needs_scratch=True,
        _generator=HostGenerator,
        _read_only=read_only,
        _writable_flag=operator.attrgetter("flags.writeable"),  # C: no Python call
        _multi_update=MULTI_UPDATE,  # fused optimizer steps (issue 13)
        # workspaces (issue 13): ufuncs take out= by position
        _matmul_into=np.matmul,
        _multiply_into=np.multiply,
    )


LIBRARY = Library(
    name="numpy",
    install="pip install numpy",
    build=build,
    matches=array_api_compat.is_numpy_namespace,
    from_device=lambda _device: _backend(),
    list_devices=lambda: ["cpu"],
)
