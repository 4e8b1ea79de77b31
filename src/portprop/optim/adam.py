"""Adam and AdamW: adaptive moment estimation, with an L2 penalty or decoupled weight
decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from portprop.backend import Backend
from portprop.module import Parameter
from portprop.optim._base import (
    Array,
    Optimizer,
    _betas,
    _hyper,
    _with_weight_decay,
    moving_average,
)

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with torch's definition.

    At step :math:`t`, with :math:`g = \partial\ell/\partial w + \lambda w`:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        \hat v &\leftarrow \max(\hat v, v) \text{ with amsgrad, else } \hat v = v \\
        w &\leftarrow w - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \varepsilon}

    (:math:`m = v = \hat v = 0` before the first step).  Parameters with
    ``grad is None`` are skipped and keep their own step count.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, optional
        The learning rate :math:`\eta > 0`.
    betas : (float, float), optional
        The decay rates :math:`\beta_1, \beta_2 \in [0, 1)` of the moment estimates.
    eps : float, optional
        :math:`\varepsilon \ge 0`, added to the denominator.
    weight_decay : float, optional
        :math:`\lambda \ge 0`, an L2 penalty added to the gradient (see :class:`AdamW`
        for decoupled weight decay).
    amsgrad : bool, optional
        Divide by the running maximum :math:`\hat v` of :math:`v` (Reddi et al., 2018).
    """

    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    _BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled_weight_decay: ClassVar[bool] = False
    _MULTI_UPDATE = "adam"

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.betas = _betas(betas)
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        # The first step is the largest: lr / (1 - beta1**t) shrinks towards lr.
        wd = self.weight_decay
        found = [
            ("lr", lr, "lr / (1 - betas[0])", lr / (1.0 - self.betas[0])),
            ("eps", self.eps, "eps", self.eps),
            ("weight_decay", wd, "weight_decay", wd),
        ]
        if self._decoupled_weight_decay:
            found.append(("lr", lr, "1 - lr * weight_decay", 1.0 - lr * wd))
        return found

    def _required_buffers(self) -> tuple[str, ...]:
        return self._BUFFERS if self.amsgrad else self._BUFFERS[:2]

    def _apply(self, params: list[Parameter], states: list[dict[str, Any]]) -> None:
        kernel, backend = self._kernel, self._kernel_backend
        if kernel is None or backend is None:
            super()._apply(params, states)
            return
        ws, gs, live = self._live(params, states)
        steps = {state.get("step", 0) for state in live}
        if len(steps) != 1:  # the bias corrections differ: one parameter at a time
            super()._apply(params, states)
            return
        step = steps.pop() + 1
        buffers = self._required_buffers()
        found: dict[str, list[Array]] = {key: [] for key in buffers}
        for w, state in zip(ws, live, strict=True):
            state["step"] = step
            for key in buffers:
                found[key].append(self._buffer(state, key, w, backend))
                state[key] = found[key][-1]
        beta1, beta2 = self.betas
        kernel(
            ws,
            gs,
            found["exp_avg"],
            found["exp_avg_sq"],
            found["max_exp_avg_sq"] if self.amsgrad else None,
            self._work,
            lr=self._lr,
            beta1=beta1,
            beta2=beta2,
            eps=self.eps,
            weight_decay=self.weight_decay,
            decoupled=self._decoupled_weight_decay,
            step=step,
        )

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        lr, wd = self._lr, self.weight_decay  # _lr: no property call per parameter
        beta1, beta2 = self.betas
        w = p.data
        if self._decoupled_weight_decay:
            if wd != 0.0:
                w *= 1.0 - lr * wd
        else:
            g = _with_weight_decay(g, w, wd)
        m = moving_average(backend, self._buffer(state, "exp_avg", w, backend), beta1, g, scratch)
        v = self._buffer(state, "exp_avg_sq", w, backend)
        v = moving_average(backend, v, beta2, g * g, scratch)
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if self.amsgrad:
            v_max = self._buffer(state, "max_exp_avg_sq", w, backend)
            v = state["max_exp_avg_sq"] = backend.xp.maximum(v_max, v)
        t = state["step"]
        # ** 0.5, not math.sqrt: t is traced inside a compiled step
        denominator = backend.xp.sqrt(v) / (1.0 - beta2**t) ** 0.5
        denominator += self.eps
        p.data = backend.add_scaled(w, -lr / (1.0 - beta1**t), m / denominator, scratch)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), torch's definition.

    As :class:`Adam` with :math:`\lambda = 0` in the gradient, but each step first
    shrinks the weights: :math:`w \leftarrow (1 - \eta\lambda)\, w`.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
