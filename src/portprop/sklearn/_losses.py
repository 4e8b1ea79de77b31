r"""scikit-learn's output activations and losses, with sample weights.

Each loss pairs an output activation :math:`\sigma` with the loss whose gradient with
respect to the logits :math:`z` is :math:`\sigma(z) - y` (the canonical link), so that
one formula gives every :math:`\nabla_1 \ell`.  With weights :math:`w_i` (all 1 by
default) and :math:`W = \sum_i w_i`, a batch's loss is the weighted mean

.. math::

    L = \frac{1}{W} \sum_i w_i\, \ell(z_i, y_i),
    \qquad
    \frac{\partial L}{\partial z_i} = \frac{w_i}{W}\,(\sigma(z_i) - y_i),

as in scikit-learn.  ``loss_curve_`` reports the squared error averaged over the
outputs (:attr:`_Loss.report_scale`), as scikit-learn does, while the gradients are
those of the sum over the outputs (scikit-learn's too).

``Y`` is always 2-D ``(batch, outputs)`` in the model's dtype: one-hot rows (softmax),
0/1 indicators (logistic) or target values; ``w`` is ``(batch,)`` or ``None``.
"""

from __future__ import annotations

from typing import Any

from portprop import functional as F

Array = Any


class _Loss:
    """An output activation and its loss (see the module notes)."""

    out_activation = ""
    report_scale = 1.0  # what the loss is multiplied by in loss_curve_ and loss_

    def __init__(self, n_outputs: int) -> None:
        self.n_outputs = n_outputs

    def activate(self, xp: Any, Z: Array) -> Array:
        """The outputs :math:`\\sigma(z)`: probabilities or predicted values."""
        raise NotImplementedError

    def per_sample(self, xp: Any, Z: Array, P: Array, Y: Array) -> Array:
        """:math:`\\ell(z_i, y_i)` summed over the outputs, ``(batch,)``, from the logits
        ``Z`` and the outputs ``P``."""
        raise NotImplementedError

    def value_and_delta(
        self, xp: Any, Z: Array, Y: Array, w: Array | None, total_weight: float
    ) -> tuple[Array, Array]:
        """The weighted loss summed over the batch and divided by ``total_weight``, and
        its gradient with respect to ``Z``, ``(batch, outputs)``."""
        P = self.activate(xp, Z)
        losses = self.per_sample(xp, Z, P, Y)
        delta = P - Y
        if w is not None:
            losses = losses * w
            delta = delta * w[:, None]
        scale = 1.0 / total_weight
        return xp.sum(losses) * scale, delta * scale


def _clipped_log(xp: Any, P: Array) -> Array:
    """:math:`\\log p` of probabilities clipped to :math:`[\\epsilon, 1 - \\epsilon]`
    (the dtype's machine epsilon), as scikit-learn computes its log losses: the loss
    values, and so L-BFGS's line searches, are scikit-learn's (the gradients are not
    clipped, in scikit-learn either)."""
    eps = float(xp.finfo(P.dtype).eps)
    return xp.log(xp.clip(P, eps, 1.0 - eps))


class _SoftmaxLogLoss(_Loss):
    r"""Softmax outputs and the cross-entropy :math:`-\sum_k y_k \log p_k`."""

    out_activation = "softmax"

    def activate(self, xp: Any, Z: Array) -> Array:
        return F.softmax(xp, Z)

    def per_sample(self, xp: Any, Z: Array, P: Array, Y: Array) -> Array:  # noqa: ARG002
        return -xp.sum(Y * _clipped_log(xp, P), axis=1)


class _LogisticLogLoss(_Loss):
    r"""Logistic outputs (binary and multilabel problems) and the binary cross-entropy
    per output, :math:`-y \log p - (1 - y) \log(1 - p)`, summed over the outputs."""

    out_activation = "logistic"

    def activate(self, xp: Any, Z: Array) -> Array:
        return F.sigmoid(xp, Z)

    def per_sample(self, xp: Any, Z: Array, P: Array, Y: Array) -> Array:  # noqa: ARG002
        terms = Y * _clipped_log(xp, P) + (1.0 - Y) * _clipped_log(xp, 1.0 - P)
        return -xp.sum(terms, axis=1)


class _HalfSquaredError(_Loss):
    r"""Identity outputs and :math:`\frac12 \lVert z - y \rVert^2`; reported averaged
    over the outputs."""

    out_activation = "identity"

    def __init__(self, n_outputs: int) -> None:
        super().__init__(n_outputs)
        self.report_scale = 1.0 / n_outputs

    def activate(self, xp: Any, Z: Array) -> Array:  # noqa: ARG002
        return Z

    def per_sample(self, xp: Any, Z: Array, P: Array, Y: Array) -> Array:  # noqa: ARG002
        diff = Z - Y
        return 0.5 * xp.sum(diff * diff, axis=1)


class _HalfPoissonDeviance(_Loss):
    r"""Exponential outputs :math:`\mu = e^z` (the log link) and the half Poisson
    deviance :math:`y \log(y/\mu) - y + \mu` (with :math:`0 \log 0 = 0`), summed over
    the outputs."""

    out_activation = "exp"

    def activate(self, xp: Any, Z: Array) -> Array:
        return xp.exp(Z)

    def per_sample(self, xp: Any, Z: Array, P: Array, Y: Array) -> Array:
        positive = Y > 0
        ones = xp.ones_like(Y)
        y_log_y = xp.where(positive, Y * xp.log(xp.where(positive, Y, ones)), 0.0 * ones)
        return xp.sum(y_log_y - Y * Z - Y + P, axis=1)


def _classifier_loss(kind: str, n_outputs: int) -> _Loss:
    """Softmax for multiclass targets, logistic outputs for binary and multilabel ones."""
    if kind == "multiclass":
        return _SoftmaxLogLoss(n_outputs)
    return _LogisticLogLoss(n_outputs)


_REGRESSION_LOSSES: dict[str, type[_Loss]] = {
    "squared_error": _HalfSquaredError,
    "poisson": _HalfPoissonDeviance,
}
