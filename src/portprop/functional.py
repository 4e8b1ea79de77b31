r"""The formulas of back-propagation, one function each.

Every function here is one line of the lecture (``docs/backprop.md`` derives them),
written for a batch: rows are samples, so the lecture's column vectors
:math:`x^{(l)}` become the rows of ``X`` and the products flip sides.  The layers in
:mod:`portprop.layers` and :mod:`portprop.losses` only call these.

Each function takes the array namespace ``xp`` first when it needs one (or only a
``sum``, :meth:`portprop.Backend.sum`, where that is all it needs); arrays are never
created here without ``dtype=`` and ``device=`` taken from an input.

==========================================================================  =========================
lecture                                                                     function
==========================================================================  =========================
:math:`s = w x + b`                                                         :func:`linear`
:math:`\partial\ell/\partial w = (\partial\ell/\partial s)\, x^T`           :func:`weight_gradient`
:math:`\partial\ell/\partial b = \partial\ell/\partial s`                   :func:`bias_gradient`
:math:`\partial\ell/\partial x = w^T\,\partial\ell/\partial s`              :func:`input_gradient`
:math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \sigma'(s)`  ``*_backward``
:math:`y = m \odot x / (1 - p)` (dropout)                                   :func:`dropout`
:math:`\nabla_1 \ell`                                                       ``*_loss_gradient``
:math:`w \leftarrow w - \eta\,\partial\ell/\partial w`                      :meth:`portprop.SGD.step`
==========================================================================  =========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "bce_with_logits_loss",
    "bce_with_logits_loss_gradient",
    "bias_gradient",
    "cross_entropy_loss",
    "cross_entropy_loss_gradient",
    "dropout",
    "dropout_backward",
    "identity_backward",
    "input_gradient",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "log_sum_exp",
    "mse_loss",
    "mse_loss_gradient",
    "one_hot",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "tanh",
    "tanh_backward",
    "weight_gradient",
]

Array = Any


# ---- the linear map s = w x + b and its three derivatives -------------------------------


def linear(X: Array, W: Array, b: Array) -> Array:
    r"""Forward pass of a layer, :math:`s^{(l)} = w^{(l)} x^{(l-1)} + b^{(l)}`.

    ``(batch, in) , (out, in) , (out,) -> (batch, out)``: ``S = X @ W.T + b``.
    """
    S = X @ W.T
    S += b
    return S


def weight_gradient(dl_ds: Array, X: Array) -> Array:
    r""":math:`[\partial\ell/\partial w^{(l)}] = [\partial\ell/\partial s^{(l)}]\,(x^{(l-1)})^T`,
    summed over the batch.

    ``(batch, out) , (batch, in) -> (out, in)``: ``dl_ds.T @ X``.
    """
    return dl_ds.T @ X


def bias_gradient(sum: Callable[..., Array], dl_ds: Array) -> Array:
    r""":math:`[\partial\ell/\partial b^{(l)}] = [\partial\ell/\partial s^{(l)}]`, summed over
    the batch.

    ``(batch, out) -> (out,)``.  ``sum`` is the namespace's ``xp.sum`` or an equivalent
    kernel, such as :meth:`portprop.Backend.sum` (the layers pass that one).
    """
    return sum(dl_ds, axis=0)


def input_gradient(dl_ds: Array, W: Array) -> Array:
    r""":math:`[\partial\ell/\partial x^{(l-1)}] = (w^{(l)})^T\,[\partial\ell/\partial s^{(l)}]`.

    ``(batch, out) , (out, in) -> (batch, in)``: ``dl_ds @ W``.
    """
    return dl_ds @ W


# ---- activations: sigma and dl/ds = dl/dx * sigma'(s) -----------------------------------


def tanh(xp: Any, S: Array) -> Array:
    r""":math:`\sigma(s) = \tanh s`."""
    return xp.tanh(S)


def tanh_backward(dl_dx: Array, Y: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot (1 - \tanh^2 s)`, from
    the output ``Y = tanh(S)`` that the forward pass kept."""
    return dl_dx * (1.0 - Y * Y)


