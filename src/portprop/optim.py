r"""Optimizers: the gradient step :math:`w \leftarrow w - \eta\,\partial\ell/\partial w`,
its adaptive variants (Adam, AdamW, RMSprop) and gradient clipping.

Updates are in place on NumPy, CuPy and torch (through :meth:`Backend.add_scaled` and
in-place operators on the optimizer's own buffers), and rebind ``param.data`` on JAX,
whose arrays are immutable.  Every hyperparameter is kept as a Python float, so that a
float32 model stays float32 (NumPy 2 would promote it when combined with a NumPy
float64 scalar).  Each optimizer follows torch's definition, so that the same
hyperparameters give the same trajectory.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from portprop.backend import Backend, backend_of, dtype_name
from portprop.errors import StateDictError
from portprop.module import Parameter

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "clip_grad_norm_"]

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
    work unchanged.
    """

    _HYPERPARAMETERS: ClassVar[tuple[str, ...]] = ("lr",)
    _BUFFERS: ClassVar[tuple[str, ...]] = ()

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
                state["scratch"] = backend.scratch_like(w)
            state.update(moved)
            state["backend"], state["dtype"], state["shape"] = backend, w.dtype, w.shape
            state["data"], state["writable"] = w, backend.writable_flag

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


class SGD(Optimizer):
    r"""Stochastic gradient descent, with torch's definition of momentum, Nesterov
    momentum and weight decay.

    With :math:`g = \partial\ell/\partial w + \lambda w`:

    - no momentum: :math:`w \leftarrow w - \eta g`;
    - momentum :math:`\mu`: :math:`v \leftarrow \mu v + (1 - \tau) g` (:math:`v = g` at
      the first step), then :math:`w \leftarrow w - \eta v`, or
      :math:`w \leftarrow w - \eta (g + \mu v)` with ``nesterov=True``.

    Parameters with ``grad is None`` are skipped.
    """

    _HYPERPARAMETERS = ("lr", "momentum", "nesterov", "weight_decay", "dampening")
    _BUFFERS = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.momentum = _hyper(momentum, "momentum")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.dampening = _hyper(dampening, "dampening")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            msg = (
                "nesterov=True needs momentum > 0 and dampening = 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
            raise ValueError(msg)
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        mu, wd, keep = self.momentum, self.weight_decay, 1.0 - self.dampening
        found = [
            ("lr", lr, "lr", lr),
            ("momentum", mu, "momentum", mu),
            ("weight_decay", wd, "weight_decay", wd),
            ("dampening", self.dampening, "1 - dampening", keep),
            ("weight_decay", wd, "(1 - dampening) * weight_decay", keep * wd),
            ("lr", lr, "1 - lr * weight_decay", 1.0 - lr * wd),
        ]
        if self.nesterov:
            found.append(("lr", lr, "lr * momentum", lr * mu))
        return found

    def _required_buffers(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0.0 else ()

    def _apply(self, params: list[Parameter], states: list[dict[str, Any]]) -> None:
        # The loop of Optimizer._apply with SGD's update written into it: the
        # hyperparameters are read once per step, not once per parameter (workload B of
        # the benchmark has 8 small parameters, where these lookups show).
        lr, mu, wd, nesterov = self._lr, self.momentum, self.weight_decay, self.nesterov
        keep = 1.0 - self.dampening
        decay = 1.0 - lr * wd  # w - lr (g + wd w)  ==  (1 - lr wd) w - lr g
        for p, state in zip(params, states, strict=True):
            g = p.grad
            if g is None:
                continue
            state["step"] = state.get("step", 0) + 1
            add_scaled, scratch, w = state["backend"].add_scaled, state["scratch"], p.data
            if mu == 0.0:
                if wd != 0.0:
                    w *= decay
                p.data = state["data"] = add_scaled(w, -lr, g, scratch)
                continue
            v = state.get("momentum_buffer")
            if v is None:  # the first step: v = g (+ wd w)
                v = state["backend"].xp.asarray(g, copy=True)
                if wd != 0.0:
                    v = add_scaled(v, wd, w, scratch)
            else:
                v *= mu
                if keep == 1.0:
                    v += g  # in place, or a new array on JAX: stored back below
                else:
                    v = add_scaled(v, keep, g, scratch)
                if wd != 0.0:
                    v = add_scaled(v, keep * wd, w, scratch)
            state["momentum_buffer"] = v
            if nesterov:  # w - lr (g + wd w + mu v)
                if wd != 0.0:
                    w *= decay
                w = add_scaled(w, -lr, g, scratch)
                p.data = state["data"] = add_scaled(w, -lr * mu, v, scratch)
            else:
                p.data = state["data"] = add_scaled(w, -lr, v, scratch)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with torch's definition.

    At step :math:`t`, with :math:`g = \partial\ell/\partial w + \lambda w`:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2 \\
        \hat v &\leftarrow \max(\hat v, v) \text{ with amsgrad, else } \hat v = v \\
        w &\leftarrow w - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \varepsilon}

    (:math:`m = v = \hat v = 0` before the first step).  Parameters with
    ``grad is None`` are skipped and keep their own step count.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, optional
        The learning rate :math:`\eta > 0`.
    betas : (float, float), optional
        The decay rates :math:`\beta_1, \beta_2 \in [0, 1)` of the moment estimates.
    eps : float, optional
        :math:`\varepsilon \ge 0`, added to the denominator.
    weight_decay : float, optional
        :math:`\lambda \ge 0`, an L2 penalty added to the gradient (see :class:`AdamW`
        for decoupled weight decay).
    amsgrad : bool, optional
        Divide by the running maximum :math:`\hat v` of :math:`v` (Reddi et al., 2018).
    """

    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    _BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled_weight_decay: ClassVar[bool] = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.betas = _betas(betas)
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        # The first step is the largest: lr / (1 - beta1**t) shrinks towards lr.
        wd = self.weight_decay
        found = [
            ("lr", lr, "lr / (1 - betas[0])", lr / (1.0 - self.betas[0])),
            ("eps", self.eps, "eps", self.eps),
            ("weight_decay", wd, "weight_decay", wd),
        ]
        if self._decoupled_weight_decay:
            found.append(("lr", lr, "1 - lr * weight_decay", 1.0 - lr * wd))
        return found

    def _required_buffers(self) -> tuple[str, ...]:
        return self._BUFFERS if self.amsgrad else self._BUFFERS[:2]

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        lr, wd = self._lr, self.weight_decay  # _lr: no property call per parameter
        beta1, beta2 = self.betas
        w = p.data
        if self._decoupled_weight_decay:
            if wd != 0.0:
                w *= 1.0 - lr * wd
        else:
            g = _with_weight_decay(g, w, wd)
        m = moving_average(backend, self._buffer(state, "exp_avg", w, backend), beta1, g, scratch)
        v = self._buffer(state, "exp_avg_sq", w, backend)
        v = moving_average(backend, v, beta2, g * g, scratch)
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if self.amsgrad:
            v_max = self._buffer(state, "max_exp_avg_sq", w, backend)
            v = state["max_exp_avg_sq"] = backend.xp.maximum(v_max, v)
        t = state["step"]
        denominator = backend.xp.sqrt(v) / math.sqrt(1.0 - beta2**t)
        denominator += self.eps
        p.data = backend.add_scaled(w, -lr / (1.0 - beta1**t), m / denominator, scratch)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), torch's definition.

    As :class:`Adam` with :math:`\lambda = 0` in the gradient, but each step first
    shrinks the weights: :math:`w \leftarrow (1 - \eta\lambda)\, w`.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, 2012), with torch's definition.

    With :math:`g = \partial\ell/\partial w + \lambda w`:

    .. math::

        s &\leftarrow \alpha s + (1 - \alpha)\, g^2 \\
        a &\leftarrow \alpha a + (1 - \alpha)\, g
            \text{ and } d = \sqrt{s - a^2} + \varepsilon \text{ if centered,}
            \text{ else } d = \sqrt{s} + \varepsilon \\
        b &\leftarrow \mu b + g / d, \quad w \leftarrow w - \eta b
            \text{ with momentum } \mu > 0, \text{ else } w \leftarrow w - \eta\, g / d

    (:math:`s = a = b = 0` before the first step).  Parameters with ``grad is None``
    are skipped.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, optional
        The learning rate :math:`\eta > 0`.
    alpha : float, optional
        The decay rate :math:`\alpha \in [0, 1)` of the averages.
    eps : float, optional
        :math:`\varepsilon \ge 0`, added to the denominator.
    weight_decay : float, optional
        :math:`\lambda \ge 0`, an L2 penalty added to the gradient.
    momentum : float, optional
        :math:`\mu \ge 0`.
    centered : bool, optional
        Normalise by an estimate of the gradient's variance rather than its second moment.
    """

    _HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params)
        self.lr = _hyper(lr, "lr", strict=True)
        self.alpha = _hyper(alpha, "alpha", high=1.0)
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")
        self.momentum = _hyper(momentum, "momentum")
        self.centered = bool(centered)
        self._check_dtypes()

    def _scalars(self, lr: float) -> list[tuple[str, Any, str, float]]:
        return [
            ("lr", lr, "lr", lr),
            ("eps", self.eps, "eps", self.eps),
            ("weight_decay", self.weight_decay, "weight_decay", self.weight_decay),
            ("momentum", self.momentum, "momentum", self.momentum),
        ]

    def _required_buffers(self) -> tuple[str, ...]:
        needed = ["square_avg"]
        if self.centered:
            needed.append("grad_avg")
        if self.momentum > 0.0:
            needed.append("momentum_buffer")
        return tuple(needed)

    def _update(
        self,
        p: Parameter,
        g: Array,
        state: dict[str, Any],
        backend: Backend,
        scratch: Array | None,
    ) -> None:
        xp, alpha = backend.xp, self.alpha
        w = p.data
        g = _with_weight_decay(g, w, self.weight_decay)
        s = self._buffer(state, "square_avg", w, backend)
        s = state["square_avg"] = moving_average(backend, s, alpha, g * g, scratch)
        if self.centered:
            a = self._buffer(state, "grad_avg", w, backend)
            a = state["grad_avg"] = moving_average(backend, a, alpha, g, scratch)
            denominator = xp.sqrt(s - a * a)
        else:
            denominator = xp.sqrt(s)
        denominator += self.eps
        if self.momentum > 0.0:
            b = self._buffer(state, "momentum_buffer", w, backend)
            b *= self.momentum
            b += g / denominator
            state["momentum_buffer"] = b
            p.data = backend.add_scaled(w, -self._lr, b, scratch)
        else:
            p.data = backend.add_scaled(w, -self._lr, g / denominator, scratch)


