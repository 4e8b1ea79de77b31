"""The divergence check of :func:`~portprop.fit`, run before each optimizer step, and its errors.

:class:`LastFinite` keeps the parameters of the last step known to be finite.  Before
each optimizer step, :meth:`LastFinite.check` tells whether the loss, every gradient and
every parameter (as the previous step left them) are finite, with one reduction and one
host-device synchronization for them all; :func:`fit` checks the parameters once more
after the last step of each epoch (:meth:`LastFinite.check_parameters`).  When a check
fails, :meth:`LastFinite.diverged` builds the :class:`~portprop.TrainingDivergedError`
that names the epoch, the batch and the quantity that is not finite and, when a step
made the parameters non-finite, puts back their values from before that step.  The
module notes of :mod:`portprop.training` give what the check costs.
"""

from __future__ import annotations

import math
from typing import Any

from portprop.backend import Backend
from portprop.errors import TrainingDivergedError
from portprop.module import Module, Parameter

__all__ = ["LastFinite", "all_finite"]

Array = Any

_SHOWN = 3  # how many parameter names a message lists before counting the rest


def all_finite(
    backend: Backend, value: Array | None, params: list[Parameter], *, grads: bool
) -> tuple[Array, Array]:
    """``(finite, flat)``: a 0-d boolean on the device, whether the loss ``value`` (if
    given), every parameter and (with ``grads``) every gradient are finite; and
    ``flat``, the parameters followed by the gradients, flattened into one new array.

    A NaN or an infinity anywhere makes the sum of them all NaN or infinite, so one
    concatenation and one reduction do: for small layers a reduction costs more than
    copying (and ``isfinite`` and ``all`` per array up to five times more, on torch and
    JAX, for the lecture's network).  The sum can also overflow while every term is
    finite: that too is divergence.
    """
    xp = backend.xp
    arrays = [p.data for p in params]
    if grads:
        arrays += [p.grad for p in params if p.grad is not None]
    if not arrays:  # a model without parameters
        flat = xp.zeros((0,), dtype=backend.float_dtype(), device=backend.device)
        if value is None:
            return xp.asarray(True, dtype=xp.bool, device=backend.device), flat
        return xp.isfinite(value), flat
    flat = xp.concat(arrays, axis=None)
    total = backend.sum(flat)
    return xp.isfinite(total if value is None else value + total), flat


