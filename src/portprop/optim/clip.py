"""Gradient clipping by the total norm of all the gradients."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

from portprop.backend import Backend, backend_of
from portprop.module import Parameter
from portprop.optim._base import Array, _check_gradient, _hyper

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(
    params: Parameter | Iterable[Parameter], max_norm: float, norm_type: float = 2.0
) -> float:
    r"""Scale the gradients so that their total norm is at most ``max_norm`` (torch's
    ``clip_grad_norm_``), in place where the library allows (``grad`` is rebound on JAX,
    and to a scaled copy where the gradient is a read-only array).

    The total norm is the ``norm_type``-norm of all the gradients together, as if they
    were concatenated into one vector.  When it exceeds ``max_norm``, every gradient is
    multiplied by ``max_norm / (total + 1e-6)``.  Parameters with ``grad is None`` are
    left out; the parameters may live on several backends and devices (the partial norms
    are combined on the host).  As in torch, a non-finite total (a gradient holding NaN
    or infinity) turns the gradients into NaN or zeros; check the returned value to skip
    such a step.

    The norm does not overflow while every gradient is finite: a sum of powers that
    overflows (float32 gradients of about ``1e19`` and more, for the 2-norm) or underflows
    is computed again for that gradient, divided by its largest absolute value first.
    That costs one more reduction, for those gradients only.

    Parameters
    ----------
    params : Parameter or iterable of Parameter
    max_norm : float
        The largest total norm allowed, ``> 0``.
    norm_type : float, optional
        The ``p`` of the ``p``-norm, ``> 0``; ``math.inf`` for the largest absolute value.

    Returns
    -------
    float
        The total norm before clipping (``0.0`` when no parameter has a gradient).  It is
        ``inf`` only when a gradient holds an infinity or when the norm exceeds the
        largest float64; the gradients are still scaled correctly in the second case.

    Raises
    ------
    MixedBackendError, MixedDeviceError, TypeError, ValueError
        If a gradient is not an array of its parameter's library, device, dtype and
        shape; nothing is changed then.
    """
    limit = _hyper(max_norm, "max_norm", strict=True)
    try:
        order = float(norm_type)
    except (TypeError, ValueError):
        msg = f"norm_type must be a number, got {norm_type!r}"
        raise TypeError(msg) from None
    if math.isnan(order) or order <= 0.0:
        msg = f"norm_type must be a number > 0 (or math.inf), got {norm_type!r}"
        raise ValueError(msg)
    group = [params] if isinstance(params, Parameter) else list(params)
    for i, p in enumerate(group):
        if not isinstance(p, Parameter):
            msg = f"params[{i}] must be a portprop Parameter, got {type(p).__name__}"
            raise TypeError(msg)
    grads: list[tuple[Parameter, Array, Backend]] = []
    backend: Backend | None = None
    for i, p in enumerate(group):
        g = p.grad
        if g is None:
            continue
        if backend is None or not backend.owns(g):  # looked up again only when it changes
            backend = backend_of(g, names=(f"params[{i}].grad",))
        if not backend.owns(p.data) or g.dtype != p.data.dtype or g.shape != p.data.shape:
            _check_gradient(backend_of(p.data, names=(f"params[{i}]",)), p, g, i)
        if 0 not in g.shape:
            grads.append((p, g, backend))
    # NumPy warns when a sum of squares overflows, which is handled below, and when an
    # infinite gradient is multiplied by a scale of 0 (torch's NaN): keep it quiet.
    noisy = [b for _, _, b in grads if b.warns]
    with noisy[0].quiet() if noisy else contextlib.nullcontext():
        return _clip(grads, limit, order)


def _clip(grads: list[tuple[Parameter, Array, Backend]], limit: float, order: float) -> float:
    """:func:`clip_grad_norm_` of checked gradients."""
    # Per gradient, (m, s) with its norm**order = m**order * s: m = 1 and s the plain sum
    # of |g|**order, unless that sum over- or underflowed (then m = max |g|, finite).
    parts = []
    for _, g, backend in grads:
        xp = backend.xp
        if order == math.inf:
            parts.append((1.0, float(xp.max(xp.abs(g)))))
            continue
        s = float(xp.sum(g * g)) if order == 2.0 else float(xp.sum(xp.abs(g) ** order))
        parts.append((1.0, s) if _SAFE_SUM[0] < s < _SAFE_SUM[1] else _scaled_sum(xp, g, order))
    if not parts:
        return 0.0
    sums = [s for _, s in parts]
    if any(math.isnan(s) for s in sums):
        total = scale = math.nan
    elif order == math.inf:
        total = max(sums)
        scale = limit / (total + 1e-6)
    else:
        top = max(m for m, _ in parts)
        acc = math.fsum(s if m == top else (m / top) ** order * s for m, s in parts)
        root = math.sqrt(acc) if order == 2.0 else acc ** (1.0 / order)
        total = top * root
        scale = limit / (total + 1e-6)
        if math.isinf(total) and math.isfinite(root):
            scale = limit / top / root  # beyond float64, but the scale is not
    if not scale >= 1.0:  # torch multiplies by min(scale, 1), NaN included
        # a factor below float32's smallest normal number would lose digits: apply two
        factors = (scale,) if not 0.0 < scale < 1e-30 else (math.sqrt(scale),) * 2
        for p, g, backend in grads:
            with backend.scope():
                # a read-only gradient (NumPy) is scaled into a new array, as on JAX
                scaled = g
                if backend.read_only(g):
                    scaled = backend.xp.asarray(g, dtype=g.dtype, device=backend.device, copy=True)
                for factor in factors:
                    scaled *= factor  # in place, or a new array on JAX
            p.grad = scaled
    return total


# Sums of |g|**p within these bounds lost nothing to overflow or underflow (a float32
# sum below 1e-30 may have dropped terms under float32's smallest normal number, 1e-38),
# and math.fsum can add a million of them without overflowing.
_SAFE_SUM = (1e-30, 1e250)


def _scaled_sum(xp: Any, g: Array, order: float) -> tuple[float, float]:
    """``(m, s)`` with ``m = max |g|`` and ``s = sum (|g| / m)**order``, so that
    ``sum |g|**order = m**order * s`` without overflow; ``(1, m**order)`` when ``m`` is
    0, NaN or infinite."""
    m = float(xp.max(xp.abs(g)))
    if m == 0.0 or not math.isfinite(m):
        return 1.0, m**order  # 0, inf or NaN
    q = xp.abs(g) / m  # m is a value of g's dtype, so q lies in [0, 1]
    s = float(xp.sum(q * q)) if order == 2.0 else float(xp.sum(q**order))
    return m, s