def clip_grad_norm_(
    params: Parameter | Iterable[Parameter], max_norm: float, norm_type: float = 2.0
) -> float:
    r"""Scale the gradients so that their total norm is at most ``max_norm`` (torch's
    ``clip_grad_norm_``), in place where the library allows (``grad`` is rebound on JAX,
    and to a scaled copy where the gradient is a read-only array).

    The total norm is the ``norm_type``-norm of all the gradients together, as if they
    were concatenated into one vector.  When it exceeds ``max_norm``, every gradient is
    multiplied by ``max_norm / (total + 1e-6)``.  Parameters with ``grad is None`` are
    left out; the parameters may live on several backends and devices (the partial norms
    are combined on the host).  As in torch, a non-finite total (a gradient holding NaN
    or infinity) turns the gradients into NaN or zeros; check the returned value to skip
    such a step.

    The norm does not overflow while every gradient is finite: a sum of powers that
    overflows (float32 gradients of about ``1e19`` and more, for the 2-norm) or underflows
    is computed again for that gradient, divided by its largest absolute value first.
    That costs one more reduction, for those gradients only.

    Parameters
    ----------
    params : Parameter or iterable of Parameter
    max_norm : float
        The largest total norm allowed, ``> 0``.
    norm_type : float, optional
        The ``p`` of the ``p``-norm, ``> 0``; ``math.inf`` for the largest absolute value.

    Returns
    -------
    float
        The total norm before clipping (``0.0`` when no parameter has a gradient).  It is
        ``inf`` only when a gradient holds an infinity or when the norm exceeds the
        largest float64; the gradients are still scaled correctly in the second case.

    Raises
    ------
    MixedBackendError, MixedDeviceError, TypeError, ValueError
        If a gradient is not an array of its parameter's library, device, dtype and
        shape; nothing is changed then.
    """
    limit = _hyper(max_norm, "max_norm", strict=True)
    try:
        order = float(norm_type)
    except (TypeError, ValueError):
        msg = f"norm_type must be a number, got {norm_type!r}"
        raise TypeError(msg) from None
    if math.isnan(order) or order <= 0.0:
        msg = f"norm_type must be a number > 0 (or math.inf), got {norm_type!r}"
        raise ValueError(msg)
    group = [params] if isinstance(params, Parameter) else list(params)
    for i, p in enumerate(group):
        if not isinstance(p, Parameter):
            msg = f"params[{i}] must be a portprop Parameter, got {type(p).__name__}"
            raise TypeError(msg)
    grads: list[tuple[Parameter, Array, Backend]] = []
    backend: Backend | None = None
    for i, p in enumerate(group):
        g = p.grad
        if g is None:
            continue
        if backend is None or not backend.owns(g):  # looked up again only when it changes
            backend = backend_of(g, names=(f"params[{i}].grad",))
        if not backend.owns(p.data) or g.dtype != p.data.dtype or g.shape != p.data.shape:
            _check_gradient(backend_of(p.data, names=(f"params[{i}]",)), p, g, i)
        if 0 not in g.shape:
            grads.append((p, g, backend))
    # NumPy warns when a sum of squares overflows, which is handled below, and when an
    # infinite gradient is multiplied by a scale of 0 (torch's NaN): keep it quiet.
    noisy = [b for _, _, b in grads if b.warns]
    with noisy[0].quiet() if noisy else contextlib.nullcontext():
        return _clip(grads, limit, order)


