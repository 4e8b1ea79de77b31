"""Mixed precision: compute in bfloat16 or float16, keep float32 master weights.

:class:`MixedPrecision` wraps a float32 model.  The model's own parameters are the
master weights: the optimizer built on ``model.parameters()`` updates them, and
:func:`portprop.save` writes them, unchanged.  A low-precision *working copy* of the
model (a deep copy cast with :meth:`Module.to`) runs the forward and backward passes;
its gradients come back to the masters' ``grad`` in float32, and after each optimizer
step the working copy is cast again from the masters.

One training step, by hand::

    mp = pp.MixedPrecision(model, precision="fp16")   # loss_scale="dynamic" for fp16
    out = mp.forward(Xb)                # low-precision forward; float32 output
    value = loss.forward(out, yb)       # the loss runs in float32
    model.zero_grad()
    mp.backward(loss.backward())        # scaled low-precision backward; float32 grads
    stepped = mp.step(optimizer)        # False when an overflow skipped the step

Where float32 holds and where it does not
------------------------------------------
- The loss, its reduction over the batch and its gradient are float32: the working
  copy's output is cast up before the loss, and the loss's gradient is multiplied by
  the loss scale and cast down before the working copy's backward (as torch's autocast
  runs softmax and cross-entropy in float32).
- The optimizer's arithmetic, its state (moments) and the parameters it updates are
  float32; so is the unscaling of the gradients, which are cast up first.
- Inside the working copy every array is low precision: the matrix products accumulate
  as the library does (torch and JAX on CPU, and cuBLAS, accumulate bfloat16 and
  float16 products in float32 and round the result; NumPy has no float16 BLAS and
  accumulates in float16), and the sums over the batch of the bias gradients and of
  :class:`~portprop.LayerNorm` are rounded to the low precision at the end, or on the
  way, as the library's ``sum`` does.

Loss scaling
------------
float16 has 5 exponent bits: gradients below about ``6e-8`` vanish.  Multiplying the
loss (in practice its gradient) by a scale ``S`` lifts them into range; the float32
gradients are divided by ``S`` again.  ``loss_scale="dynamic"`` (the default for
``"fp16"``) follows the defaults that ``torch.amp.GradScaler`` documents: ``S`` starts
at ``2**16``; a backward whose scaled gradients are not finite skips the optimizer step
and halves ``S``; ``2000`` steps in a row without one double it.  bfloat16 has float32's
exponent range and needs no scale (the default ``None``, a scale of 1).  A fixed number
scales and unscales only: non-finite gradients are then left to the caller (``fit``'s
divergence check).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from portprop.backend import dtype_name
from portprop.module import Module
from portprop.training.validation import check_model, number, positive_int

__all__ = ["PRECISIONS", "MixedPrecision", "for_fit"]

Array = Any

# The ``precision`` argument: the dtype the working copy computes in.
PRECISIONS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

# torch.amp.GradScaler's documented defaults.
_INIT_SCALE = 2.0**16
_GROWTH_FACTOR = 2.0
_BACKOFF_FACTOR = 0.5
_GROWTH_INTERVAL = 2000


def _positive_float(value: Any, argname: str, *, above_one: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``> 1`` with ``above_one``), or a clear error."""
    bound = 1.0 if above_one else 0.0
    result = number(value, argname)
    if not math.isfinite(result) or result <= bound:
        msg = f"{argname} must be a finite number > {bound:g}, got {value!r}"
        raise ValueError(msg)
    return result


