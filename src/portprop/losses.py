r"""Losses: ``forward(pred, target)`` returns a 0-d array, ``backward()`` returns
:math:`\nabla_1 \ell`, the gradient with respect to ``pred``.

``reduction="mean"`` has torch's meaning (the mean over every element, or over samples
for cross-entropy); ``reduction="sum"`` is the lecture's sum over samples;
``reduction="none"`` returns the losses unreduced, with torch's shapes (per element,
``(batch, outputs)``; per sample, ``(batch,)``, for the class-label losses), and
``backward(grad_output)`` the gradient of :math:`\sum G \odot \ell` (``grad_output``
:math:`G`, ones by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from portprop import functional as F
from portprop.backend import Backend, backend_of, dtype_name, is_array

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "L1Loss",
    "Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
]

Array = Any
_REDUCTIONS = ("mean", "sum", "none")


class Loss:
    """Base class of losses.

    Subclasses implement ``_forward(xp, pred, target)`` returning the loss and keep
    what ``_backward()`` needs.
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in _REDUCTIONS:
            msg = f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            raise ValueError(msg)
        self.reduction = reduction
        self._reduce = reduction != "none"
        self._backend: Backend | None = None
        # reduction="none": the shape of the last forward's losses, and the grad_output
        # of the running backward
        self._loss_shape: tuple[int, ...] = ()
        self._grad_output: Array = None

    def forward(self, pred: Array, target: Array) -> Array:
        """The loss of ``pred`` against ``target``, as a 0-d array of ``pred``'s dtype
        (with ``reduction="none"``, the unreduced losses, as torch's)."""
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
        self._dtype = pred.dtype
        self._backend = backend  # the arguments are valid: _forward may use it
        value = backend.run(self._forward, xp, pred, target)
        self._loss_shape = tuple(value.shape)
        return value

    def backward(self, grad_output: Array = None) -> Array:
        r""":math:`\nabla_1 \ell`: the gradient of the last :meth:`forward` with respect to
        ``pred``, of ``pred``'s shape and dtype.

        With ``reduction="none"``, the gradient of :math:`\sum G \odot \ell` for
        ``grad_output`` :math:`G`, an array of the losses' shape, backend and dtype
        (ones when ``None``), as torch's ``losses.backward(grad_output)``; the other
        reductions take no ``grad_output``.
        """
        backend = self._backend
        if backend is None:
            msg = f"{type(self).__name__}.backward() was called before forward()"
            raise RuntimeError(msg)
        if grad_output is not None or not self._reduce:
            self._grad_output = self._checked_grad_output(backend, grad_output)
        try:
            return backend.run(self._backward)
        finally:
            self._grad_output = None

    def _checked_grad_output(self, backend: Backend, grad_output: Array) -> Array:
        """``grad_output`` checked against the last forward's losses (ones for ``None``)."""
        if self._reduce:
            msg = (
                f"grad_output is only taken with reduction='none' (the losses unreduced), "
                f"but this {type(self).__name__} has reduction={self.reduction!r}; call "
                f"backward() without it"
            )
            raise ValueError(msg)
        dtype = self._dtype
        shape = self._loss_shape
        if grad_output is None:
            return backend.xp.ones(shape, dtype=dtype, device=backend.device)
        backend.check(grad_output, "grad_output")
        if tuple(grad_output.shape) != shape or grad_output.dtype != dtype:
            msg = (
                f"grad_output must have the shape {shape} and dtype {dtype_name(dtype)} of "
                f"the losses of the last forward, got shape {tuple(grad_output.shape)} and "
                f"dtype {dtype_name(grad_output.dtype)}"
            )
            raise ValueError(msg)
        return grad_output

    def _gradient_scale(self, c: Any, *, per_sample: bool = False) -> Any:
        r"""The scale :math:`c` of a gradient formula: ``c`` itself, or with
        ``reduction="none"`` :math:`c\,G` (``(batch, 1)`` for per-sample losses)."""
        G = self._grad_output
        if self._reduce or G is None:
            return c
        return (G[:, None] if per_sample else G) * c

    def __call__(self, pred: Array, target: Array) -> Array:
        return self.forward(pred, target)

    def _scale(self, count: int) -> float:
        return 1.0 / count if self.reduction == "mean" else 1.0  # "sum" and "none": 1

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
        value, self._diff = F.mse_loss(
            self._backend.sum, pred, target, self._c, reduce=self._reduce
        )
        return value

    def _backward(self) -> Array:
        return F.mse_loss_gradient(self._diff, self._gradient_scale(self._c))


