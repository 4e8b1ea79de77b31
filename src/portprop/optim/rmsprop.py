"""RMSprop: the gradient divided by a running root mean square of its values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from portprop.backend import Backend
from portprop.module import Parameter
from portprop.optim._base import Array, Optimizer, _hyper, _with_weight_decay, moving_average

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, 2012), with torch's definition.

    With :math:`g = \partial\ell/\partial w + \lambda w`:

    .. math::

        s &\leftarrow \alpha s + (1 - \alpha)\, g^2 \\
        a &\leftarrow \alpha a + (1 - \alpha)\, g
            \text{ and } d = \sqrt{s - a^2} + \varepsilon \text{ if centered,}
            \text{ else } d = \sqrt{s} + \varepsilon \\
        b &\leftarrow \mu b + g / d, \quad w \leftarrow w - \eta b
            \text{ with momentum } \mu > 0, \text{ else } w \leftarrow w - \eta\, g / d

    (:math:`s = a = b = 0` before the first step).  Parameters with ``grad is None``
    are skipped.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, optional
        The learning rate :math:`\eta > 0`.
    alpha : float, optional
        The decay rate :math:`\alpha \in [0, 1)` of the averages.
    eps : float, optional
        :math:`\varepsilon \ge 0`, added to the denominator.
    weight_decay : float, optional
        :math:`\lambda \ge 0`, an L2 penalty added to the gradient.
    momentum : float, optional
        :math:`\mu \ge 0`.
    centered : bool, optional
        Normalise by an estimate of the gradient's variance rather than its second moment.
    """

    _HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")
    _MULTI_UPDATE = "rmsprop"

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.alpha = _hyper(alpha, "alpha", high=1.0)
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.momentum = _hyper(momentum, "momentum")
        self.centered = bool(centered)
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        return [
            ("lr", lr, "lr", lr),
            ("eps", self.eps, "eps", self.eps),
            ("weight_decay", self.weight_decay, "weight_decay", self.weight_decay),
            ("momentum", self.momentum, "momentum", self.momentum),
        ]

    def _required_buffers(self) -> tuple[str, ...]:
        needed = ["square_avg"]
        if self.centered:
            needed.append("grad_avg")
        if self.momentum > 0.0:
            needed.append("momentum_buffer")
        return tuple(needed)

    def _apply(self, params: list[Parameter], states: list[dict[str, Any]]) -> None:
        kernel, backend = self._kernel, self._kernel_backend
        if kernel is None or backend is None:
            super()._apply(params, states)
            return
        ws, gs, live = self._live(params, states)
        buffers = self._required_buffers()
        found: dict[str, list[Array]] = {key: [] for key in buffers}
        for w, state in zip(ws, live, strict=True):
            state["step"] = state.get("step", 0) + 1
            for key in buffers:
                found[key].append(self._buffer(state, key, w, backend))
                state[key] = found[key][-1]
        kernel(
            ws,
            gs,
            found["square_avg"],
            found.get("grad_avg"),
            found.get("momentum_buffer"),
            self._work,
            lr=self._lr,
            alpha=self.alpha,
            eps=self.eps,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
        )

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        xp, alpha = backend.xp, self.alpha
        w = p.data
        g = _with_weight_decay(g, w, self.weight_decay)
        s = self._buffer(state, "square_avg", w, backend)
        s = state["square_avg"] = moving_average(backend, s, alpha, g * g, scratch)
        if self.centered:
            a = self._buffer(state, "grad_avg", w, backend)
            a = state["grad_avg"] = moving_average(backend, a, alpha, g, scratch)
            denominator = xp.sqrt(s - a * a)
        else:
            denominator = xp.sqrt(s)
        denominator += self.eps
        if self.momentum > 0.0:
            b = self._buffer(state, "momentum_buffer", w, backend)
            b *= self.momentum
            b += g / denominator
            state["momentum_buffer"] = b
            p.data = backend.add_scaled(w, -self._lr, b, scratch)
        else:
            p.data = backend.add_scaled(w, -self._lr, g / denominator, scratch)