class LastFinite:
    """The parameters of the model's last step known to be finite, and the checks of
    :func:`fit` that keep them.

    The copy is a by-product of the check: the one concatenation that the single
    reduction of each batch needs begins with the parameters, and a batch whose check
    passes keeps it.  A step that makes a parameter non-finite is caught at the next
    batch's check, or at the end of the epoch, and :meth:`diverged` puts the kept values
    back.
    """

    def __init__(self, model: Module, *, epochs: int, batches: int) -> None:
        """Check the model's parameters before training (one synchronization).

        Raises
        ------
        ValueError
            If a parameter holds NaN or infinity: ``fit`` needs a finite model.
        """
        self.backend = model.backend
        self.named = list(model.named_parameters())
        self.params = [p for _, p in self.named]
        self.epochs, self.batches = epochs, batches
        self.kept: Array | None = None  # begins with the parameters, flattened
        if not self.check_parameters():
            bad = self._non_finite() or ["(their sum overflows)"]
            msg = (
                f"model has parameters that are not finite before training: expected "
                f"finite values, got NaN or infinity in {_first_few(bad)} (initialise the "
                "model again, or load a checkpoint)"
            )
            raise ValueError(msg)

    def check(self, value: Array | None, *, grads: bool = True) -> bool:
        """Whether the loss ``value``, the parameters and (with ``grads``) the gradients
        are finite: one reduction, one synchronization.  Keeps the parameters if so.

        Call it within the backend's ``quiet()`` (NumPy warns when the sum overflows).
        """
        finite, flat = all_finite(self.backend, value, self.params, grads=grads)
        if bool(finite):
            self.kept = flat
            return True
        return False

    def check_parameters(self) -> bool:
        """Whether every parameter is finite (before training, and after the last step
        of each epoch)."""
        with self.backend.quiet():
            return self.check(None, grads=False)

    def diverged(
        self, value: Array | None, norm: float | None, *, epoch: int, batch: int
    ) -> TrainingDivergedError:
        """The error for a failed check (slow path), at ``batch`` of ``epoch`` (both
        counted from 1).

        ``value`` is the batch's loss, or ``None`` for the check after an epoch's last
        step (``batch`` is then that step's).  ``norm`` is the total gradient norm that
        clipping returned, or ``None`` without clipping (clipping a non-finite norm has
        already overwritten the gradients).  The data are finite (:func:`fit` checked
        them before the first epoch); parameters that are not finite come from the step
        before the check, and get their kept values back.
        """
        bad = self._non_finite()
        if bad or value is None or not self._sum_finite():
            return self._parameters_diverged(bad, epoch, batch if value is None else batch - 1)
        xp = self.backend.xp
        grads_bad = (
            []
            if norm is not None
            else [
                n
                for n, p in self.named
                if p.grad is not None and not bool(xp.all(xp.isfinite(p.grad)))
            ]
        )
        if not bool(xp.isfinite(value)):
            quantity, shown = "loss", f"the loss is {float(value)}"
        elif norm is not None:
            quantity, shown = "gradients", f"the total norm of the gradients is {norm}"
        elif grads_bad:
            quantity = f"gradient of {grads_bad[0]!r}"
            shown = f"the gradient of parameter {grads_bad[0]!r} is not finite"
        else:
            quantity = "gradients"
            shown = "the gradients are so large that their sum overflows"
        msg = (
            f"{self._where(epoch, batch)}{shown}. The optimizer step was skipped, so the "
            "parameters hold their values from before this batch. Lower the learning "
            "rate, clip gradients with clip_grad_norm=..., or scale the inputs."
        )
        return TrainingDivergedError(msg, epoch=epoch, batch=batch, quantity=quantity)

    def _parameters_diverged(self, bad: list[str], epoch: int, step: int) -> TrainingDivergedError:
        """Put the kept parameters back; the error for the step of batch ``step``
        (``0``: no step since the parameters were last found finite)."""
        self._restore()
        if bad:
            quantity = f"parameter {bad[0]!r}" if len(bad) == 1 else "parameters"
            what = f"{_first_few(bad)} {'is' if len(bad) == 1 else 'are'} not finite"
        else:
            quantity, what = "parameters", "the parameters are so large that their sum overflows"
        if step == 0:  # not a step: a callback, between two epochs
            step, when, done = 1, "before this batch", "from before this batch"
        else:
            when = "after the optimizer step of this batch"
            done = (
                "from before that step (the optimizer's state, its moments and step "
                "counts, still includes it)"
            )
        msg = (
            f"{self._where(epoch, step)}{what} {when}. The parameters were put back to "
            f"their values {done}. Lower the learning rate, clip gradients with "
            "clip_grad_norm=..., or scale the inputs."
        )
        return TrainingDivergedError(msg, epoch=epoch, batch=step, quantity=quantity)

    def _where(self, epoch: int, batch: int) -> str:
        return (
            f"training diverged at epoch {epoch} of {self.epochs}, batch {batch} of "
            f"{self.batches} (both counted from 1): "
        )

    def _non_finite(self) -> list[str]:
        xp = self.backend.xp
        return [n for n, p in self.named if not bool(xp.all(xp.isfinite(p.data)))]

    def _sum_finite(self) -> bool:
        """Whether the parameters' sum is finite."""
        with self.backend.quiet():
            finite, _ = all_finite(self.backend, None, self.params, grads=False)
            return bool(finite)

    def _restore(self) -> None:
        """Put the kept values back into the parameters (as new arrays), and drop the
        gradients, computed from values that are gone."""
        xp, kept = self.backend.xp, self.kept
        assert kept is not None  # the check before training kept the first values
        start = 0
        for p in self.params:
            shape, dtype = tuple(p.data.shape), p.data.dtype
            stop = start + math.prod(shape)
            p.data = xp.astype(xp.reshape(kept[start:stop], shape), dtype, copy=True)
            p.grad = None
            start = stop


def _first_few(names: list[str]) -> str:
    """``names`` quoted, the first few of them, and how many more there are."""
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"parameter{'s' if len(names) > 1 else ''} {shown}{more}"
