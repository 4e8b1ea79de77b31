r"""The one pass both kinds of solver need: the loss of a batch and its gradients, by
the lecture's forward and backward passes, plus scikit-learn's L2 penalty.

For a batch with weights :math:`w_i` summing to :math:`W` (the batch size without
weights), scikit-learn's objective is

.. math::

    L = \frac{1}{W}\sum_i w_i\,\ell(f(x_i), y_i) + \frac{\alpha}{2W}\sum_l \lVert w^{(l)} \rVert^2,

whose penalty adds :math:`\frac{\alpha}{W} w^{(l)}` to each weight matrix's gradient
(never to the intercepts).  L-BFGS calls the same pass on chunks of the whole data set
with :math:`W` the total weight, so that the gradients of the chunks add up.

Sparse ``X`` (SciPy CSR or CSC): on NumPy the first layer multiplies it as it is, both
forward (:math:`XW^T`) and backward (:math:`\delta^T X`), through the formulas of
:mod:`portprop.functional`, which only use ``@``; on other backends each batch is
densified on its way to the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portprop import functional as F
from portprop.layers import Linear
from portprop.module import Sequential
from portprop.sklearn._losses import _Loss

Array = Any


def _is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array (without importing SciPy)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _row_slice(X: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a dense array of any library or of a SciPy sparse matrix.
    ``stop`` is clipped to the number of rows: the standard leaves slices past the end
    unspecified (array-api-strict refuses them), and it wants every axis indexed."""
    stop = min(stop, X.shape[0])
    return X[start:stop] if _is_sparse(X) else X[start:stop, ...]


class _Network:
    """A portprop :class:`~portprop.Sequential` (linear output layer), its loss and
    scikit-learn's penalty ``alpha``."""

    def __init__(self, model: Sequential, loss: _Loss, alpha: float) -> None:
        self.model = model
        self.loss = loss
        self.alpha = alpha
        self.linears = [m for m in model if isinstance(m, Linear)]
        self._sparse_X: Any = None

    @property
    def backend(self) -> Any:
        return self.model.backend

    def as_batch(self, X: Any) -> Any:
        """A batch for :meth:`forward`: sparse rows stay sparse on NumPy and are
        densified to the model's backend and dtype elsewhere."""
        if _is_sparse(X):
            if self.backend.library == "numpy":
                return X.astype(self.model.dtype, copy=False)
            X = X.toarray()
        return self.backend.asarray(X, dtype=self.model.dtype)

    def logits(self, X: Array) -> Array:
        """The output layer's values :math:`z`, before the output activation."""
        if not _is_sparse(X):
            self._sparse_X = None
            return self.model.forward(X)
        first = self.model[0]
        assert isinstance(first, Linear)
        assert first.bias is not None
        self._sparse_X = X
        S = F.linear(X, first.weight.data, first.bias.data)
        for layer in list(self.model)[1:]:
            S = layer.forward(S)
        return S

    def backward(self, delta: Array) -> None:
        """Accumulate every parameter's gradient from :math:`\\partial L/\\partial z`."""
        X = self._sparse_X
        if X is None:
            self.model.backward(delta, input_grad=False)
            return
        for layer in reversed(list(self.model)[1:]):
            delta = layer.backward(delta)
        first = self.model[0]
        assert isinstance(first, Linear)
        assert first.bias is not None
        first.weight.accumulate(F.weight_gradient(delta, X))
        first.bias.accumulate(F.bias_gradient(self.backend.sum, delta))

    def outputs(self, X: Array) -> Array:
        """:math:`\\sigma(z)`: probabilities or predicted values, on the model's backend."""
        return self.loss.activate(self.backend.xp, self.logits(X))

    def add_loss_gradients(self, X: Array, Y: Array, w: Array | None, total_weight: float) -> Array:
        """Forward and backward over one batch; adds its gradients (divided by
        ``total_weight``) into the parameters' ``grad`` and returns its loss without the
        penalty (a 0-d array on the device)."""
        backend = self.backend
        with backend.scope():
            Z = self.logits(X)
            value, delta = self.loss.value_and_delta(backend.xp, Z, Y, w, total_weight)
            self.backward(delta)
        return value

    def add_penalty(self, total_weight: float) -> Array | float:
        """scikit-learn's L2 penalty: adds :math:`\\alpha w / W` to each weight matrix's
        gradient and returns :math:`\\frac{\\alpha}{2W}\\sum \\lVert w \\rVert^2`."""
        if self.alpha == 0.0:
            return 0.0
        backend, xp = self.backend, self.backend.xp
        scale = self.alpha / total_weight
        squares: Array | float = 0.0
        with backend.scope():
            for layer in self.linears:
                W = layer.weight
                squares = squares + xp.sum(W.data * W.data)
                W.grad = backend.add_scaled(W.grad, scale, W.data)
        return squares * (0.5 * scale)

    def step_loss(
        self,
        X: Array | None,
        Y: Array | None,
        w: Array | None,
        total_weight: float,
        reduce: Callable[[Array | None], Array] | None = None,
    ) -> Array:
        """The gradients of one step (zeroed first) and the batch's loss as scikit-learn
        reports it (the data term times ``report_scale``, plus the penalty).

        With ``reduce`` (``comm=``), the data term's loss and gradients of this rank's
        rows (``X`` ``None``: none) are summed over the ranks by ``reduce`` before the
        penalty is added, once."""
        self.model.zero_grad()
        value = None if X is None else self.add_loss_gradients(X, Y, w, total_weight)
        if reduce is not None:
            value = reduce(value)
        assert value is not None
        return value * self.loss.report_scale + self.add_penalty(total_weight)
