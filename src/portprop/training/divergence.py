"""The divergence check of :func:`~portprop.fit`, run before each optimizer step, and its error.

:func:`all_finite` tells on the device whether the loss and every gradient of a batch
are finite; :func:`fit` reads that one boolean back and, when it is false, raises the
:class:`~portprop.TrainingDivergedError` that :func:`diverged` builds, which names the
epoch, the batch and the quantity that is not finite.  The module notes of
:mod:`portprop.training` give what the check costs.
"""

from __future__ import annotations

from typing import Any

from portprop.errors import TrainingDivergedError
from portprop.module import Module, Parameter

__all__ = ["all_finite", "diverged"]

Array = Any


def all_finite(xp: Any, value: Array, params: list[Parameter]) -> Array:
    """A 0-d boolean on the device: the loss and every gradient are finite.

    A NaN or an infinity anywhere makes the sum of the loss and of every gradient NaN or
    infinite, so one reduction per parameter and one ``isfinite`` do (``isfinite`` and
    ``all`` per parameter cost up to five times more, on torch and JAX, for the
    lecture's network).  The sum can also overflow while every term is finite: that
    too is divergence.
    """
    total = value
    for p in params:
        if p.grad is not None:
            total = total + xp.sum(p.grad)
    return xp.isfinite(total)


def diverged(
    model: Module,
    value: Array,
    norm: float | None,
    *,
    epoch: int,
    epochs: int,
    batch: int,
    batches: int,
) -> TrainingDivergedError:
    """The error for a batch whose loss or gradients are not finite (slow path).

    ``norm`` is the total gradient norm that clipping returned, or ``None`` without
    clipping (clipping a non-finite norm has already overwritten the gradients).  The
    data themselves are finite: :func:`fit` checked them before the first epoch.
    """
    xp = model.backend.xp
    bad = (
        []
        if norm is not None
        else [
            n
            for n, p in model.named_parameters()
            if p.grad is not None and not bool(xp.all(xp.isfinite(p.grad)))
        ]
    )
    if not bool(xp.isfinite(value)):
        quantity, shown = "loss", f"the loss is {float(value)}"
    elif norm is not None:
        quantity, shown = "gradients", f"the total norm of the gradients is {norm}"
    elif bad:
        quantity = f"gradient of {bad[0]!r}"
        shown = f"the gradient of parameter {bad[0]!r} is not finite"
    else:
        quantity = "gradients"
        shown = "the gradients are so large that their sum overflows"
    msg = (
        f"training diverged at epoch {epoch} of {epochs}, batch {batch} of {batches} (both "
        f"counted from 1): {shown}. The optimizer step was skipped, so the parameters hold "
        "their values from before this batch. Lower the learning rate, clip gradients with "
        "clip_grad_norm=..., or scale the inputs."
    )
    return TrainingDivergedError(msg, epoch=epoch, batch=batch, quantity=quantity)