def _check_state(state: Any) -> dict[str, Any]:
    """The checked values of a scaler state dict (see :meth:`MixedPrecision.state_dict`)."""
    if not isinstance(state, Mapping):
        msg = f"state_dict must be a mapping, got {type(state).__name__}"
        raise TypeError(msg)
    missing = [
        k for k in ("scale", "growth_factor", "backoff_factor", "growth_interval") if k not in state
    ]
    if missing:
        msg = f"state_dict must have the keys of a loss scaler, missing {missing}"
        raise KeyError(msg)
    backoff = _positive_float(state["backoff_factor"], "state_dict['backoff_factor']")
    if backoff >= 1.0:
        msg = f"state_dict['backoff_factor'] must be in (0, 1), got {backoff!r}"
        raise ValueError(msg)
    return {
        "scale": _positive_float(state["scale"], "state_dict['scale']"),
        "growth_factor": _positive_float(
            state["growth_factor"], "state_dict['growth_factor']", above_one=True
        ),
        "backoff_factor": backoff,
        "growth_interval": positive_int(state["growth_interval"], "state_dict['growth_interval']"),
        "_growth_tracker": positive_int(
            state.get("_growth_tracker", 0), "state_dict['_growth_tracker']", low=0
        ),
        "skipped_steps": positive_int(
            state.get("skipped_steps", 0), "state_dict['skipped_steps']", low=0
        ),
    }


