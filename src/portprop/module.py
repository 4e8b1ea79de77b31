"""Modules: parameters, the forward/backward protocol, and :class:`Sequential`.

A module's ``forward`` keeps what its ``backward`` needs; ``backward`` receives the
gradient of the loss with respect to the module's output, *adds* the gradients of its
parameters into their ``grad`` and returns the gradient with respect to its input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from portprop.backend import Backend, backend_of, dtype_name, is_array, resolve
from portprop.errors import MixedBackendError, MixedDeviceError, StateDictError

__all__ = ["Module", "Parameter", "Sequential"]

Array = Any


def rank_hint(argname: str, ndim: int) -> str:
    """How to reshape an array of ``ndim`` dimensions into ``(samples, features)``, as a
    sentence to append to an error message (empty for a 2-D array)."""
    if ndim == 0:
        return f" Wrap a single value as one sample of one feature with {argname}.reshape(1, 1)."
    if ndim == 1:
        return (
            f" Reshape one feature per sample with {argname}.reshape(-1, 1), or a single "
            f"sample with {argname}.reshape(1, -1)."
        )
    if ndim > 2:
        return (
            f" Flatten each sample's trailing dimensions with "
            f"{argname}.reshape({argname}.shape[0], -1)."
        )
    return ""


_SHOWN = 5  # how many names or problems an error message lists before counting the rest

# How many batch shapes a module keeps the buffers of: the training batch and one more
# (the last, smaller batch of an epoch, or the validation batch); a third shape evicts
# the one used least recently.  More would hold memory for shapes seen once an epoch.
_WORKSPACE_SHAPES = 2


def _first_few(names: list[str]) -> str:
    """``names`` as a list, the first few of them, and how many more there are."""
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{names[:_SHOWN]}{more}"


def _value_problem(value: Any, shape: tuple[int, ...]) -> str | None:
    """What is wrong with ``value`` as the new value of a parameter of ``shape``, or
    ``None``: it must be an array of a real dtype (integer or floating) of that shape."""
    if not is_array(value):
        return f"expected an array of shape {shape}, got an object of type {type(value).__name__}"
    name = dtype_name(value.dtype)
    if not name.startswith(("float", "bfloat", "int", "uint")):
        return f"expected a real (floating or integer) array, got dtype {name}"
    if tuple(value.shape) != shape:
        return f"expected shape {shape}, got {tuple(value.shape)}"
    return None


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Attributes
    ----------
    data : array
        The value.  Optimizers update it in place where the backend allows and
        rebind it where arrays are immutable (JAX): always read ``param.data`` afresh.
    grad : array or None
        The sum of the gradients of every ``backward`` since the last ``zero_grad``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: Array) -> None:
        self.data = data
        self.grad: Array | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def accumulate(self, gradient: Array) -> None:
        """Add ``gradient`` into :attr:`grad` (the first one after ``zero_grad`` is kept as is)."""
        if self.grad is None:
            self.grad = gradient
        else:
            self.grad += gradient

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={dtype_name(self.data.dtype)})"


class Module:
    """Base class: a differentiable map with an explicit backward pass.

    Subclasses implement ``_forward(X)`` and ``_backward(dl_dy, input_grad)``; the public
    :meth:`forward` and :meth:`backward` check their arguments first.

    A module whose output always has its input's shape (an activation) sets the class
    attribute ``_elementwise = True``; one that needs a fixed number of input features
    or gives a fixed number of outputs says so through ``_n_in()`` and ``_n_out()``
    (:class:`~portprop.Linear` does).  :class:`Sequential` uses them to check the
    number of features of its input, and :func:`portprop.fit` the width of the targets,
    before any computation.

    A module without parameters (an activation, :class:`~portprop.Dropout`) computes
    where its input lives, as torch's do: its ``backend`` and ``dtype`` are those of the
    last input it was given, and inside a :class:`Sequential` those of the model's
    parameters.  Built with an explicit ``backend=`` (or ``device=``), or ``dtype=``, it
    keeps that backend, or dtype, and refuses inputs of another.
    """

    backend: Backend
    dtype: Any
    training: bool
    _elementwise: ClassVar[bool] = False
    # Whether the module fixes its backend and its dtype, or takes either from its input
    # (a module without parameters says so in its constructor).
    _pins: tuple[bool, bool] = (True, True)
    # The shape of the output of the last forward(), which grad_output must have.
    _out_shape: Any = None
    # Workspaces (issue 13, see use_workspaces): whether they are wanted; whether this
    # module may write its output (its input gradient) into one, which it may only where
    # the array stays inside a Sequential (set by Sequential: never for what the caller
    # receives); the buffers by input shape and dtype, and those of the last forward.
    _workspaces_wanted: bool = True
    _passes_through: ClassVar[bool] = False  # returns its input as is (Identity)
    _output_is_scratch: ClassVar[bool] = False  # keeps no reference to its output (Linear)
    _ws_out: bool = False
    _ws_input: bool = False  # may write its output over its input (after a Linear)
    _ws_grad: bool = False
    _ws_cache: dict[Any, dict[str, Array]] | None = None
    _ws: dict[str, Array] | None = None
    _ws_key: Any = None

    def __init__(
        self, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        self.backend, self.dtype = resolve(backend, device, dtype)
        self.training = True

    # ---- the protocol ---------------------------------------------------------------

    def forward(self, X: Array) -> Array:
        """Compute the output for a batch ``X`` and keep what :meth:`backward` needs."""
        self._check_input(X, "X")
        Y = self.backend.run(self._forward, X)
        self._out_shape = Y.shape
        return Y

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> Array | None:
        """Back-propagate ``grad_output`` (the gradient of the loss with respect to the
        output of the last :meth:`forward`).

        Parameter gradients are *added* to ``param.grad``; call :meth:`zero_grad`
        between steps.  Returns the gradient with respect to the input, or ``None`` when
        ``input_grad=False`` (which skips the input-gradient product of the first layer).
        """
        self._check_input(grad_output, "grad_output", grad=True)
        if grad_output.shape != self._out_shape:
            self._check_grad_shape(grad_output)
        return self.backend.run(self._backward, grad_output, input_grad)

    def _forward(self, X: Array) -> Array:
        raise NotImplementedError

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        raise NotImplementedError

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        """Raise unless ``X`` (an input, or with ``grad`` the gradient of an output) is an
        array of the model's backend, device and dtype; subclasses add shape checks.

        A module that follows its input takes the backend and dtype of ``X`` instead
        (never of a gradient, which must match the forward pass).
        """
        if self.backend.owns(X) and X.dtype == self.dtype:
            return
        if not grad and self._pins != (True, True):
            self._follow(X, argname)
            return
        self.backend.check(X, argname)
        raise self._dtype_error(X, argname, self.backend)

    def _dtype_error(self, X: Array, argname: str, backend: Backend) -> TypeError:
        msg = (
            f"{argname} has dtype {dtype_name(X.dtype)} but the model computes in "
            f"{dtype_name(self.dtype)}; convert it with "
            f"portprop.asarray({argname}, dtype={dtype_name(self.dtype)!r}, "
            f"backend={backend.name!r})"
        )
        return TypeError(msg)

    def _fixes(self) -> tuple[bool, bool]:
        """Whether this module fixes its backend and its dtype: a module with parameters
        fixes both; one without fixes those it was built with explicitly."""
        return (True, True) if self.parameters() else self._pins

    def _follow(self, X: Array, argname: str) -> None:
        """Take the backend and dtype of the input ``X``, where this module does not fix
        them, after checking that ``X`` has those it fixes (the slow path of
        :meth:`_check_input`, taken when the input moves)."""
        pins_backend, pins_dtype = self._fixes()
        if pins_backend or not is_array(X):
            self.backend.check(X, argname)
            backend = self.backend
        else:
            backend = backend_of(X, names=(argname,))
        name = dtype_name(X.dtype)
        if pins_dtype and name != dtype_name(self.dtype):
            raise self._dtype_error(X, argname, backend)
        if not backend.is_float_dtype(X.dtype):
            msg = (
                f"{argname} has dtype {name}, but {type(self).__name__} computes in a "
                f"floating dtype (float32 or float64); convert it with "
                f"portprop.asarray({argname}, dtype='float32')"
            )
            raise TypeError(msg)
        self._bind(backend, X.dtype)

    def _buffer(self, name: str, allowed: bool) -> Array | None:
        """The buffer ``name`` of the last forward's workspace, to write into, or ``None``
        (no workspace, its first pass, or not ``allowed``: the array leaves the model)."""
        ws = self._ws
        return ws.get(name) if ws is not None and allowed else None

    def _remember(self, name: str, array: Array, allowed: bool) -> Array:
        """Keep ``array`` as the buffer ``name`` of the workspace (where :meth:`_buffer`
        would give one); returns it."""
        ws = self._ws
        if ws is not None and allowed:
            ws[name] = array
        return array

    def _bind(self, backend: Backend, dtype: Any) -> None:
        """Compute on ``backend`` in ``dtype`` from now on (a module without parameters)."""
        if backend != self.backend:  # workspaces: the buffers live on the old one
            self._ws_cache = self._ws = None
        self.backend, self.dtype = backend, dtype

    def _check_grad_shape(self, grad_output: Array) -> None:
        """Raise unless ``grad_output`` has the shape of the last forward's output (the
        slow path of :meth:`backward`, where the shapes compare unequal)."""
        expected = self._out_shape
        if expected is None or tuple(grad_output.shape) == tuple(expected):
            return  # before any forward, _backward says so
        msg = (
            f"grad_output must have the shape of the output of the last forward, "
            f"{tuple(expected)}, got {tuple(grad_output.shape)}"
        )
        raise ValueError(msg)

    def _n_in(self) -> int | None:
        """The number of input features :meth:`forward` needs, or ``None`` if it takes any."""
        return None

    def _n_out(self) -> int | None:
        """The number of output columns :meth:`forward` gives, or ``None`` if unknown."""
        return None

    def _require_cache(self, cached: Any) -> None:
        if cached is None:
            msg = f"{type(self).__name__}.backward() was called before forward()"
            raise RuntimeError(msg)

    # ---- parameters -----------------------------------------------------------------

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs with torch's names (``"0.weight"``)."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return iter(())

    # Buffers (issue 12): the names of the attributes that hold non-trainable arrays of
    # the module's state (BatchNorm1d's running statistics), saved with the parameters
    # but never seen by an optimizer; an attribute that is None is skipped.
    _buffer_names: ClassVar[tuple[str, ...]] = ()

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Array]]:
        """``(name, array)`` pairs of the non-trainable state with torch's names
        (``"0.running_mean"``), this module's and then its children's."""
        for name in self._buffer_names:
            value = getattr(self, name)
            if value is not None:
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def _set_buffer(self, qualified: str, value: Array) -> None:
        """Rebind the buffer named ``qualified`` (as :meth:`named_buffers` names it)."""
        module: Module = self
        *path, name = qualified.split(".")
        for part in path:
            module = dict(module.named_children())[part]
        setattr(module, name, value)

    def parameters(self) -> list[Parameter]:
        """Every parameter, in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``grad`` becomes ``None``, as in torch)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Set training mode (and return self)."""
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (and return self)."""
        return self.train(False)

    def _clear_cache(self) -> None:
        """Drop what the last forward kept (subclasses that keep more call this too), and
        the workspaces."""
        self._out_shape = None
        self._ws_cache = self._ws = None

    # ---- workspaces -----------------------------------------------------------------

    def use_workspaces(self, enabled: bool = True) -> Module:
        """Keep the buffers of a step and write the next step of the same batch shape
        into them (``enabled=True``, the default of every module), or allocate every
        array afresh (``False``); for this module and every module below it.  Returns
        self.

        Workspaces exist where the backend can write into an array
        (:attr:`portprop.Backend.has_workspaces`: NumPy, torch and CuPy); elsewhere (JAX,
        array-api-strict) this changes nothing.  Results are the same bits either way:
        the same operations write into kept arrays instead of new ones.  A module keeps
        the buffers of at most two batch shapes (the training batch and the last,
        smaller one, or a validation batch), dropping the least recently used for a third.

        What a workspace holds: the outputs and input gradients that stay inside a
        :class:`Sequential` (activations, the values kept for the backward pass) and the
        weights' gradients.  What the caller of a model's :meth:`forward` and
        :meth:`backward` receives is never a workspace (a layer of a model called on
        its own may return one); a weight's ``grad`` is: the first backward after
        :meth:`zero_grad` writes the new gradient into the array that held the previous
        one, so copy ``param.grad`` to keep it beyond ``zero_grad``.

        Example: ``model = pp.Sequential(pp.Linear(784, 512), pp.ReLU(),
        pp.Linear(512, 10)).use_workspaces(False)`` allocates every step afresh.
        """
        if not isinstance(enabled, bool):
            msg = f"enabled must be a bool, got {enabled!r} of type {type(enabled).__name__}"
            raise TypeError(msg)
        for module in self.modules():
            module._workspaces_wanted = enabled
            module._clear_cache()
        return self

    @property
    def workspaces(self) -> bool:
        """Whether this module writes its steps into workspaces (see
        :meth:`use_workspaces`): wanted, and possible on its backend."""
        return self._workspaces_wanted and self.backend.has_workspaces

    def _workspace(self, X: Array) -> dict[str, Array] | None:
        """The buffers, by name, of a forward pass of input ``X`` (empty on the first
        pass of its shape, which fills them), also kept for the backward pass; ``None``
        without workspaces."""
        if not self._workspaces_wanted or not self.backend.has_workspaces:
            self._ws = None
            return None
        key = (X.shape, X.dtype)
        ws = self._ws
        if ws is not None and key == self._ws_key:  # the shape of the last pass
            return ws
        cache = self._ws_cache
        if cache is None:
            cache = self._ws_cache = {}
        ws = cache.pop(key, None)  # put back last: the most recently used
        if ws is None:
            if len(cache) >= _WORKSPACE_SHAPES:
                del cache[next(iter(cache))]  # the least recently used
            ws = {}
        cache[key] = ws
        self._ws, self._ws_key = ws, key
        return ws

    # ---- moving and saving ----------------------------------------------------------

    def to(
        self, backend: Backend | str | None = None, *, device: Any = None, dtype: Any = None
    ) -> Module:
        """Move every parameter to another backend, device or dtype, in place; returns self.

        Accumulated gradients and what the last forward kept are dropped.
        """
        if backend is None:  # a device alone stays within the model's library
            backend = self.backend
        target, target_dtype = resolve(backend, device, self.dtype if dtype is None else dtype)
        moved = {
            name: target.asarray(p.data, dtype=target_dtype, copy=True)
            for name, p in self.named_parameters()
        }
        for name, p in self.named_parameters():
            p.data = moved[name]
            p.grad = None
        # buffers (issue 12): floating ones take the new dtype, integer ones keep theirs
        for name, value in list(self.named_buffers()):
            floating = self.backend.is_float_dtype(value.dtype)
            kept = target_dtype if floating else counter_dtype(target)
            self._set_buffer(name, target.asarray(value, dtype=kept, copy=True))
        for module in self.modules():
            module.backend, module.dtype = target, target_dtype
            module._clear_cache()
        return self

    def modules(self) -> Iterator[Module]:
        """This module and every module below it."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def state_dict(self) -> dict[str, Array]:
        """The parameters, then the buffers, by torch name (``"0.weight"``, ``"0.bias"``,
        ``"0.running_mean"``, ...).

        The arrays are the parameters and buffers themselves, not copies (as in torch).
        """
        state = {name: p.data for name, p in self.named_parameters()}
        state.update(self.named_buffers())  # buffers (issue 12)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy arrays of any supported library (a torch ``nn.Sequential`` state dict
        included) into the parameters and buffers, converting them to this model's
        backend, device and dtype (an integer buffer keeps its integer dtype).

        Every key, value and shape is checked first: each value must be an array (or a
        :class:`Parameter`) of a real dtype, integer or floating, of the parameter's
        shape.  On any mismatch a :class:`StateDictError` lists them and nothing is
        changed.  Values come in through :meth:`Backend.asarray` as copies: the
        parameters never share memory, or autograd history, with them.
        """
        if not isinstance(state_dict, Mapping):
            msg = (
                f"state_dict must be a mapping of parameter names to arrays, "
                f"got {type(state_dict).__name__}"
            )
            raise TypeError(msg)
        own: dict[str, Any] = dict(self.named_parameters())
        buffers = dict(self.named_buffers())  # buffers (issue 12), checked as parameters are
        own.update(buffers)
        values = {
            k: v.data if isinstance(v, Parameter) else v for k, v in state_dict.items() if k in own
        }
        missing = [k for k in own if k not in values]
        unexpected = [k for k in state_dict if k not in own]
        wrong = [
            f"{k}: {problem}"
            for k, v in values.items()
            if (problem := _value_problem(v, tuple(own[k].shape))) is not None
        ]
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing keys {_first_few(missing)}")
            if unexpected:
                parts.append(f"unexpected keys {_first_few(unexpected)}")
            if wrong:
                shown = "; ".join(wrong[:_SHOWN])
                more = f"; and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
                parts.append(f"wrong values: {shown}{more}")
            msg = "state_dict does not match the model (nothing was loaded): " + "; ".join(parts)
            raise StateDictError(msg)
        converted = {
            k: self.backend.asarray(values[k], dtype=_loaded_dtype(self, own[k]), copy=True)
            for k in own
        }
        for k, p in own.items():
            if k in buffers:
                self._set_buffer(k, converted[k])
            else:
                p.data = converted[k]
                p.grad = None

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def counter_dtype(backend: Backend) -> str:
    """The dtype name of an integer buffer (``num_batches_tracked``): int64, as torch's,
    or the narrower integer of a device without it (JAX without ``jax_enable_x64``)."""
    return backend._narrow_ints.get("int64", "int64")


