"""A compiled training step: forward, loss, backward and the optimizer's update traced
into one program by the array library's compiler (issue 13).

:func:`compile_step` runs the *same* functions as the eager step, ``Module._forward``
and ``_backward``, the loss's ``_forward`` and ``_backward`` and the optimizer's
``_apply``: every formula stays in :mod:`portprop.functional`, and compiling writes none
of them again.

How each library compiles
-------------------------
- **JAX**: ``jax.jit`` of a *functionalized* step.  The program takes the parameters,
  the optimizer's buffers and step counts and the dropout keys as arguments (their
  buffers donated, so XLA updates them in place), puts traced values where the eager
  code reads them (``Parameter.data``, the optimizer's state, ``Dropout``'s key), runs
  the eager code, collects the new values and returns them; the host then writes them
  back into the model, the optimizer and the generators.  The learning rate is an
  argument too: a schedule changes it without a new trace.  A new batch shape (the last,
  smaller batch) or a switch between training and evaluation mode traces once more; the
  programs are kept.
- **torch**: ``torch.compile`` of the forward and backward pass (with inductor where
  it can build its kernels: a C++ compiler on the CPU, Triton on CUDA; else
  ``backend="aot_eager"``), then the optimizer's own multi-tensor update in place.  The
  update stays out of the program: its step counts are Python integers, on which
  ``torch.compile`` specializes and would compile again at every step.  On a CPU,
  compiling costs tens of seconds, and it pays only for large layers (measured in the
  report of issue 13): ``fit`` compiles on torch only when asked (``compile=True``).
- **NumPy, CuPy, array-api-strict**: no compiler.  As Keras does with
  ``jit_compile="auto"``, the step runs eagerly by default (``compiled`` is ``False``
  and ``how`` says why); ``fallback="raise"`` raises :class:`CompileUnsupportedError`
  instead.  A step that cannot be traced (a formula that reads a value on the host)
  falls back, or raises, the same way, and leaves the model and the optimizer as they
  were.

Divergence
----------
Inside the program, ``finite`` says whether the loss, the gradients, the parameters
before and after the update are finite; every new value is ``where(finite, new, old)``,
and once a step is not finite the program keeps the old values until the host looks:
no non-finite update is ever kept.  The host reads that flag every ``check_every`` steps
(one synchronization) and raises :func:`fit`'s :class:`TrainingDivergedError`, naming
the first step that was not finite; the parameters and the optimizer's state hold their
values from before that step.  The eager path (and torch, whose program updates in
place) checks every step, before the update, as :func:`fit` does.

Randomness
----------
:class:`~portprop.Dropout` draws its masks with the layer's own generator.  On JAX the
key is carried through the program (taken in, split as the eager code splits it, given
back), so a compiled step draws exactly the masks the eager step draws.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from portprop.backend import Backend
from portprop.errors import CompileUnsupportedError, TrainingDivergedError
from portprop.module import Module, Parameter
from portprop.optim import Optimizer
from portprop.training.divergence import LastFinite, all_finite

__all__ = ["CompiledStep", "compile_step", "step_for_fit"]

Array = Any
_FALLBACKS = ("eager", "raise")


def compile_step(
    model: Module,
    loss: Any,
    optimizer: Optimizer,
    *,
    fallback: str = "eager",
    check_every: int = 1,
) -> CompiledStep:
    """One training step of ``model`` on ``loss`` with ``optimizer``, compiled by the
    model's array library into one program.

    ``step(X, y)`` does what the eager loop does (forward, loss, zero the gradients,
    backward, the optimizer's update) and returns the loss, a 0-d array on the device.
    The gradients are not kept after the update (``param.grad`` is ``None``); on JAX
    the arrays a step replaced are donated to the program: read ``param.data`` afresh
    after each step rather than keep an earlier array.

    Parameters
    ----------
    model : Module
        Its backend decides the compiler: ``jax.jit`` on JAX, ``torch.compile`` on torch.
    loss : Loss
    optimizer : Optimizer
        Over ``model``'s parameters.  Its hyperparameters other than ``lr`` are read
        when a program is traced; ``lr`` is read at every step.
    fallback : {"eager", "raise"}
        What to do where the library cannot compile (NumPy, CuPy, array-api-strict) or
        the step cannot be traced: run the same step eagerly, or raise
        :class:`CompileUnsupportedError`.
    check_every : int
        How many steps the host lets pass before it reads whether they were finite
        (JAX; every step elsewhere).  A non-finite step is never kept either way.

    Returns
    -------
    CompiledStep

    Raises
    ------
    CompileUnsupportedError
        With ``fallback="raise"``, where the library has no compiler.

    Examples
    --------
    >>> import portprop as pp
    >>> model = pp.Sequential(pp.Linear(2, 8), pp.Tanh(), pp.Linear(8, 1))
    >>> step = pp.compile_step(model, pp.MSELoss(), pp.SGD(model.parameters(), lr=0.1))
    >>> X = pp.asarray([[0.0, 1.0], [1.0, 0.0]], dtype="float32")
    >>> value = step(X, pp.asarray([[1.0], [0.0]], dtype="float32"))
    >>> step.compiled  # NumPy has no compiler: the same step, run eagerly
    False
    """
    return CompiledStep(model, loss, optimizer, fallback=fallback, check_every=check_every)


class _Pred:
    """What the loss's host checks read of a prediction: its shape, rank and dtype."""

    def __init__(self, shape: tuple[int, int], dtype: Any) -> None:
        self.shape, self.ndim, self.dtype = shape, 2, dtype


class CompiledStep:
    """A training step compiled by the model's library (see :func:`compile_step`).

    Attributes
    ----------
    compiled : bool
        Whether a compiler runs the step (``False``: the eager fallback).
    how : str
        The compiler (``"jax.jit"``), or why the step runs eagerly.
    output : array or None
        The model's output of the last step (for metrics such as accuracy).
    """

    def __init__(
        self,
        model: Module,
        loss: Any,
        optimizer: Optimizer,
        *,
        fallback: str = "eager",
        check_every: int = 1,
    ) -> None:
        if not isinstance(model, Module):
            msg = f"model must be a portprop Module, got {type(model).__name__}"
            raise TypeError(msg)
        if not isinstance(optimizer, Optimizer):
            msg = f"optimizer must be a portprop Optimizer, got {type(optimizer).__name__}"
            raise TypeError(msg)
        if not callable(getattr(loss, "_forward", None)):
            msg = f"loss must be a portprop loss, got {type(loss).__name__}"
            raise TypeError(msg)
        if fallback not in _FALLBACKS:
            msg = f"fallback must be one of {_FALLBACKS}, got {fallback!r}"
            raise ValueError(msg)
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            msg = f"check_every must be an int >= 1, got {check_every!r}"
            raise ValueError(msg)
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.backend: Backend = model.backend
        self.params: list[Parameter] = model.parameters()
        ids = {id(p) for p in optimizer.params}
        if [id(p) for p in self.params if id(p) in ids] != [id(p) for p in optimizer.params]:
            msg = (
                "optimizer must update the model's parameters, in the model's order: build "
                "it with optimizer = SGD(model.parameters(), ...)"
            )
            raise ValueError(msg)
        self.fallback, self.check_every = fallback, check_every
        self.output: Array | None = None
        self.epoch, self.batch = 1, 0  # where the last step was, both counted from 1
        self._n_out = model._n_out()
        self._programs: dict[Any, Any] = {}
        self._traced: set[Any] = set()  # (program, shapes and dtypes) traced without error
        self._warned = False
        self._last_finite: LastFinite | None = None
        functional = not self.backend.writable  # JAX: new arrays replace the old ones
        program = self._program if functional else self._forward_backward
        compiled, how = self.backend.compile(program, donate=(1,) if functional else ())
        if compiled is not None and self._n_out is None:
            compiled, how = None, "the model does not say how many outputs it gives"
        if compiled is not None and functional and any(True for _ in model.named_buffers()):
            compiled, how = None, "the program does not carry buffers (running statistics)"
        if compiled is None:
            if fallback == "raise":
                msg = f"cannot compile a step on backend {self.backend.name!r}: {how}"
                raise CompileUnsupportedError(msg)
            how = f"eager: {how}"
        self.compiled, self.how = compiled is not None, how
        self._jit = functional and compiled is not None
        # torch: forward and backward compiled; the update runs the optimizer's own
        # multi-tensor kernels (its step counts are Python ints, which torch.compile
        # would specialize on, compiling again at every step)
        self._torch_forward_backward = None if functional else compiled
        # JAX: the device flags of the steps the host has not read, and whether the
        # program still updates (False once a step was not finite, until the host reads).
        self._pending: list[tuple[Array, Array, int, int]] = []
        self._ok: Array | None = None
        self._counts: list[Array] = []
        self._host_counts: list[int] = []
        self._lr: tuple[float, Array] | None = None

    # ---- the step -----------------------------------------------------------------------

    def __call__(self, X: Array, y: Array) -> Array:
        """One step on the batch ``X`` (``(batch, in_features)``) with targets ``y``;
        returns the loss, a 0-d array on the model's device.

        Raises
        ------
        TrainingDivergedError
            When the host finds a step whose loss, gradients or new parameters were not
            finite; that step and every one after it were not applied.
        """
        self.check_data(X, y)
        return self.run(X, y)

    def run(self, X: Array, y: Array) -> Array:
        """:meth:`__call__` without the host checks of ``X`` and ``y``, for batches of
        data that :meth:`check_data` checked whole (as :func:`fit` does)."""
        self.batch += 1
        if self._jit and self._ready():
            return self._jit_step(X, y)
        return self._eager_step(X, y)

    def begin_epoch(self, epoch: int) -> None:
        """Count the following steps from batch 1 of ``epoch`` (counted from 1) in the
        errors (:func:`fit` calls it)."""
        self.epoch, self.batch = epoch, 0

    def check(self) -> None:
        """Read whether the steps since the last check were finite (one synchronization).

        Raises
        ------
        TrainingDivergedError
            For the first step that was not finite; it and the steps after it were not
            applied, so the parameters and the optimizer's state hold their values from
            before it.
        """
        pending, self._pending = self._pending, []
        if not pending or bool(pending[-1][0]):
            return
        first = next(i for i, entry in enumerate(pending) if not bool(entry[0]))
        _, value, epoch, batch = pending[first]
        skipped = len(pending) - first
        steps = (
            "That step was" if skipped == 1 else f"That step and the {skipped - 1} after it were"
        )
        for state in self.optimizer.state:
            state["step"] = state.get("step", 0) - skipped
        self._host_counts = [n - skipped for n in self._host_counts]
        self._ok = None  # the next step updates again
        for p in self.params:
            p.grad = None
        xp = self.backend.xp
        if not bool(xp.isfinite(value)):
            quantity, shown = "loss", f"the loss is {float(value)}"
        else:
            quantity, shown = (
                "gradients",
                "a gradient, or a parameter after the update, is not finite",
            )
        msg = (
            f"training diverged at epoch {epoch}, batch {batch} (both counted from 1): {shown}. "
            f"{steps} not applied, so the parameters and the optimizer's state hold their "
            "values from before it. Lower the learning rate, or scale the inputs."
        )
        raise TrainingDivergedError(msg, epoch=epoch, batch=batch, quantity=quantity)

    # ---- host checks ---------------------------------------------------------------------

    def check_data(self, X: Array, y: Array) -> None:
        """The checks of the eager ``forward`` and ``loss.forward``, on the host, before
        the program: backends, dtypes, shapes, labels in range (a few synchronizations).

        Raises
        ------
        MixedBackendError, MixedDeviceError, TypeError, ValueError
            As ``model.forward(X)`` and ``loss.forward(model.forward(X), y)`` would.
        """
        self.model._check_input(X, "X")
        self.backend.check(y, "y")
        n_out = self._n_out if self._n_out is not None else 1
        self.loss._check_target(self.backend.xp, _Pred((X.shape[0], n_out), self.model.dtype), y)

    # ---- the eager step (NumPy, CuPy, array-api-strict; torch through torch.compile) ----

    def _forward_backward(self, X: Array, y: Array) -> tuple[Array, Array]:
        """Forward, loss and backward, as the eager loop runs them: ``(loss, output)``."""
        model, loss, backend = self.model, self.loss, self.backend
        loss._backend = backend
        out = model._forward(X)
        value = loss._forward(backend.xp, out, y)
        model.zero_grad()
        model._backward(loss._backward(), False)
        return value, out

    def _eager_step(self, X: Array, y: Array) -> Array:
        backend = self.backend
        if self._last_finite is None:
            with backend.scope():
                self._last_finite = _StepFinite(self.model, epochs=1, batches=0)
        forward_backward = self._torch_forward_backward or self._forward_backward
        with backend.quiet(), backend.scope():
            try:
                value, out = forward_backward(X, y)
            except Exception as exc:
                if forward_backward is self._forward_backward:
                    raise
                self._give_up(exc, f"{self.how} failed")
                value, out = self._forward_backward(X, y)
            self.output = out
            # fit's check: the loss, the gradients, and the parameters the last update
            # left (put back from the copy it keeps if they are not finite)
            last = self._last_finite
            if not last.check(value):
                raise last.diverged(value, None, epoch=self.epoch, batch=self.batch)
            self.optimizer.step()
        for p in self.params:  # used: released before the next step, not beside it
            p.grad = None
        return value

    def _give_up(self, exc: Exception, what: str) -> None:
        """Run eagerly from now on, because of ``exc`` (``what`` failed), and say so
        once; or raise :class:`CompileUnsupportedError` with ``fallback="raise"``."""
        self._torch_forward_backward, self._jit, self.compiled = None, False, False
        self.how = f"eager: {what} ({type(exc).__name__}: {exc})"
        if self.fallback == "raise":
            msg = f"cannot compile a step on backend {self.backend.name!r}: {what}: {exc}"
            raise CompileUnsupportedError(msg) from exc
        if not self._warned:
            self._warned = True
            warnings.warn(f"portprop.compile_step: {self.how}", RuntimeWarning, stacklevel=5)

    def _pairs(self) -> Iterator[tuple[Parameter, dict[str, Any]]]:
        return zip(self.optimizer.params, self.optimizer.state, strict=True)

    # ---- the functional step (JAX) ----------------------------------------------------------

    def _ready(self) -> bool:
        """Whether the optimizer has the state of a first step (its buffers exist): the
        first step runs eagerly, so that the program always sees the same state."""
        return all(state.get("data") is p.data for p, state in self._pairs())

    def _buffer_names(self) -> tuple[tuple[str, ...], ...]:
        return tuple(
            tuple(k for k in self.optimizer._BUFFERS if state.get(k) is not None)
            for state in self.optimizer.state
        )

    def _generators(self) -> list[Any]:
        found = []
        for module in self.model.modules():
            generator = vars(module).get("_generator")
            if generator is not None and module.training:
                found.append(module.generator)  # type: ignore[attr-defined]
        return found

    def _jit_step(self, X: Array, y: Array) -> Array:
        backend, xp, optimizer = self.backend, self.backend.xp, self.optimizer
        generators = self._generators()
        if any(not hasattr(g, "device_state") for g in generators):
            return self._eager_step(X, y)
        hosts = [state.get("step", 0) for state in optimizer.state]
        if hosts != self._host_counts:  # a first step, or the optimizer stepped eagerly
            self._counts = [
                xp.asarray(n, dtype=self.model.dtype, device=backend.device) for n in hosts
            ]
        if self._lr is None or self._lr[0] != optimizer.lr:
            lr = optimizer.lr
            self._lr = (lr, xp.asarray(lr, dtype=self.model.dtype, device=backend.device))
        if self._ok is None:
            self._ok = xp.asarray(True, dtype=xp.bool, device=backend.device)
        names = self._buffer_names()
        carry = (
            [p.data for p in self.params],
            [[state[k] for k in keys] for state, keys in zip(optimizer.state, names, strict=True)],
            self._counts,
            [g.device_state() for g in generators],
        )
        key = (names, tuple(m.training for m in self.model.modules()), _loss_key(self.loss))
        program: Any = self._programs.get(key)
        if program is None:
            program, _ = backend.compile(functools.partial(self._program, names), donate=(0,))
            self._programs[key] = program
        signature = (key, X.shape, X.dtype, y.shape, y.dtype)
        try:
            carry, ok, value, out = program(carry, self._ok, X, y, self._lr[1])
        except Exception as exc:
            if signature in self._traced:  # traced before: an error of the data, or memory
                raise
            self._give_up(exc, "the step cannot be traced")
            return self._eager_step(X, y)
        self._traced.add(signature)
        datas, buffers, counts, keys = carry
        for p, w, state, keys_i, values in zip(
            self.params, datas, optimizer.state, names, buffers, strict=True
        ):
            p.data = state["data"] = w
            p.grad = None
            state.update(zip(keys_i, values, strict=True))
            state["step"] = state.get("step", 0) + 1
        for g, k in zip(generators, keys, strict=True):
            g.set_device_state(k)
        self._counts, self._ok, self.output = counts, ok, out
        self._host_counts = [state["step"] for state in optimizer.state]
        self._pending.append((ok, value, self.epoch, self.batch))
        if len(self._pending) >= self.check_every:
            self.check()
        return value

    def _program(
        self,
        names: tuple[tuple[str, ...], ...],
        carry: Any,
        ok: Array,
        X: Array,
        y: Array,
        lr: Array,
    ) -> Any:
        """The functionalized step: new values from old, through the eager code
        (``names``: the optimizer's buffers of each parameter)."""
        datas, buffers, counts, keys = carry
        xp, optimizer = self.backend.xp, self.optimizer
        generators = self._generators()
        with _sandbox(self.model, self.loss, optimizer, generators):
            states = []
            for p, w, state, keys_i, values, n in zip(
                self.params, datas, optimizer.state, names, buffers, counts, strict=True
            ):
                p.data = w
                states.append({**state, **dict(zip(keys_i, values, strict=True)), "step": n})
            for g, k in zip(generators, keys, strict=True):
                g.set_device_state(k)
            optimizer._lr = lr
            value, out = self._forward_backward(X, y)
            finite_before, _ = all_finite(self.backend, value, self.params, grads=True)
            optimizer._apply(self.params, states)
            finite_after, _ = all_finite(self.backend, None, self.params, grads=False)
            keep = ok & finite_before & finite_after
            new_datas = [xp.where(keep, p.data, w) for p, w in zip(self.params, datas, strict=True)]
            new_buffers = [
                [xp.where(keep, state[k], old) for k, old in zip(keys_i, values, strict=True)]
                for state, keys_i, values in zip(states, names, buffers, strict=True)
            ]
            new_counts = [
                xp.where(keep, state["step"], n) for state, n in zip(states, counts, strict=True)
            ]
            new_keys = [g.device_state() for g in generators]
        # ok is not donated: the host keeps the flag of each step until it reads them
        return (new_datas, new_buffers, new_counts, new_keys), keep, value, out


class _StepFinite(LastFinite):
    """:func:`fit`'s check of each step, with errors that name the step."""

    def _where(self, epoch: int, batch: int) -> str:
        return f"training diverged at epoch {epoch}, batch {batch} (both counted from 1): "


def _loss_key(loss: Any) -> Any:
    """What of the loss decides the traced program besides shapes (cross-entropy's path
    with ignored labels)."""
    return getattr(loss, "_has_ignored", None)


@contextmanager
def _sandbox(
    model: Module, loss: Any, optimizer: Optimizer, generators: list[Any]
) -> Iterator[None]:
    """Run the eager code on traced values and leave every object as it was: the
    attributes of the modules, the loss and the optimizer, the parameters' arrays and
    gradients, the generators' keys."""
    objects = [*model.modules(), loss, optimizer]
    saved = [dict(vars(obj)) for obj in objects]
    params = [(p, p.data, p.grad) for p in model.parameters()]
    keys = [(g, g.device_state()) for g in generators]
    try:
        yield
    finally:
        for obj, attributes in zip(objects, saved, strict=True):
            vars(obj).clear()
            vars(obj).update(attributes)
        for p, data, grad in params:
            p.data, p.grad = data, grad
        for g, k in keys:
            g.set_device_state(k)


def step_for_fit(
    model: Module,
    loss: Any,
    optimizer: Optimizer,
    *,
    compile: bool,
    clip: Any,
    distributed: bool = False,
    mixed_precision: bool = False,
) -> CompiledStep | None:
    """The compiled step :func:`fit` runs in place of its eager lines, or ``None``.

    ``compile=True`` compiles wherever the library can (eagerly elsewhere); ``False``
    (fit's default) never.
    Gradient clipping reads the gradients' norm on the host, a ``distributed`` run
    sums gradients across ranks between backward and update, and ``mixed_precision``
    computes in a low-precision working copy of the model: with any of them, the eager
    lines run.
    """
    if not compile or clip is not None or distributed or mixed_precision:
        return None
    return CompiledStep(model, loss, optimizer, check_every=1)
