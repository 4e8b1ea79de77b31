"""The base class of the optimizers, :class:`Optimizer`, and the checks and small
helpers that every optimizer shares (hyperparameters, gradients, moving averages)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from portprop.backend import Backend, backend_of, dtype_name
from portprop.errors import StateDictError
from portprop.module import Parameter

__all__ = ["Optimizer", "moving_average"]

Array = Any

# Per-parameter entries of ``Optimizer.state`` that cache how to compute and what the last
# step checked, not what was learnt: they are rebuilt on demand and never saved.
_CACHE_KEYS = ("backend", "scratch", "dtype", "shape", "data", "writable")


def _hyper(
    value: Any,
    name: str,
    *,
    low: float = 0.0,
    strict: bool = False,
    high: float | None = None,
) -> float:
    """``value`` as a Python float, checked to be finite and ``>= low`` (``> low`` when
    ``strict``) and, when ``high`` is given, ``< high``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        msg = f"{name} must be a number, got {value!r}"
        raise TypeError(msg) from None
    bad = number <= low if strict else number < low
    if high is not None:
        bad = bad or number >= high
    if math.isnan(number) or math.isinf(number) or bad:
        if high is not None:
            bound = f"in {'(' if strict else '['}{low}, {high})"
        else:
            bound = f"> {low}" if strict else f">= {low}"
        msg = f"{name} must be a finite number {bound}, got {value!r}"
        raise ValueError(msg)
    return number


def _betas(value: Any) -> tuple[float, float]:
    try:
        first, second = value
    except (TypeError, ValueError):
        msg = f"betas must be a pair of numbers (beta1, beta2), got {value!r}"
        raise TypeError(msg) from None
    return _hyper(first, "betas[0]", high=1.0), _hyper(second, "betas[1]", high=1.0)


