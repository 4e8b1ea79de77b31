"""Stochastic gradient descent, with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from portprop.module import Parameter
from portprop.optim._base import Optimizer, _hyper

__all__ = ["SGD"]


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

    _HYPERPARAMETERS = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    _BUFFERS = ("momentum_buffer",)
    _MULTI_UPDATE = "sgd"

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
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        mu, wd, keep = self.momentum, self.weight_decay, 1.0 - self.dampening
        found = [
            ("lr", lr, "lr", lr),
            ("momentum", mu, "momentum", mu),
            ("weight_decay", wd, "weight_decay", wd),
            ("dampening", self.dampening, "1 - dampening", keep),
            ("weight_decay", wd, "(1 - dampening) * weight_decay", keep * wd),
            ("lr", lr, "1 - lr * weight_decay", 1.0 - lr * wd),
        ]
        if self.nesterov:
            found.append(("lr", lr, "lr * momentum", lr * mu))
        return found

    def _required_buffers(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0.0 else ()

    def _apply(self, params: list[Parameter], states: list[dict[str, Any]]) -> None:
        if self._kernel is not None:  # every parameter at once
            ws, gs, live = self._live(params, states)
            for state in live:
                state["step"] = state.get("step", 0) + 1
            bufs = [state.get("momentum_buffer") for state in live]
            bufs = self._kernel(
                ws,
                gs,
                bufs,
                self._work,
                lr=self._lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                dampening=self.dampening,
                nesterov=self.nesterov,
            )
            if self.momentum != 0.0:
                for state, v in zip(live, bufs, strict=True):
                    state["momentum_buffer"] = v
            return
        # The loop of Optimizer._apply with SGD's update written into it: the
        # hyperparameters are read once per step, not once per parameter (workload B of
        # the benchmark has 8 small parameters, where these lookups show).
        lr, mu, wd, nesterov = self._lr, self.momentum, self.weight_decay, self.nesterov
        keep = 1.0 - self.dampening
        decay = 1.0 - lr * wd  # w - lr (g + wd w)  ==  (1 - lr wd) w - lr g
        for p, state in zip(params, states, strict=True):
            g = p.grad
            if g is None:
                continue
            state["step"] = state.get("step", 0) + 1
            add_scaled, scratch, w = state["backend"].add_scaled, state["scratch"], p.data
            if mu == 0.0:
                if wd != 0.0:
                    w *= decay
                p.data = state["data"] = add_scaled(w, -lr, g, scratch)
                continue
            v = state.get("momentum_buffer")
            if v is None:  # the first step: v = g (+ wd w)
                v = state["backend"].xp.asarray(g, copy=True)
                if wd != 0.0:
                    v = add_scaled(v, wd, w, scratch)
            else:
                v *= mu
                if keep == 1.0:
                    v += g  # in place, or a new array on JAX: stored back below
                else:
                    v = add_scaled(v, keep, g, scratch)
                if wd != 0.0:
                    v = add_scaled(v, keep * wd, w, scratch)
            state["momentum_buffer"] = v
            if nesterov:  # w - lr (g + wd w + mu v)
                if wd != 0.0:
                    w *= decay
                w = add_scaled(w, -lr, g, scratch)
                p.data = state["data"] = add_scaled(w, -lr * mu, v, scratch)
            else:
                p.data = state["data"] = add_scaled(w, -lr, v, scratch)