def _clip(grads: list[tuple[Parameter, Array, Backend]], limit: float, order: float) -> float:
    """:func:`clip_grad_norm_` of checked gradients."""
    # Per gradient, (m, s) with its norm**order = m**order * s: m = 1 and s the plain sum
    # of |g|**order, unless that sum over- or underflowed (then m = max |g|, finite).
    parts = []
    for _, g, backend in grads:
        xp = backend.xp
        if order == math.inf:
            parts.append((1.0, float(xp.max(xp.abs(g)))))
            continue
        s = float(xp.sum(g * g)) if order == 2.0 else float(xp.sum(xp.abs(g) ** order))
        parts.append((1.0, s) if _SAFE_SUM[0] < s < _SAFE_SUM[1] else _scaled_sum(xp, g, order))
    if not parts:
        return 0.0
    sums = [s for _, s in parts]
    if any(math.isnan(s) for s in sums):
        total = scale = math.nan
    elif order == math.inf:
        total = max(sums)
        scale = limit / (total + 1e-6)
    else:
        top = max(m for m, _ in parts)
        acc = math.fsum(s if m == top else (m / top) ** order * s for m, s in parts)
        root = math.sqrt(acc) if order == 2.0 else acc ** (1.0 / order)
        total = top * root
        scale = limit / (total + 1e-6)
        if math.isinf(total) and math.isfinite(root):
            scale = limit / top / root  # beyond float64, but the scale is not
    if not scale >= 1.0:  # torch multiplies by min(scale, 1), NaN included
        # a factor below float32's smallest normal number would lose digits: apply two
        factors = (scale,) if not 0.0 < scale < 1e-30 else (math.sqrt(scale),) * 2
        for p, g, backend in grads:
            with backend.scope():
                # a read-only gradient (NumPy) is scaled into a new array, as on JAX
                scaled = g
                if backend.read_only(g):
                    scaled = backend.xp.asarray(g, dtype=g.dtype, device=backend.device, copy=True)
                for factor in factors:
                    scaled *= factor  # in place, or a new array on JAX
            p.grad = scaled
    return total


# Sums of |g|**p within these bounds lost nothing to overflow or underflow (a float32
# sum below 1e-30 may have dropped terms under float32's smallest normal number, 1e-38),
# and math.fsum can add a million of them without overflowing.
_SAFE_SUM = (1e-30, 1e250)


def _scaled_sum(xp: Any, g: Array, order: float) -> tuple[float, float]:
    """``(m, s)`` with ``m = max |g|`` and ``s = sum (|g| / m)**order``, so that
    ``sum |g|**order = m**order * s`` without overflow; ``(1, m**order)`` when ``m`` is
    0, NaN or infinite."""
    m = float(xp.max(xp.abs(g)))
    if m == 0.0 or not math.isfinite(m):
        return 1.0, m**order  # 0, inf or NaN
    q = xp.abs(g) / m  # m is a value of g's dtype, so q lies in [0, 1]
    s = float(xp.sum(q * q)) if order == 2.0 else float(xp.sum(q**order))
    return m, s
