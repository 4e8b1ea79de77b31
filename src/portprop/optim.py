r"""Optimizers: the gradient step :math:`w \leftarrow w - \eta\,\partial\ell/\partial w`.

Updates are in place and allocation-free on NumPy, CuPy and torch (through
:meth:`Backend.add_scaled`), and rebind ``param.data`` on JAX, whose arrays are
immutable.  Every hyperparameter is kept as a Python float, so that a float32 model
stays float32 (NumPy 2 would promote it when combined with a NumPy float64 scalar).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from portprop._backend import Backend, backend_of
from portprop.module import Parameter

__all__ = ["SGD", "Optimizer"]

Array = Any


def _hyper(value: Any, name: str, *, low: float = 0.0, strict: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        msg = f"{name} must be a number, got {value!r}"
        raise TypeError(msg) from None
    bad = number <= low if strict else number < low
    if math.isnan(number) or math.isinf(number) or bad:
        bound = f"> {low}" if strict else f">= {low}"
        msg = f"{name} must be a finite number {bound}, got {value!r}"
        raise ValueError(msg)
    return number


class Optimizer:
    """Base class: holds the parameters and per-parameter state."""

    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params = list(params)
        if not self.params:
            msg = "params must contain at least one Parameter, got an empty list"
            raise ValueError(msg)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                msg = f"params[{i}] must be a portprop Parameter, got {type(p).__name__}"
                raise TypeError(msg)
        self.state: list[dict[str, Array]] = [{} for _ in self.params]

    def _backend_and_scratch(self, p: Parameter, state: dict[str, Any]) -> tuple[Backend, Any]:
        """The backend of ``p`` (looked up once, and again if the model moved) and the
        scratch buffer that keeps :meth:`Backend.add_scaled` allocation-free."""
        backend = state.get("backend")
        if backend is None or not backend.owns(p.data) or state["dtype"] != p.data.dtype:
            new = backend_of(p.data, names=("parameter",))
            if backend is not None:  # the model moved: move the buffers with it
                for key, value in list(state.items()):
                    if key not in ("backend", "scratch", "dtype"):
                        state[key] = new.asarray(value, dtype=p.data.dtype, copy=True)
            backend = state["backend"] = new
            state["dtype"] = p.data.dtype
            state["scratch"] = backend.scratch_like(p.data)
        return backend, state["scratch"]

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (``grad`` becomes ``None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent, with torch's definition of momentum, Nesterov
    momentum and weight decay.

    With :math:`g = \partial\ell/\partial w + \lambda w`:

    - no momentum: :math:`w \leftarrow w - \eta g`;
    - momentum :math:`\mu`: :math:`v \leftarrow \mu v + (1 - \tau) g` (:math:`v = g` at
      the first step), then :math:`w \leftarrow w - \eta v`, or
      :math:`w \leftarrow w - \eta (g + \mu v)` with ``nesterov=True``.

    Parameters with ``grad is None`` are skipped.
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.momentum = _hyper(momentum, "momentum")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.dampening = _hyper(dampening, "dampening")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            msg = (
                "nesterov=True needs momentum > 0 and dampening = 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
            raise ValueError(msg)

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for p, state in zip(self.params, self.state, strict=True):
            g = p.grad
            if g is None:
                continue
            backend, scratch = self._backend_and_scratch(p, state)
            w = p.data
            if mu == 0.0:
                # w - lr (g + wd w)  ==  (1 - lr wd) w - lr g
                if wd != 0.0:
                    w *= 1.0 - lr * wd
                p.data = backend.add_scaled(w, -lr, g, scratch)
                continue
            v = state.get("momentum_buffer")
            if v is None:
                v = backend.xp.asarray(g, copy=True)
                if wd != 0.0:
                    v = backend.add_scaled(v, wd, w, scratch)
            else:
                v *= mu
                v = backend.add_scaled(v, 1.0 - self.dampening, g, scratch)
                if wd != 0.0:
                    v = backend.add_scaled(v, (1.0 - self.dampening) * wd, w, scratch)
            state["momentum_buffer"] = v
            if self.nesterov:
                # w - lr (g + wd w + mu v)
                if wd != 0.0:
                    w *= 1.0 - lr * wd
                w = backend.add_scaled(w, -lr, g, scratch)
                p.data = backend.add_scaled(w, -lr * mu, v, scratch)
            else:
                p.data = backend.add_scaled(w, -lr, v, scratch)

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay}, dampening={self.dampening})"
        )