class _ClassLabelLoss(Loss):
    """A loss of ``(batch, classes)`` scores against integer labels ``(batch,)``, with
    torch's class ``weight`` and ``ignore_index``: the common part of
    :class:`CrossEntropyLoss` and :class:`NLLLoss`."""

    def __init__(
        self, reduction: str = "mean", *, weight: Any = None, ignore_index: int = -100
    ) -> None:
        super().__init__(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            msg = f"ignore_index must be an int, got {ignore_index!r}"
            raise TypeError(msg)
        self.ignore_index = ignore_index
        self.weight = weight
        self._weights = None if weight is None else _class_weights(weight)
        self._weight_array: tuple[Backend, Any, Array] | None = None
        self._has_ignored = False

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
        if self._weights is not None and len(self._weights) != n_classes:
            msg = (
                f"weight has {len(self._weights)} entries, but pred has {n_classes} classes "
                f"(columns): give one weight per class"
            )
            raise ValueError(msg)
        self._has_ignored = False
        if not target.shape[0]:
            return
        low, high = int(xp.min(target)), int(xp.max(target))
        ignore = self.ignore_index
        if low >= 0 and high < n_classes:  # every label is a class
            self._has_ignored = 0 <= ignore < n_classes and bool(xp.any(target == ignore))
            return
        valid = ((target >= 0) & (target < n_classes)) | (target == ignore)
        if not bool(xp.all(valid)):
            msg = (
                f"target labels must lie in [0, {n_classes}) for pred with {n_classes} "
                f"columns, or equal ignore_index={ignore}, got labels from {low} to {high}"
            )
            raise ValueError(msg)
        self._has_ignored = True

    def _weight_on(self, pred: Array) -> Array | None:
        """The class weights as an array of ``pred``'s backend, device and dtype."""
        if self._weights is None:
            return None
        backend = self._backend
        assert backend is not None
        cached = self._weight_array
        if cached is None or cached[0] is not backend or cached[1] != pred.dtype:
            xp = backend.xp
            array = xp.asarray(self._weights, dtype=pred.dtype, device=backend.device)
            cached = self._weight_array = (backend, pred.dtype, array)
        return cached[2]

    def _targets(self, xp: Any, pred: Array, target: Array, label_smoothing: float) -> Any:
        """The target matrix :math:`T` of :func:`portprop.functional.class_targets`, and
        the scale :math:`c` (``"mean"`` divides by the total weight of the kept samples)."""
        T, total = F.class_targets(
            xp,
            target,
            pred.shape[1],
            pred.dtype,
            self._weight_on(pred),
            label_smoothing,
            self.ignore_index,
        )
        return T, (1.0 / total if self.reduction == "mean" else 1.0)

    def __repr__(self) -> str:
        weight = "" if self._weights is None else f", weight={list(self._weights)}"
        return (
            f"{type(self).__name__}(reduction={self.reduction!r}{weight}, "
            f"ignore_index={self.ignore_index}{self._extra_repr()})"
        )

    def _extra_repr(self) -> str:
        return ""


def _class_weights(weight: Any) -> tuple[float, ...]:
    """``weight`` (a 1-D array of any backend, or a sequence of numbers) as host floats,
    each finite and >= 0."""
    values: Any = weight
    if is_array(weight):
        if weight.ndim != 1:
            msg = f"weight must be 1-D (one weight per class), got shape {tuple(weight.shape)}"
            raise ValueError(msg)
        values = backend_of(weight).to_host(weight).tolist()
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        msg = f"weight must be a 1-D array or a sequence of numbers, got {weight!r:.80}"
        raise TypeError(msg)
    return tuple(_number(v, "each entry of weight") for v in values)


class CrossEntropyLoss(_ClassLabelLoss):
    r"""Softmax cross-entropy of logits against integer class labels.

    ``pred``: logits ``(batch, classes)``; ``target``: integer labels ``(batch,)`` in
    ``[0, classes)``, or ``ignore_index``.  Computed in the log-sum-exp form, and its
    gradient is the fused :math:`\mathrm{softmax}(z) - \mathrm{onehot}(y)`.  ``"mean"``
    averages over samples.

    With torch's ``weight`` (one per class), ``ignore_index`` (samples with this label
    count for nothing, default -100) and ``label_smoothing`` :math:`\varepsilon` (the
    target puts :math:`1-\varepsilon` on the label and spreads :math:`\varepsilon` over
    every class), the loss is :math:`c\sum_{n,k} T_{n,k}(-\log p_{n,k})` with the target
    matrix of :func:`portprop.functional.class_targets`, and ``"mean"`` divides by the
    total weight of the samples kept, :math:`\sum_n w_{y_n}`, as torch's does.
    """

    def __init__(
        self,
        reduction: str = "mean",
        *,
        weight: Any = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction, weight=weight, ignore_index=ignore_index)
        self.label_smoothing = _number(label_smoothing, "label_smoothing", at_most=1.0)

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        if self._weights is None and self.label_smoothing == 0.0 and not self._has_ignored:
            self._general = False
            self._c = self._scale(pred.shape[0])
            self._one_hot = F.one_hot(xp, target, pred.shape[1], pred.dtype)
            value, self._probs = F.cross_entropy_loss(
                xp, pred, self._one_hot, self._c, reduce=self._reduce
            )
            return value
        self._general = True
        self._one_hot, self._c = self._targets(xp, pred, target, self.label_smoothing)
        value, self._probs = F.soft_cross_entropy_loss(
            xp, pred, self._one_hot, self._c, reduce=self._reduce
        )
        return value

    def _backward(self) -> Array:
        c = self._gradient_scale(self._c, per_sample=True)
        if self._general:
            assert self._backend is not None
            xp = self._backend.xp
            return F.soft_cross_entropy_loss_gradient(xp, self._probs, self._one_hot, c)
        return F.cross_entropy_loss_gradient(self._probs, self._one_hot, c)

    def _extra_repr(self) -> str:
        return f", label_smoothing={self.label_smoothing}"


class NLLLoss(_ClassLabelLoss):
    r"""The negative log-likelihood :math:`-c\sum_n w_{y_n} \log p_{n,y_n}` of
    log-probabilities (the output of :class:`~portprop.LogSoftmax`) against integer
    class labels, with torch's ``weight`` and ``ignore_index``.

    ``pred``: log-probabilities ``(batch, classes)``; ``target``: integer labels
    ``(batch,)``.  ``"mean"`` divides by the total weight of the samples kept.
    ``LogSoftmax`` followed by ``NLLLoss`` is :class:`CrossEntropyLoss`, computed in two
    steps.
    """

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._T, self._c = self._targets(xp, pred, target, 0.0)
        return F.nll_loss(xp, pred, self._T, self._c, reduce=self._reduce)

    def _backward(self) -> Array:
        return F.nll_loss_gradient(self._T, self._gradient_scale(self._c, per_sample=True))


class BCEWithLogitsLoss(Loss):
    r"""Binary cross-entropy of :math:`\sigma(z)` against targets in :math:`[0, 1]`,
    computed from the logits :math:`z` without overflow.

    ``pred``: logits ``(batch, outputs)``; ``target``: same shape and dtype.
    """

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        self._pred, self._target = pred, target
        return F.bce_with_logits_loss(xp, pred, target, self._c, reduce=self._reduce)

    def _backward(self) -> Array:
        assert self._backend is not None
        xp = self._backend.xp
        c = self._gradient_scale(self._c)
        return F.bce_with_logits_loss_gradient(xp, self._pred, self._target, c)


class L1Loss(Loss):
    r"""Absolute error :math:`\sum |f(x) - y|`, summed or averaged over every element.

    ``pred`` and ``target``: ``(batch, outputs)``, same dtype.
    """

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        value, self._diff = F.l1_loss(xp, pred, target, self._c, reduce=self._reduce)
        return value

    def _backward(self) -> Array:
        assert self._backend is not None
        return F.l1_loss_gradient(self._backend.xp, self._diff, self._gradient_scale(self._c))


class HuberLoss(Loss):
    r"""Huber's loss :math:`\sum h_\delta(f(x) - y)`: :math:`\tfrac12 d^2` for
    :math:`|d| < \delta`, :math:`\delta(|d| - \tfrac12\delta)` beyond, summed or
    averaged over every element; computed without squaring anything larger than
    :math:`\delta`.

    ``pred`` and ``target``: ``(batch, outputs)``, same dtype.
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = _number(delta, "delta", positive=True)

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        value, self._q = F.huber_loss(xp, pred, target, self.delta, self._c, reduce=self._reduce)
        return value

    def _backward(self) -> Array:
        return F.huber_loss_gradient(self._q, self._gradient_scale(self._c))

    def __repr__(self) -> str:
        return f"HuberLoss(reduction={self.reduction!r}, delta={self.delta})"


class SmoothL1Loss(Loss):
    r"""torch's smooth L1 loss, :math:`\tfrac12 d^2/\beta` for :math:`|d| < \beta` and
    :math:`|d| - \tfrac12\beta` beyond: Huber's loss with :math:`\delta = \beta`,
    divided by :math:`\beta` (computed by :func:`portprop.functional.huber_loss` with
    the scale :math:`c/\beta`); with ``beta=0``, the L1 loss.

    ``pred`` and ``target``: ``(batch, outputs)``, same dtype.
    """

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = _number(beta, "beta")

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self._c = self._scale(pred.shape[0] * pred.shape[1])
        if self.beta == 0.0:
            value, self._kept = F.l1_loss(xp, pred, target, self._c, reduce=self._reduce)
            return value
        self._c /= self.beta
        value, self._kept = F.huber_loss(xp, pred, target, self.beta, self._c, reduce=self._reduce)
        return value

    def _backward(self) -> Array:
        c = self._gradient_scale(self._c)
        if self.beta == 0.0:
            assert self._backend is not None
            return F.l1_loss_gradient(self._backend.xp, self._kept, c)
        return F.huber_loss_gradient(self._kept, c)

    def __repr__(self) -> str:
        return f"SmoothL1Loss(reduction={self.reduction!r}, beta={self.beta})"


def _number(
    value: Any, argname: str, *, positive: bool = False, at_most: float | None = None
) -> float:
    """``value`` as a float: a finite real number, >= 0 (> 0 with ``positive``) and at
    most ``at_most``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{argname} must be a real number, got {value!r} of type {type(value).__name__}"
        raise TypeError(msg)
    low_ok = value > 0 if positive else value >= 0
    if not (math.isfinite(value) and low_ok and (at_most is None or value <= at_most)):
        bounds = "> 0" if positive else ">= 0"
        bounds += "" if at_most is None else f" and <= {at_most}"
        msg = f"{argname} must be a finite number {bounds}, got {value!r}"
        raise ValueError(msg)
    return float(value)