def _loaded_dtype(module: Module, own: Any) -> Any:
    """The dtype a loaded value of the parameter or buffer ``own`` takes: the model's,
    except for an integer buffer (``num_batches_tracked``), which keeps its own."""
    if isinstance(own, Parameter) or module.backend.is_float_dtype(own.dtype):
        return module.dtype
    return own.dtype


def _shared_backend_and_dtype(
    layers: tuple[Module, ...], fixes: list[tuple[bool, bool]]
) -> tuple[Backend, Any]:
    """The backend and dtype of a :class:`Sequential` of ``layers``: those of the layers
    that fix them (``fixes[i]``: their parameters, or an explicit ``backend=`` or
    ``dtype=``), which must agree, or else those of the first layer."""
    by_backend = [i for i, (b, _) in enumerate(fixes) if b]
    backend = layers[by_backend[0] if by_backend else 0].backend
    odd = [i for i in by_backend if layers[i].backend != backend]
    if odd:
        msg = _disagreement(layers, by_backend, "backend", lambda layer: layer.backend.name)
        if any(layers[i].backend.library != backend.library for i in odd):
            raise MixedBackendError(msg)
        raise MixedDeviceError(msg)
    by_dtype = [i for i, (_, d) in enumerate(fixes) if d]
    name = dtype_name(layers[by_dtype[0] if by_dtype else 0].dtype)
    if any(dtype_name(layers[i].dtype) != name for i in by_dtype):
        raise TypeError(_disagreement(layers, by_dtype, "dtype", lambda x: dtype_name(x.dtype)))
    return backend, backend.float_dtype(name)