def sigmoid(xp: Any, S: Array) -> Array:
    r""":math:`\sigma(s) = 1 / (1 + e^{-s})`, computed without overflow for any ``s``:
    :math:`e^{-|s|}` never exceeds 1."""
    e = xp.exp(-xp.abs(S))
    return xp.where(S >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(dl_dx: Array, Y: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot \sigma(s)(1-\sigma(s))`,
    from the output ``Y`` that the forward pass kept."""
    return dl_dx * (Y * (1.0 - Y))


def relu(xp: Any, S: Array) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = \max(0, s)`, as :math:`s \odot \sigma'(s)`; also returns
    :math:`\sigma'(s) = 1[s > 0]` (zeros and ones of ``S``'s dtype), which is all the
    backward pass needs.

    A product with a 0/1 array, not ``where``: selecting by an unpredictable mask is
    several times slower than a multiplication on CPUs.
    """
    mask = xp.astype(S > 0, S.dtype)
    return S * mask, mask  # (an input of -inf gives 0 * -inf = NaN, as NaN gives NaN)


def relu_backward(dl_dx: Array, mask: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot 1[s > 0]`."""
    return dl_dx * mask


def leaky_relu(xp: Any, S: Array, negative_slope: float) -> tuple[Array, Array]:
    r""":math:`\sigma(s) = s` for :math:`s > 0`, :math:`a s` otherwise, as
    :math:`s \odot \sigma'(s)`; also returns :math:`\sigma'(s) = 1[s>0] + a\,1[s\le0]`."""
    slope = xp.astype(S > 0, S.dtype)
    slope *= 1.0 - negative_slope
    slope += negative_slope
    return S * slope, slope


def leaky_relu_backward(dl_dx: Array, slope: Array) -> Array:
    r""":math:`\partial\ell/\partial s = \partial\ell/\partial x \odot (1[s>0] + a\,1[s\le0])`."""
    return dl_dx * slope


def identity_backward(dl_dx: Array) -> Array:
    r""":math:`\sigma(s) = s`, so :math:`\partial\ell/\partial s = \partial\ell/\partial x`."""
    return dl_dx


# ---- losses and nabla_1 l ---------------------------------------------------------------


def mse_loss(
    sum: Callable[..., Array], pred: Array, target: Array, scale: float
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum (f(x) - y)^2`; returns the loss and the residual kept for the
    gradient.  ``scale`` is :math:`c`: 1 for ``"sum"``, ``1/numel`` for ``"mean"``.
    ``sum`` is the namespace's ``xp.sum`` or an equivalent kernel, such as
    :meth:`portprop.Backend.sum` (the losses pass that one)."""
    diff = pred - target
    return sum(diff * diff) * scale, diff


def mse_loss_gradient(diff: Array, scale: float) -> Array:
    r""":math:`\nabla_1 \ell = 2c\,(f(x) - y)`."""
    return diff * (2.0 * scale)


def log_sum_exp(xp: Any, Z: Array) -> Array:
    r""":math:`\log \sum_k e^{z_k}` per row, as :math:`m + \log \sum_k e^{z_k - m}` with
    :math:`m = \max_k z_k`, so that no exponential overflows.  ``(batch, C) -> (batch, 1)``."""
    m = xp.max(Z, axis=1, keepdims=True)
    return m + xp.log(xp.sum(xp.exp(Z - m), axis=1, keepdims=True))


def one_hot(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    """``(batch,)`` integer labels -> ``(batch, num_classes)`` rows of zeros with a one."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def softmax(xp: Any, Z: Array) -> Array:
    r""":math:`e^{z_k} / \sum_j e^{z_j}` per row, as :math:`e^{z_k - m} / \sum_j e^{z_j - m}`
    with :math:`m = \max_j z_j`: no exponential overflows, the largest is 1, and a
    probability that underflows is exactly 0, never NaN.  ``(batch, C) -> (batch, C)``."""
    e = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def cross_entropy_loss(
    xp: Any, logits: Array, targets_one_hot: Array, scale: float
) -> tuple[Array, Array]:
    r""":math:`\ell = c \sum_n (\log \sum_k e^{z_{n,k}} - z_{n,y_n})`; returns the loss and
    the softmax probabilities :math:`p` kept for the gradient.

    With the row maxima :math:`m_n` subtracted first, :math:`u = z - m`, each term is
    :math:`\log \sum_k e^{u_{n,k}} - u_{n,y_n}`, a sum of two numbers :math:`\ge 0`: no
    exponential overflows, and large logits (:math:`\pm 10^4` in float32) lose no digits
    to cancellation, as :math:`\mathrm{lse}(z) - z_{y}` would.  The probabilities reuse
    the exponentials, :math:`p = e^{u} / \sum_k e^{u_k}`.
    """
    u = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(u)
    s = xp.sum(e, axis=1, keepdims=True)
    loss = (xp.sum(xp.log(s)) - xp.sum(u * targets_one_hot)) * scale
    return loss, e / s


def cross_entropy_loss_gradient(probs: Array, targets_one_hot: Array, scale: float) -> Array:
    r""":math:`\nabla_1 \ell = c\,(\mathrm{softmax}(z) - \mathrm{onehot}(y))`: the softmax
    and the log-sum-exp differentiated together."""
    return (probs - targets_one_hot) * scale


def bce_with_logits_loss(xp: Any, logits: Array, target: Array, scale: float) -> Array:
    r""":math:`\ell = c \sum \big(\max(z,0) - z y + \log(1 + e^{-|z|})\big)`, the binary
    cross-entropy of :math:`\sigma(z)` written so that no exponential overflows.

    :math:`\max(z,0) - z y` is computed as :math:`z (1 - y)` for :math:`z > 0` and
    :math:`-z y` otherwise: for targets in :math:`[0, 1]` no digits are lost to
    cancellation at large logits, and targets of exactly 0 or 1 give no NaN.
    """
    terms = xp.where(logits > 0, logits * (1.0 - target), -logits * target)
    terms = terms + xp.log1p(xp.exp(-xp.abs(logits)))
    return xp.sum(terms) * scale


def bce_with_logits_loss_gradient(xp: Any, logits: Array, target: Array, scale: float) -> Array:
    r""":math:`\nabla_1 \ell = c\,(\sigma(z) - y)`."""
    return (sigmoid(xp, logits) - target) * scale


# ---- dropout: y = m * x / (1 - p) with a random keep-mask m ------------------------------


def dropout(xp: Any, X: Array, keep: Array, p: float) -> tuple[Array, Array]:
    r"""Inverted dropout, :math:`y = x \odot m / (1 - p)`, where the boolean ``keep``
    :math:`m` keeps each element with probability :math:`1 - p`; also returns the
    factor :math:`m / (1 - p)` (of ``X``'s dtype), which is all the backward pass needs.

    Dividing by the keep probability makes :math:`E[y] = x`, so evaluation needs no
    rescaling.  ``keep`` has the shape of ``X``.
    """
    factor = xp.astype(keep, X.dtype)
    factor *= 1.0 / (1.0 - p)
    return X * factor, factor


def dropout_backward(dl_dy: Array, factor: Array) -> Array:
    r""":math:`\partial\ell/\partial x = \partial\ell/\partial y \odot m / (1 - p)`, with the
    factor of the forward pass."""
    return dl_dy * factor
