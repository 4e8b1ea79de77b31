r"""scikit-learn's two stochastic solvers, written as portprop optimizers so that
``solver="sgd"`` and ``solver="adam"`` follow scikit-learn's trajectories step for step.

They differ from :class:`portprop.SGD` and :class:`portprop.Adam` (torch's definitions)
where the learning rate :math:`\eta` changes between steps or :math:`\varepsilon` is
small against :math:`\sqrt{v}`:

- :class:`_SGD` keeps the *step* in its velocity, :math:`v \leftarrow \mu v - \eta g`,
  then :math:`w \leftarrow w + v`, or :math:`w \leftarrow w + \mu v - \eta g` with
  Nesterov momentum; torch keeps the gradient, :math:`v \leftarrow \mu v + g`, and
  multiplies by the current :math:`\eta`.  The two agree while :math:`\eta` is
  constant; under ``learning_rate="invscaling"`` or ``"adaptive"`` they do not.
- :class:`_Adam` divides by :math:`\sqrt{v} + \varepsilon` and scales the step by
  :math:`\eta_t = \eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`; torch adds
  :math:`\varepsilon` to the bias-corrected :math:`\sqrt{\hat v}`.

The learning-rate schedules (``invscaling``, ``adaptive``) set :attr:`lr` between
epochs (see ``_stochastic``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from portprop.backend import Backend
from portprop.module import Parameter
from portprop.optim import Optimizer, moving_average

Array = Any


class _SGD(Optimizer):
    """scikit-learn's SGD with (Nesterov) momentum (see the module notes)."""

    _HYPERPARAMETERS = ("lr", "momentum", "nesterov")
    _BUFFERS = ("velocity",)

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.9,
        nesterov: bool = True,
    ) -> None:
        super().__init__(params)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        lr, mu = self.lr, self.momentum
        v = self._buffer(state, "velocity", p.data, backend)
        v *= mu
        v = state["velocity"] = backend.add_scaled(v, -lr, g, scratch)  # v = mu v - lr g
        if self.nesterov:  # w + mu v - lr g
            w = backend.add_scaled(p.data, mu, v, scratch)
            p.data = backend.add_scaled(w, -lr, g, scratch)
        else:
            p.data = backend.add_scaled(p.data, 1.0, v, scratch)


class _Adam(Optimizer):
    """scikit-learn's Adam (see the module notes)."""

    _HYPERPARAMETERS = ("lr", "betas", "eps")
    _BUFFERS = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        beta1, beta2 = self.betas
        m = self._buffer(state, "exp_avg", p.data, backend)
        v = self._buffer(state, "exp_avg_sq", p.data, backend)
        m = state["exp_avg"] = moving_average(backend, m, beta1, g, scratch)
        v = state["exp_avg_sq"] = moving_average(backend, v, beta2, g * g, scratch)
        t = state["step"]
        step = self.lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        denominator = backend.xp.sqrt(v)
        denominator += self.eps
        p.data = backend.add_scaled(p.data, -step, m / denominator, scratch)