def _disagreement(
    layers: tuple[Module, ...], indices: list[int], what: str, value: Callable[[Module], str]
) -> str:
    """The message for layers (``indices``) whose ``value(layer)`` differ: each value
    with the first few layers that have it."""
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(value(layers[i]), []).append(i)
    described = []
    for shown, members in groups.items():
        named = ", ".join(f"{i} ({type(layers[i]).__name__})" for i in members[:3])
        more = f" and {len(members) - 3} more" if len(members) > 3 else ""
        label = "layers" if len(members) > 1 else "layer"
        verb = "are" if len(members) > 1 else "is"
        described.append(f"{label} {named}{more} {verb} {shown}")
    return (
        f"the layers with parameters, and those built with an explicit {what}=, must share "
        f"one backend and dtype, but {', '.join(described[:4])}"
        + (f", and {len(described) - 4} more groups" if len(described) > 4 else "")
        + f". Build them with the same {what}=, or move one with layer.to(...); layers "
        "without parameters need neither: they follow the model."
    )


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse.

    >>> import portprop as pp
    >>> net = pp.Sequential(pp.Linear(2, 3), pp.ReLU(), pp.Linear(3, 1))
    >>> [name for name, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers: Module) -> None:
        if not layers:
            msg = "Sequential needs at least one layer, got none"
            raise ValueError(msg)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                msg = f"layer {i} must be a portprop Module, got {type(layer).__name__}"
                raise TypeError(msg)
        fixes = [layer._fixes() for layer in layers]
        backend, dtype = _shared_backend_and_dtype(layers, fixes)
        self.layers = tuple(layers)
        self.backend, self.dtype, self.training = backend, dtype, True
        # The model fixes its backend (dtype) if one of its layers does; the others, those
        # without parameters, compute where the model does.
        self._pins = (any(b for b, _ in fixes), any(d for _, d in fixes))
        self._follows = self._pins != (True, True)
        for layer, fixed in zip(layers, fixes, strict=True):
            if fixed != (True, True):
                layer._bind(backend, dtype)
        # The layers that fix the width: the first and the last that are not elementwise.
        # X is checked by the first (activations before it keep its shape), grad_output
        # by the last.
        shaped = [i for i, layer in enumerate(layers) if not layer._elementwise]
        self._entry = shaped[0] if shaped else 0
        self._exit = shaped[-1] if shaped else len(layers) - 1
        for i, j in itertools.pairwise(shaped):
            n_out, n_in = layers[i]._n_out(), layers[j]._n_in()
            if n_out is not None and n_in is not None and n_out != n_in:
                msg = (
                    f"layer {j} ({type(layers[j]).__name__}) expects {n_in} input features, "
                    f"but layer {i} ({type(layers[i]).__name__}) gives {n_out} outputs"
                )
                raise ValueError(msg)
        # Workspaces: a layer writes its output into one only if a later layer computes
        # a new array from it (not Identity), its input gradient only if an earlier one
        # does; the caller never receives a workspace.
        computes = [i for i, layer in enumerate(layers) if not layer._passes_through]
        for i, layer in enumerate(layers):
            layer._ws_out = bool(computes) and i < computes[-1]
            layer._ws_grad = bool(computes) and i > computes[0]
            # ... and over its input, where that is the output of the layer before,
            # which keeps no reference to it.
            layer._ws_input = layer._ws_out and i > 0 and layers[i - 1]._output_is_scratch
        # The layers never change, so neither does the list of parameters.
        self._parameters = [p for _, p in super().named_parameters()]
        with_params = [i for i, layer in enumerate(layers) if layer.parameters()]
        # Layers before the first one with parameters need no backward pass unless the
        # caller wants the gradient with respect to the input.
        self._first_with_params = with_params[0] if with_params else len(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return ((str(i), layer) for i, layer in enumerate(self.layers))

    def parameters(self) -> list[Parameter]:
        return list(self._parameters)

    def zero_grad(self) -> None:
        for p in self._parameters:
            p.grad = None

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    @property
    def _elementwise(self) -> bool:  # type: ignore[override]
        return all(layer._elementwise for layer in self.layers)

    def _n_in(self) -> int | None:
        return self.layers[self._entry]._n_in()

    def _n_out(self) -> int | None:
        return self.layers[self._exit]._n_out()

    def _check_input(self, X: Array, argname: str, *, grad: bool = False) -> None:
        # A model without parameters first follows its input (every layer with it).
        if self._follows and not grad and not (self.backend.owns(X) and X.dtype == self.dtype):
            self._follow(X, argname)
        # The layer that fixes the width checks the backend, the dtype, the rank and
        # the number of columns, so that a backend's own matmul error never surfaces.
        self.layers[self._exit if grad else self._entry]._check_input(X, argname, grad=grad)

    def _bind(self, backend: Backend, dtype: Any) -> None:
        self.backend, self.dtype = backend, dtype
        for layer in self.layers:
            layer._bind(backend, dtype)

    def _forward(self, X: Array) -> Array:
        for layer in self.layers:
            X = layer._forward(X)
        return X

    def _backward(self, dl_dy: Array, input_grad: bool) -> Array | None:
        stop = 0 if input_grad else self._first_with_params
        grad: Array | None = dl_dy
        # distributed (issue 10): an optional hook called with i once layer i's
        # gradients are final, where data-parallel fit starts their all-reduce
        hook = getattr(self, "_after_layer_backward", None)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            grad = self.layers[i]._backward(grad, input_grad or i > stop)
            if hook is not None:
                hook(i)
        return grad if input_grad else None

    def extra_repr(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return inner + "\n" if inner else ""
