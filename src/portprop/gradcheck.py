"""Check hand-written gradients against central finite differences.

:func:`gradcheck` works on a float64 copy of the model, so the model passed in is never
changed.  It compares, for every parameter and for the input, the gradient of
``backward`` with :math:`(L(p + \\varepsilon e) - L(p - \\varepsilon e)) / 2\\varepsilon`,
either along every coordinate ``e`` (``mode="full"``) or along a few random unit
directions (``mode="random"``, which keeps large layers cheap).  The tolerances are
those of ``torch.autograd.gradcheck``: an element passes when
``|analytic - numeric| <= atol + rtol * |numeric|``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portprop.backend import host_generator
from portprop.errors import DtypeUnsupportedError, GradcheckError
from portprop.losses import Loss
from portprop.module import Module

__all__ = ["GradcheckResult", "GradcheckRow", "gradcheck"]

Array = Any


@dataclass(frozen=True)
class GradcheckRow:
    """The worst element of one tensor."""

    name: str
    index: tuple[int, ...] | str
    analytic: float
    numeric: float
    passed: bool

    @property
    def abs_error(self) -> float:
        return abs(self.analytic - self.numeric)


@dataclass(frozen=True)
class GradcheckResult:
    """The outcome of :func:`gradcheck`: one :class:`GradcheckRow` per tensor."""

    rows: tuple[GradcheckRow, ...]
    mode: str
    eps: float
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = f"{'tensor':<14} {'worst index':<14} {'analytic':>14} {'numeric':>14} {'abs err':>10}  ok"
        lines = [
            f"gradcheck ({self.mode}, eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g}):",
            head,
        ]
        for r in self.rows:
            index = str(r.index)
            lines.append(
                f"{r.name:<14} {index:<14} {r.analytic:>14.7g} {r.numeric:>14.7g} "
                f"{r.abs_error:>10.3g}  {'yes' if r.passed else 'NO'}"
            )
        return "\n".join(lines)


def gradcheck(
    model: Module,
    loss: Loss,
    x: Array,
    target: Array,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    mode: str = "full",
    directions: int = 8,
    seed: int = 0,
    check_input: bool = True,
    raise_exception: bool = True,
) -> GradcheckResult:
    """Compare analytic and finite-difference gradients of ``loss(model(x), target)``.

    Parameters
    ----------
    model, loss
        The network and the loss; neither is changed (a float64 copy is checked).
    x, target
        A batch; ``x`` may be of any dtype and supported library, it is moved to the
        model's backend in float64.
    eps, atol, rtol : float
        Step and tolerances (``torch.autograd.gradcheck``'s defaults).
    mode : {"full", "random"}
        Every coordinate, or ``directions`` random unit directions per tensor.
    seed : int
        Seed of the random directions.
    check_input : bool
        Also check the gradient with respect to ``x``.
    raise_exception : bool
        Raise :class:`GradcheckError` with the report when a tensor fails.

    Returns
    -------
    GradcheckResult
        The worst element of every tensor (name, index, analytic, numeric).

    Raises
    ------
    DtypeUnsupportedError
        If the model's backend or device has no float64.
    """
    if mode not in ("full", "random"):
        msg = f"mode must be 'full' or 'random', got {mode!r}"
        raise ValueError(msg)
    backend = model.backend
    try:
        f64 = backend.float_dtype("float64")
    except DtypeUnsupportedError as exc:
        msg = (
            "gradcheck compares gradients in float64 (finite differences in float32 are too "
            f"coarse), which the backend of model lacks: {exc} Check a copy on a backend "
            "with float64 instead: pp.gradcheck(copy.deepcopy(model).to('numpy'), loss, x, "
            "target). The model was not changed."
        )
        raise DtypeUnsupportedError(msg) from None
    net = copy.deepcopy(model).to(dtype=f64).eval()
    crit = copy.deepcopy(loss)
    X = backend.asarray(x, dtype=f64)
    T = backend.asarray(target)
    if backend.xp.isdtype(T.dtype, "real floating"):
        T = backend.asarray(T, dtype=f64)

    net.zero_grad()
    crit.forward(net.forward(X), T)
    dX = net.backward(crit.backward(), input_grad=check_input)

    def loss_at() -> float:
        return float(crit.forward(net.forward(X_now[0]), T))

    X_now = [X]
    rows = []
    for name, p in net.named_parameters():
        base = p.data

        def set_param(value: Array, p: Any = p) -> None:
            p.data = value

        rows.append(
            _check_tensor(
                name,
                base,
                p.grad,
                set_param,
                loss_at,
                backend,
                mode,
                directions,
                seed,
                eps,
                atol,
                rtol,
            )
        )
        p.data = base
    if check_input:

        def set_input(value: Array) -> None:
            X_now[0] = value

        rows.append(
            _check_tensor(
                "input", X, dX, set_input, loss_at, backend, mode, directions, seed, eps, atol, rtol
            )
        )
    result = GradcheckResult(tuple(rows), mode, eps, atol, rtol)
    if raise_exception and not result.passed:
        raise GradcheckError(str(result))
    return result


def _check_tensor(
    name: str,
    base: Array,
    grad: Array | None,
    set_value: Callable[[Array], None],
    loss_at: Callable[[], float],
    backend: Any,
    mode: str,
    directions: int,
    seed: int,
    eps: float,
    atol: float,
    rtol: float,
) -> GradcheckRow:
    xp = backend.xp
    shape = tuple(base.shape)
    size = math.prod(shape)
    analytic_host = backend.to_host(xp.zeros_like(base) if grad is None else grad).reshape(-1)

    def numeric_along(direction: Array) -> float:
        set_value(base + eps * direction)
        plus = loss_at()
        set_value(base - eps * direction)
        minus = loss_at()
        set_value(base)
        return (plus - minus) / (2.0 * eps)

    worst: GradcheckRow | None = None
    worst_excess = -math.inf
    if mode == "full":
        flat_index = xp.arange(size, device=backend.device)
        candidates = range(size)
    else:
        gen = host_generator(seed)
        candidates = range(directions)
    for k in candidates:
        if mode == "full":
            direction = xp.reshape(xp.astype(flat_index == k, base.dtype), shape)
            analytic = float(analytic_host[k])
            index: tuple[int, ...] | str = _unravel(k, shape)
        else:
            host_dir = gen.standard_normal(size)
            host_dir /= math.sqrt(float((host_dir * host_dir).sum()))
            direction = xp.reshape(backend.from_host(host_dir, "float64"), shape)
            analytic = float(analytic_host @ host_dir)
            index = f"direction {k}"
        numeric = numeric_along(direction)
        excess = abs(analytic - numeric) - (atol + rtol * abs(numeric))
        if math.isnan(excess):
            excess = math.inf
        if excess > worst_excess:
            worst_excess = excess
            worst = GradcheckRow(name, index, analytic, numeric, passed=excess <= 0)
    assert worst is not None
    return worst


def _unravel(k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for dim in reversed(shape):
        index.append(k % dim)
        k //= dim
    return tuple(reversed(index))