class MixedPrecision:
    """Train a float32 model in bfloat16 or float16, with float32 master weights.

    Parameters
    ----------
    model : Module
        A float32 model.  Its parameters are the master weights; it is not modified
        (other than its gradients, which :meth:`backward` sets).
    precision : {"bf16", "fp16", "fp32"}
        The dtype of the working copy: bfloat16, float16, or float32 (no copy: every
        method calls the model's own).
    loss_scale : "auto", "dynamic", float or None, optional
        ``"auto"`` (default): ``"dynamic"`` for ``"fp16"``, ``None`` otherwise;
        ``"dynamic"``: dynamic loss scaling; a number: a fixed scale; ``None``: no
        scaling.
    init_scale, growth_factor, backoff_factor, growth_interval
        Dynamic loss scaling (torch.amp.GradScaler's parameters and defaults): the first
        scale, what multiplies it after ``growth_interval`` steps in a row without an
        overflow, and what multiplies it on an overflow.

    Raises
    ------
    DtypeUnsupportedError
        If the model's backend has no such dtype (NumPy has no bfloat16, array-api-strict
        has neither); the message names those it has.
    TypeError, ValueError
        For any other bad argument, named in the message.

    Notes
    -----
    After :meth:`step`, the working copy holds the masters cast down.  Where the masters
    are replaced by new arrays (:meth:`Module.load_state_dict`, JAX's optimizer steps,
    ``fit`` putting finite values back) :meth:`forward` notices and casts again; an
    update *in place* outside :meth:`step` needs :meth:`refresh`.  The working copy
    follows the model's training mode.  Modules with random state (:class:`Dropout`)
    draw from the working copy's generator, a copy of the model's.
    """

    def __init__(
        self,
        model: Module,
        precision: str = "bf16",
        loss_scale: str | float | None = "auto",
        *,
        init_scale: float = _INIT_SCALE,
        growth_factor: float = _GROWTH_FACTOR,
        backoff_factor: float = _BACKOFF_FACTOR,
        growth_interval: int = _GROWTH_INTERVAL,
    ) -> None:
        check_model(model)
        if precision not in PRECISIONS:
            msg = f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
            raise ValueError(msg)
        if dtype_name(model.dtype) != "float32":
            msg = (
                f"model must be float32 (its parameters are the float32 master weights), "
                f"got a {dtype_name(model.dtype)} model; move it with model.to(dtype='float32')"
            )
            raise TypeError(msg)
        low_name = PRECISIONS[precision]
        low = model.backend.float_dtype(low_name)  # DtypeUnsupportedError where absent
        if isinstance(loss_scale, str) and loss_scale == "auto":
            loss_scale = "dynamic" if precision == "fp16" else None
        dynamic = isinstance(loss_scale, str)
        if dynamic and loss_scale != "dynamic":
            msg = f"loss_scale must be 'dynamic', a number > 0 or None, got {loss_scale!r}"
            raise ValueError(msg)
        scale = 1.0
        if loss_scale is not None and not dynamic:
            scale = _positive_float(loss_scale, "loss_scale")
        if precision == "fp32" and (dynamic or scale != 1.0):
            msg = f"loss_scale must be None with precision='fp32', got {loss_scale!r}"
            raise ValueError(msg)
        state = _check_state(
            {
                "scale": _positive_float(init_scale, "init_scale") if dynamic else scale,
                "growth_factor": growth_factor,
                "backoff_factor": backoff_factor,
                "growth_interval": growth_interval,
            }
        )
        self.model = model
        self.precision = precision
        self.dynamic = dynamic
        self._low = low
        self._set_state(state)
        self.overflowed = False  # a backward since the last step had non-finite gradients
        self._work: Module | None = None
        self._seen: list[Array] = []  # the master arrays the working copy was cast from
        if precision != "fp32":
            self._build()

    # ---- the state of the scaler --------------------------------------------------------

    @property
    def scale(self) -> float:
        """The current loss scale (1.0 without scaling)."""
        return self._scale

    @property
    def skipped_steps(self) -> int:
        """How many :meth:`step` calls an overflow skipped."""
        return self._skipped

    @property
    def working_copy(self) -> Module | None:
        """The low-precision copy that computes (``None`` with ``precision="fp32"``)."""
        return self._work

    def logs(self) -> dict[str, float]:
        """``{"loss_scale": ..., "skipped_steps": ...}``, for a training history."""
        return {"loss_scale": self._scale, "skipped_steps": float(self._skipped)}

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state, with torch.amp.GradScaler's keys (``scale``,
        ``growth_factor``, ``backoff_factor``, ``growth_interval``, ``_growth_tracker``)
        and ``skipped_steps``."""
        return {
            "scale": self._scale,
            "growth_factor": self._growth,
            "backoff_factor": self._backoff,
            "growth_interval": self._interval,
            "_growth_tracker": self._tracker,
            "skipped_steps": self._skipped,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, or from ``torch.amp.GradScaler``'s (whose
        scale may be a number or a one-element tensor: pass ``float(...)`` of it).  Every
        value is checked first; on an error nothing changes."""
        self._set_state(_check_state(state_dict))

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._scale = float(state["scale"])
        self._growth = float(state["growth_factor"])
        self._backoff = float(state["backoff_factor"])
        self._interval = int(state["growth_interval"])
        self._tracker = int(state["_growth_tracker"])
        self._skipped = int(state["skipped_steps"])

    # ---- the working copy -----------------------------------------------------------

    def _build(self) -> None:
        """A new working copy: the model deep-copied, cast down."""
        work = copy.deepcopy(self.model)
        work.zero_grad()
        self._work = work.to(dtype=dtype_name(self._low))
        self._seen = [p.data for p in self.model.parameters()]

    def refresh(self) -> None:
        """Cast the master weights into the working copy again (done by :meth:`step`)."""
        work = self._work
        if work is None:
            return
        if work.backend != self.model.backend:  # the model moved
            self._build()
            return
        xp, low = work.backend.xp, self._low
        masters = self.model.parameters()
        with work.backend.scope():
            for m, w in zip(masters, work.parameters(), strict=True):
                w.data = xp.astype(m.data, low)
        self._seen = [m.data for m in masters]

    def _current(self) -> Module:
        """The working copy, cast again where a master array was replaced."""
        work = self._work
        assert work is not None
        masters = self.model.parameters()
        if len(masters) != len(self._seen) or any(
            m.data is not s for m, s in zip(masters, self._seen, strict=True)
        ):
            self.refresh()
            work = self._work
            assert work is not None
        if work.training != self.model.training:
            work.train(self.model.training)
        return work

    # ---- one step -------------------------------------------------------------------

    def forward(self, X: Array) -> Array:
        """The model's output for the batch ``X`` (float32, of the model's backend),
        computed by the working copy in the low precision; returned in float32."""
        if self._work is None:
            return self.model.forward(X)
        self.model._check_input(X, "X")  # the model's checks and messages
        work = self._current()
        xp = work.backend.xp
        out = work.forward(xp.astype(X, self._low))
        if work.training:  # running statistics (BatchNorm1d) go back to the model
            model = self.model
            for name, value in work.named_buffers():
                floating = xp.isdtype(value.dtype, "real floating")
                model._set_buffer(name, xp.astype(value, model.dtype) if floating else value)
        return xp.astype(out, self.model.dtype)

    def backward(self, grad_output: Array) -> None:
        """Back-propagate the loss's float32 gradient ``grad_output`` through the
        working copy (scaled, in the low precision) and *add* the unscaled float32
        parameter gradients into the master weights' ``grad``, as
        :meth:`Module.backward` does.

        With dynamic scaling, scaled gradients that are not finite set
        :attr:`overflowed` and the masters' gradients to ``None`` instead (one
        host-device synchronization per call): the next :meth:`step` is skipped.
        """
        if self._work is None:
            self.model.backward(grad_output, input_grad=False)
            return
        model, work = self.model, self._work
        if self.overflowed:  # this step is skipped already
            return
        model._check_input(grad_output, "grad_output", grad=True)
        backend, xp = work.backend, work.backend.xp
        scale = self._scale
        with backend.quiet():  # overflow is what the check below looks for
            scaled = grad_output * scale if scale != 1.0 else grad_output
            work.zero_grad()
            work.backward(xp.astype(scaled, self._low), input_grad=False)
            inverse = 1.0 / scale
            grads = []
            for w in work.parameters():
                g = None if w.grad is None else xp.astype(w.grad, model.dtype)
                if g is not None and scale != 1.0:
                    g = g * inverse
                grads.append(g)
            if self.dynamic and not self._finite(grads):
                self.overflowed = True
                model.zero_grad()
                return
        for m, g in zip(model.parameters(), grads, strict=True):
            if g is not None:
                m.accumulate(g)

    def _finite(self, grads: list[Array | None]) -> bool:
        """Whether every gradient is finite: one sum each, one synchronization."""
        backend = self.model.backend
        total = None
        for g in grads:
            if g is not None:
                s = backend.sum(g)
                total = s if total is None else total + s
        return total is None or bool(backend.xp.isfinite(total))

    def step(self, optimizer: Any) -> bool:
        """Step ``optimizer`` (built on the model's parameters), update the loss scale and
        cast the working copy again; return ``False``, without stepping, when a backward
        since the last step overflowed (dynamic scaling)."""
        if self._work is None:
            optimizer.step()
            return True
        if self.overflowed:
            self.overflowed = False
            self._skipped += 1
            self._scale *= self._backoff
            self._tracker = 0
            return False
        optimizer.step()
        if self.dynamic:
            self._tracker += 1
            if self._tracker >= self._interval:
                self._scale *= self._growth
                self._tracker = 0
        self.refresh()
        return True

    def __repr__(self) -> str:
        scaling = "dynamic" if self.dynamic else self._scale
        return f"MixedPrecision(precision={self.precision!r}, loss_scale={scaling!r})"


def for_fit(model: Module, precision: Any) -> MixedPrecision | None:
    """The :class:`MixedPrecision` that ``fit(..., precision=...)`` trains with, or
    ``None`` for ``precision=None`` or ``"fp32"`` (fit's own float32 path).

    Divergence: with ``"fp16"`` (dynamic scaling) an overflow of the scaled gradients
    skips the step and leaves the masters' gradients ``None``, so fit's divergence check
    passes and :meth:`MixedPrecision.step` skips; a loss that is not finite (a forward
    that overflowed), or non-finite gradients under ``"bf16"`` (no scaling), reach the
    check and raise :class:`~portprop.TrainingDivergedError`.
    """
    if precision is None or precision == "fp32":
        return None
    if not isinstance(precision, str) or precision not in PRECISIONS:
        msg = f"precision must be None or one of {sorted(PRECISIONS)}, got {precision!r}"
        raise ValueError(msg)
    return MixedPrecision(model, precision)
