r"""``solver="lbfgs"``: scikit-learn's quasi-Newton solver, with portprop's gradients.

:func:`scipy.optimize.minimize` (``method="L-BFGS-B"``) works on the host, in float64,
on the flat vector :math:`\theta` of every parameter, laid out as scikit-learn packs
it: each ``coefs_[l]`` ``(fan_in, fan_out)`` raveled row by row, then each
``intercepts_[l]``.  Each call of the objective writes :math:`\theta` into the model,
runs the forward and backward passes over the whole data set in chunks of
:data:`CHUNK` rows on the model's backend (the gradients of the chunks add up, since
each is divided by the total weight), and reads back the loss and the flat gradient
(see the last section of ``docs/backprop.md``).

The objective is the data term summed over the outputs plus the penalty, whose
gradient is exactly the one returned (:func:`scipy.optimize.check_grad` passes).  For
a regressor with several outputs, scikit-learn hands SciPy the loss averaged over the
outputs with the gradient of the sum; both have the same minimizers only for one
output, and portprop minimizes the sum (the objective of scikit-learn's gradients) while
``loss_`` reports the average, as scikit-learn does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.optimize  # type: ignore[import-untyped]
from sklearn.utils.optimize import _check_optimize_result

from portprop.sklearn._network import _Network
from portprop.sklearn._stochastic import NON_FINITE, _Data

if TYPE_CHECKING:
    from portprop.sklearn._distributed import _Ranks

Array = Any

CHUNK = 16384  # rows per forward pass: bounds the memory of the activations


class _Flat:
    """The model's parameters as one host vector in scikit-learn's order, and back."""

    def __init__(self, net: _Network) -> None:
        self.net = net
        weights = [layer.weight for layer in net.linears]
        biases = [layer.bias for layer in net.linears if layer.bias is not None]
        self.params = weights + biases
        self.n_weights = len(weights)

    def get(self, *, grad: bool = False) -> Any:
        """The parameters (or their gradients) as one float64 host vector."""
        to_host = self.net.backend.to_host
        parts = []
        for i, p in enumerate(self.params):
            a = to_host(p.grad if grad else p.data)
            parts.append((a.T if i < self.n_weights else a).ravel())
        return np.concatenate(parts).astype(np.float64, copy=False)

    def set(self, theta: Any) -> None:
        backend, dtype = self.net.backend, self.net.model.dtype
        start = 0
        for i, p in enumerate(self.params):
            shape = p.shape[::-1] if i < self.n_weights else p.shape
            size = math.prod(shape)
            part = theta[start : start + size].reshape(shape)
            start += size
            host = np.ascontiguousarray(part.T if i < self.n_weights else part)
            p.data = backend.asarray(host, dtype=dtype, copy=True)


def objective(net: _Network, flat: _Flat, data: _Data, ranks: _Ranks | None = None) -> Any:
    """``theta -> (loss, gradient)`` for SciPy, and the reported loss of the last call
    (a dict ``{"theta", "loss"}``).  With ``ranks`` (``comm=``), each rank takes its
    contiguous share of the rows and the sums over the ranks are returned, the same on
    every rank."""
    total_weight = data.weight(slice(0, data.n))
    lo, hi = (0, data.n) if ranks is None else ranks.part(0, data.n)
    last: dict[str, Any] = {}

    def fun(theta: Any) -> tuple[float, Any]:
        flat.set(theta)
        net.model.zero_grad()
        data_loss: Any = None
        with net.backend.quiet():
            for start in range(lo, hi, CHUNK):
                X, Y, w, _ = data.rows(net, slice(start, min(start + CHUNK, hi)))
                part = net.add_loss_gradients(X, Y, w, total_weight)
                data_loss = part if data_loss is None else data_loss + part
            if ranks is not None:
                data_loss = ranks.sum(data_loss)
            penalty = net.add_penalty(total_weight)
            value, reported = float(data_loss), float(penalty)
        reported += value * net.loss.report_scale
        last["theta"], last["loss"] = theta.copy(), reported
        return value + float(penalty), flat.get(grad=True)

    return fun, last


def run_lbfgs(est: Any, net: _Network, data: _Data, ranks: _Ranks | None = None) -> None:
    """Minimize over every parameter; sets ``n_iter_`` and ``loss_`` as scikit-learn does
    (with its ``ConvergenceWarning`` when L-BFGS stops before converging)."""
    flat = _Flat(net)
    fun, last = objective(net, flat, data, ranks)
    result = scipy.optimize.minimize(
        fun,
        flat.get(),
        method="L-BFGS-B",
        jac=True,
        options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol},
    )
    est.n_iter_ = _check_optimize_result("lbfgs", result, est.max_iter)
    if not np.all(np.isfinite(result.x)):
        raise ValueError(NON_FINITE)
    if "theta" not in last or not np.array_equal(last["theta"], result.x):
        fun(result.x)
    flat.set(result.x)
    net.model.zero_grad()
    est.loss_ = last["loss"]
