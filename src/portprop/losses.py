r"""Losses: ``forward(pred, target)`` returns a 0-d array, ``backward()`` returns
:math:`\nabla_1 \ell`, the gradient with respect to ``pred``.

``reduction="mean"`` has torch's meaning (the mean over every element, or over samples
for cross-entropy); ``reduction="sum"`` is the lecture's sum over samples.
"""

from __future__ import annotations

from typing import Any

from portprop import functional as F
from portprop.backend import Backend, backend_of, dtype_name

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss"]

Array = Any
_REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class of losses.

    Subclasses implement ``_forward(xp, pred, target)`` returning the loss and keep
    what ``_backward()`` needs.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            msg = f"reduction must be 'mean' or 'sum', got {reduction!r}"
            raise ValueError(msg)
        self.reduction = reduction
        self._backend: Backend | None = None

    def forward(self, pred: Array, target: Array) -> Array:
        """The loss of ``pred`` against ``target``, as a 0-d array of ``pred``'s dtype."""
        backend = self._backend
        if backend is None or not (backend.owns(pred) and backend.owns(target)):
            backend = backend_of(pred, target, names=("pred", "target"))
        xp = backend.xp
        if pred.ndim != 2:
            msg = f"pred must be 2-D (batch, outputs), got shape {tuple(pred.shape)}"
            raise ValueError(msg)
        if not backend.is_float_dtype(pred.dtype):
            msg = f"pred must have a floating dtype, got {dtype_name(pred.dtype)}"
            raise TypeError(msg)
        self._check_target(xp, pred, target)
        self._backend = backend  # the arguments are valid: _forward may use it
        return backend.run(self._forward, xp, pred, target)

    def backward(self) -> Array:
        r""":math:`\nabla_1 \ell`: the gradient of the last :meth:`forward` with respect to
        ``pred``, of ``pred``'s shape and dtype."""
        if self._backend is None:
            msg = f"{type(self).__name__}.backward() was called before forward()"
            raise RuntimeError(msg)
        return self._backend.run(self._backward)

    def __call__(self, pred: Array, target: Array) -> Array:
        return self.forward(pred, target)

    def _scale(self, count: int) -> float:
        return 1.0 / count if self.reduction == "mean" else 1.0

    def _check_target(self, xp: Any, pred: Array, target: Array) -> None:  # noqa: ARG002
        """Targets of the same shape and dtype as ``pred`` (overridden by cross-entropy)."""
        if tuple(target.shape) != tuple(pred.shape):
            msg = (
                f"target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}"
            )
            raise ValueError(msg)
        if target.dtype != pred.dtype:
            msg = (
                f"target must have pred's dtype {dtype_name(pred.dtype)}, got "
                f"{dtype_name(target.dtype)}; convert it with "
                f"portprop.asarray(target, dtype={dtype_name(pred.dtype)!r}, "
                f"backend={backend_of(pred).name!r})"
            )
            raise TypeError(msg)

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def _backward(self) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MSELoss(Loss):
    r"""Squared error :math:`\sum (f(x) - y)^2`, summed or averaged over every element.

    ``pred`` and ``target``: ``(batch, outputs)``, same dtype.
    """

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:  # noqa: ARG002
        assert self._backend is not None
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        value, self._diff = F.mse_loss(self._backend.sum, pred, target, self._c)
        return value

    def _backward(self) -> Array:
        return F.mse_loss_gradient(self._diff, self._c)


class CrossEntropyLoss(Loss):
    r"""Softmax cross-entropy of logits against integer class labels.

    ``pred``: logits ``(batch, classes)``; ``target``: integer labels ``(batch,)`` in
    ``[0, classes)``.  Computed in the log-sum-exp form, and its gradient is the fused
    :math:`\mathrm{softmax}(z) - \mathrm{onehot}(y)`.  ``"mean"`` averages over samples.
    """

    def _check_target(self, xp: Any, pred: Array, target: Array) -> None:
        if target.ndim != 1 or target.shape[0] != pred.shape[0]:
            msg = (
                f"target must be 1-D class labels of shape ({pred.shape[0]},) to match pred "
                f"{tuple(pred.shape)}, got shape {tuple(target.shape)}"
            )
            raise ValueError(msg)
        if not xp.isdtype(target.dtype, "integral"):
            msg = f"target must hold integer class labels, got dtype {dtype_name(target.dtype)}"
            raise TypeError(msg)
        n_classes = pred.shape[1]
        if target.shape[0] and (int(xp.min(target)) < 0 or int(xp.max(target)) >= n_classes):
            msg = (
                f"target labels must lie in [0, {n_classes}) for pred with {n_classes} "
                f"columns, got labels from {int(xp.min(target))} to {int(xp.max(target))}"
            )
            raise ValueError(msg)

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0])
        self._one_hot = F.one_hot(xp, target, pred.shape[1], pred.dtype)
        value, self._probs = F.cross_entropy_loss(xp, pred, self._one_hot, self._c)
        return value

    def _backward(self) -> Array:
        return F.cross_entropy_loss_gradient(self._probs, self._one_hot, self._c)


class BCEWithLogitsLoss(Loss):
    r"""Binary cross-entropy of :math:`\sigma(z)` against targets in :math:`[0, 1]`,
    computed from the logits :math:`z` without overflow.

    ``pred``: logits ``(batch, outputs)``; ``target``: same shape and dtype.
    """

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        self._pred, self._target = pred, target
        return F.bce_with_logits_loss(xp, pred, target, self._c)

    def _backward(self) -> Array:
        assert self._backend is not None
        xp = self._backend.xp
        return F.bce_with_logits_loss_gradient(xp, self._pred, self._target, self._c)