def _count(value: Any) -> int | None:
    """``value`` as an int ``>= 0`` (an integer of any library), or ``None``."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 0 else None


def _check_gradient(backend: Backend, p: Parameter, g: Any, index: int) -> None:
    """Raise unless the gradient ``g`` of ``p`` (``params[index]``) has the library,
    device, dtype and shape of ``p.data``, which lives on ``backend``."""
    name = f"params[{index}].grad"
    backend.check(g, name, owner=f"params[{index}]")
    w = p.data
    if g.dtype != w.dtype:
        msg = (
            f"{name} has dtype {dtype_name(g.dtype)} but params[{index}] has "
            f"{dtype_name(w.dtype)}; a gradient must have its parameter's dtype"
        )
        raise TypeError(msg)
    if tuple(g.shape) != tuple(w.shape):
        msg = (
            f"{name} has shape {tuple(g.shape)} but params[{index}] has shape "
            f"{tuple(w.shape)}; a gradient must have its parameter's shape"
        )
        raise ValueError(msg)


def moving_average(
    backend: Backend, average: Array, beta: float, x: Array, scratch: Array | None
) -> Array:
    r""":math:`a \leftarrow \beta a + (1 - \beta) x`, in ``average`` where the library
    allows it; assign the result back."""
    average *= beta
    return backend.add_scaled(average, 1.0 - beta, x, scratch)


def _with_weight_decay(g: Array, w: Array, weight_decay: float) -> Array:
    r"""The gradient of :math:`\ell + \tfrac{\lambda}{2}\lVert w\rVert^2`:
    :math:`g + \lambda w` (a new array: ``param.grad`` is left alone)."""
    return g if weight_decay == 0.0 else g + weight_decay * w


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state.

    Attributes
    ----------
    params : list of Parameter
    lr : float
        The learning rate; schedules (:mod:`portprop.schedules`) change it between steps.
        Setting it checks it: a number ``>= 0`` that does not overflow the parameters'
        dtype in the optimizer's arithmetic (``ValueError`` otherwise, and ``lr`` keeps
        its value).
    state : list of dict
        Per parameter, in ``params`` order: ``"step"`` (how many updates it received) and
        the optimizer's buffers (``"exp_avg"``, ...), on the parameter's backend and device.

    A subclass lists its constructor's hyperparameters in ``_HYPERPARAMETERS`` (kept as
    attributes of the same names), the arrays it keeps per parameter in ``_BUFFERS``,
    the numbers its update computes with in :meth:`_scalars`, and implements
    :meth:`_update`; :meth:`step`, :meth:`state_dict` and :meth:`load_state_dict` then
    work unchanged.  A subclass whose update a backend can apply to every parameter at
    once names it in ``_MULTI_UPDATE`` (see :meth:`Backend.multi_update`) and calls the
    kernel (:attr:`_kernel`, set at each check of the parameters) from :meth:`_apply`.
    """

    _HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("lr",)
    _BUFFERS: ClassVar[tuple[str, ...]] = ()
    # The optimizer's kind in Backend.multi_update ("sgd", ...), or None: no such kernel.
    _MULTI_UPDATE: ClassVar[str | None] = None

    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params = list(params)
        if not self.params:
            msg = "params must contain at least one Parameter, got an empty list"
            raise ValueError(msg)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                msg = f"params[{i}] must be a portprop Parameter, got {type(p).__name__}"
                raise TypeError(msg)
        self.state: list[dict[str, Array]] = [{} for _ in self.params]
        # The largest value of the parameters' narrowest dtype, that dtype's name and the
        # index of a parameter that has it; None until the dtypes are known.
        self._limit: tuple[float, str, int] | None = None
        # The backend's kernel that updates every parameter at once (when they all live
        # on one backend that has one for this optimizer), that backend, and the small
        # buffers the kernel keeps between steps; set by each check of the parameters.
        self._kernel: Callable[..., Any] | None = None
        self._kernel_backend: Backend | None = None
        self._work: dict[Any, Any] = {}

    # ---- the learning rate, and the numbers the update computes with ------------------

    @property
    def lr(self) -> float:
        """The learning rate (see the class notes)."""
        return self._lr

    @lr.setter
    def lr(self, value: Any) -> None:
        self._lr = self._checked_lr(value)

    def _checked_lr(self, value: Any) -> float:
        """``value`` as a learning rate: a finite number ``>= 0`` (a schedule may warm up
        from 0) that overflows none of the numbers the update computes with."""
        lr = _hyper(value, "lr")
        if self._limit is not None:
            self._check_scalars(self._limit, lr)
        return lr

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        """The numbers the update multiplies or shifts arrays by, with learning rate
        ``lr``: ``(hyperparameter, its value, expression, value of the expression)``."""
        return [("lr", lr, "lr", lr)]

    def _check_scalars(self, limit: tuple[float, str, int], lr: float) -> None:
        """Raise ``ValueError`` if a number of :meth:`_scalars` does not fit the dtype
        of ``limit`` (it would make every parameter infinite, or make torch raise)."""
        top, dtype, index = limit
        for name, given, expression, value in self._scalars(lr):
            if not abs(value) <= top:  # NaN and infinities included
                if expression == name:
                    detail = f"expected {name} <= {top!r} (the largest {dtype}), got {value!r}"
                else:
                    detail = (
                        f"{type(self).__name__} computes {expression} = {value:.6g}, expected "
                        f"<= {top!r} (the largest {dtype})"
                    )
                msg = f"{name}={given!r} overflows {dtype}, the dtype of params[{index}]: {detail}"
                raise ValueError(msg)

    def _dtype_limit(self) -> tuple[float, str, int] | None:
        """:attr:`_limit` from the parameters' dtypes (those that can be read)."""
        found: tuple[float, str, int] | None = None
        for i, p in enumerate(self.params):
            try:
                top = float(backend_of(p.data).xp.finfo(p.data.dtype).max)
            except (TypeError, ValueError, AttributeError):  # not a floating array (yet)
                continue
            if found is None or top < found[0]:
                found = (top, dtype_name(p.data.dtype), i)
        return found

    def _check_dtypes(self) -> None:
        """Check every hyperparameter against the parameters' dtypes (the end of a
        subclass's constructor; the first step does it for subclasses that do not)."""
        limit = self._dtype_limit()
        if limit is not None:
            self._check_scalars(limit, self._lr)
        self._limit = limit

    # ---- the step -------------------------------------------------------------------

    @staticmethod
    def _buffer(state: dict[str, Any], name: str, like: Array, backend: Backend) -> Array:
        """``state[name]``, or zeros shaped like ``like`` before the first step."""
        buffer = state.get(name)
        if buffer is None:
            buffer = backend.xp.zeros_like(like, dtype=like.dtype, device=backend.device)
        return buffer

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (``grad`` becomes ``None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient (the others are
        skipped, and their step count does not advance).

        Every gradient and parameter is checked before any parameter changes, at every
        step: a gradient of another library or device than its parameter raises
        :class:`MixedBackendError` or :class:`MixedDeviceError`, one of another dtype
        ``TypeError``, of another shape ``ValueError``; a parameter that cannot be
        updated in place (a read-only NumPy array) raises ``ValueError``.  Each names
        ``params[i].grad`` or ``params[i]``, and the step leaves every parameter and the
        optimizer's state (step counts, moments) as they were.  Runs without torch's
        autograd recording.
        """
        first = self.state[0].get("backend") or backend_of(
            self.params[0].data, names=("params[0]",)
        )
        first.run(self._update_all)  # CuPy: on the device; torch: under no_grad

    def _update_all(self) -> None:
        # Check first, update after: a bad gradient must leave every parameter unchanged.
        # The fast path compares each gradient with the facts its parameter had at the
        # last step: the parameter array itself (an `is`: a parameter replaced since, by
        # another library, device, dtype, shape or a read-only array, takes the slow
        # path), the gradient's library and device, dtype and shape, and where arrays can
        # be made read-only after they were made (NumPy), the parameter's flag.
        params, states = self.params, self.state
        for p, state in zip(params, states, strict=True):
            g = p.grad
            if g is None:
                continue
            w = p.data
            if (
                w is not state.get("data")
                or not state["backend"].owns(g)
                or ((dtype := g.dtype) is not state["dtype"] and dtype != state["dtype"])
                or g.shape != state["shape"]
                or ((writable := state["writable"]) is not None and not writable(w))
            ):
                self._refresh([i for i, q in enumerate(params) if q.grad is not None])
                break
        self._apply(params, states)

    def _refresh(self, stale: list[int]) -> None:
        """The slow path of :meth:`step`: check ``params[i]`` and its gradient for each
        ``i`` of ``stale`` (every parameter with a gradient), and the hyperparameters
        against the parameters' dtypes; then, only when everything is right, cache the
        facts the fast path compares, moving the buffers of a parameter that moved to
        its new backend and dtype."""
        found: dict[int, tuple[Backend, dict[str, Array]]] = {}
        for i in stale:
            p, state = self.params[i], self.state[i]
            w = p.data
            backend = backend_of(w, names=(f"params[{i}]",))
            _check_gradient(backend, p, p.grad, i)
            reason = backend.read_only(w)
            if reason:
                msg = (
                    f"params[{i}] cannot be updated in place: expected a writable array, "
                    f"got {reason}; give the parameter a writable copy: params[{i}].data = "
                    f"portprop.asarray(params[{i}].data, backend={backend.name!r}, copy=True)"
                )
                raise ValueError(msg)
            for key in self._BUFFERS:
                if key in state and tuple(state[key].shape) != tuple(w.shape):
                    msg = (
                        f"params[{i}] has shape {tuple(w.shape)}, but the optimizer's "
                        f"state[{i}][{key!r}] from earlier steps has shape "
                        f"{tuple(state[key].shape)}: expected the parameter's shape not to "
                        "change between steps (build a new optimizer for a new shape)"
                    )
                    raise ValueError(msg)
            moved = {}
            if state.get("backend") is not None and (
                state["backend"] != backend or state["dtype"] != w.dtype
            ):  # the model moved: move the buffers with it
                moved = {
                    key: backend.asarray(state[key], dtype=w.dtype, copy=True)
                    for key in self._BUFFERS
                    if key in state
                }
            found[i] = (backend, moved)
        limit = self._dtype_limit()
        if limit is not None:
            self._check_scalars(limit, self._lr)
        # ---- everything is right: remember it
        self._limit = limit
        for i, (backend, moved) in found.items():
            state, w = self.state[i], self.params[i].data
            if (
                state.get("backend") != backend
                or state["dtype"] != w.dtype
                or state["shape"] != w.shape
            ):
                # a multi-tensor kernel needs no parameter-sized scratch buffer
                kernel = backend.multi_update(self._MULTI_UPDATE)
                state["scratch"] = None if kernel is not None else backend.scratch_like(w)
            state.update(moved)
            state["backend"], state["dtype"], state["shape"] = backend, w.dtype, w.shape
            state["data"], state["writable"] = w, backend.writable_flag
        self._find_kernel()

    def _find_kernel(self) -> None:
        """Set :attr:`_kernel`: the multi-tensor kernel of the backend that every
        parameter checked so far lives on, or ``None`` (no kernel, or several backends)."""
        backends = {state["backend"] for state in self.state if "backend" in state}
        backend = backends.pop() if len(backends) == 1 else None
        self._kernel_backend = backend
        self._kernel = None if backend is None else backend.multi_update(self._MULTI_UPDATE)

    @staticmethod
    def _live(
        params: list[Parameter], states: list[dict[str, Any]]
    ) -> tuple[list[Array], list[Array], list[dict[str, Any]]]:
        """The arrays, gradients and states of the parameters that have a gradient."""
        ws, gs, live = [], [], []
        for p, state in zip(params, states, strict=True):
            g = p.grad
            if g is not None:
                ws.append(p.data)
                gs.append(g)
                live.append(state)
        return ws, gs, live

    def _apply(self, params: list[Parameter], states: list[dict[str, Any]]) -> None:
        """Update every parameter that has a gradient (all checked already), counting
        the step in its state.  A subclass may override this loop as a whole, to read
        its hyperparameters once per step instead of once per parameter; it must then
        keep ``state["data"]`` the parameter's array (JAX makes a new one each step)."""
        update = self._update
        for p, state in zip(params, states, strict=True):
            g = p.grad
            if g is not None:
                state["step"] = state.get("step", 0) + 1
                update(p, g, state, state["backend"], state["scratch"])
                state["data"] = p.data

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        """Update ``p`` (rebinding ``p.data``) from its gradient ``g`` and its ``state``,
        whose ``"step"`` already counts this update."""
        raise NotImplementedError

    def _required_buffers(self) -> tuple[str, ...]:
        """The buffers a parameter has once it received an update, with these
        hyperparameters (a saved state that lacks one cannot be resumed)."""
        return ()

    # ---- saving and resuming --------------------------------------------------------

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's hyperparameters, current values (``lr`` as a schedule left it)."""
        return {name: getattr(self, name) for name in self._HYPERPARAMETERS}

    def state_dict(self) -> dict[str, Any]:
        """What resuming training needs: ``{"type", "hyperparameters", "state"}``.

        ``"state"`` holds one dict per parameter, in ``params`` order, with ``"step"``
        (an int) and the buffers.  The arrays are the optimizer's own buffers on the
        parameters' backend, not copies (as in torch); convert them to save them.
        """
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "state": [
                {"step": s.get("step", 0), **{k: s[k] for k in self._BUFFERS if k in s}}
                for s in self.state
            ],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (of an optimizer of the same type, over
        parameters of the same shapes, on any backend and dtype).

        Everything is checked first: on any mismatch a :class:`StateDictError` lists
        every problem and nothing is changed.  Buffers are copied to each parameter's
        backend, device and dtype.
        """
        problems = self._check_state_dict(state_dict)
        if problems:
            msg = (
                f"state_dict does not match this {type(self).__name__} (nothing was loaded): "
                + "; ".join(problems)
            )
            raise StateDictError(msg)
        hyper = dict(state_dict["hyperparameters"])
        # The constructor checks every other hyperparameter; lr may be 0 in a saved
        # state (a schedule warming up from 0), which the constructor refuses.
        checked = type(self)(self.params, **{**hyper, "lr": 1.0})
        checked.lr = hyper["lr"]
        states = []
        for p, saved in zip(self.params, state_dict["state"], strict=True):
            backend = backend_of(p.data, names=("parameter",))
            new: dict[str, Any] = {"step": operator.index(saved["step"])}
            for key in self._BUFFERS:
                if key in saved:
                    new[key] = backend.asarray(saved[key], dtype=p.data.dtype, copy=True)
            states.append(new)
        for name in self._HYPERPARAMETERS:
            if name != "lr":  # lr was checked with the others, by `checked`
                setattr(self, name, getattr(checked, name))
        self._lr, self._limit = checked.lr, checked._limit
        for state, new in zip(self.state, states, strict=True):
            state.clear()
            state.update(new)

    def _check_state_dict(self, sd: Any) -> list[str]:
        """Every way ``sd`` fails to fit this optimizer (empty when it fits)."""
        if not isinstance(sd, Mapping):
            return [f"expected a mapping, got {type(sd).__name__}"]
        missing = [k for k in ("type", "hyperparameters", "state") if k not in sd]
        if missing:
            return [f"missing keys {missing}"]
        name = type(self).__name__
        if sd["type"] != name:
            return [f"it was saved by {sd['type']!r}, not {name!r}"]
        problems = []
        hyper = sd["hyperparameters"]
        checked: Optimizer | None = None
        if not isinstance(hyper, Mapping) or set(hyper) != set(self._HYPERPARAMETERS):
            keys = sorted(hyper) if isinstance(hyper, Mapping) else hyper
            problems.append(
                f"hyperparameters must have the keys {sorted(self._HYPERPARAMETERS)}, got {keys!r}"
            )
        else:
            try:
                _hyper(hyper["lr"], "lr")
                checked = type(self)(self.params, **{**hyper, "lr": 1.0})
                checked.lr = hyper["lr"]  # checked against the dtypes, with the others
            except (TypeError, ValueError) as exc:
                problems.append(f"hyperparameters: {exc}")
        states = sd["state"]
        if not isinstance(states, list | tuple) or len(states) != len(self.params):
            count = len(states) if isinstance(states, list | tuple) else type(states).__name__
            problems.append(
                f"state must be a list with one entry per parameter ({len(self.params)}), "
                f"got {count}"
            )
            return problems
        required = checked._required_buffers() if checked is not None else ()
        allowed = {"step", *self._BUFFERS}
        for i, (p, saved) in enumerate(zip(self.params, states, strict=True)):
            if not isinstance(saved, Mapping):
                problems.append(f"state[{i}] must be a dict, got {type(saved).__name__}")
                continue
            unexpected = sorted(set(saved) - allowed)
            if unexpected:
                problems.append(f"state[{i}] has unexpected keys {unexpected}")
            step = _count(saved.get("step"))
            if step is None:
                problems.append(
                    f"state[{i}]['step'] must be an int >= 0, got {saved.get('step')!r}"
                )
            elif step > 0:
                absent = [k for k in required if k not in saved]
                if absent:
                    problems.append(f"state[{i}] lacks {absent} after {step} steps")
            for key in self._BUFFERS:
                if key not in saved:
                    continue
                shape = getattr(saved[key], "shape", None)
                if shape is None:
                    kind = type(saved[key]).__name__
                    problems.append(f"state[{i}][{key!r}] must be an array, got {kind}")
                elif tuple(shape) != p.shape:
                    problems.append(
                        f"state[{i}][{key!r}]: expected shape {p.shape} (its parameter's), "
                        f"got {tuple(shape)}"
                    )
        return problems

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({inner})"
