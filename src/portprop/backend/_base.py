"""The :class:`Backend` object: one array library on one device.

A Backend holds the array API namespace (``xp``) that layers, losses and optimizers
compute with, the device its arrays live on, and the few library-specific fast kernels
that a training step uses (``add_scaled``, ``sum``).  It converts arrays between
libraries (``asarray``, ``to_host``) and checks that an array belongs to it (``owns``,
``check``).  The library modules of this package (``numpy.py``, ``torch.py``, ...) build
Backends; :mod:`portprop.backend._registry` keeps them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import array_api_compat
import numpy as np

from portprop.errors import DtypeUnsupportedError, MixedBackendError, MixedDeviceError

if TYPE_CHECKING:
    from portprop.backend.random import BackendGenerator

__all__ = [
    "FLOAT_NAMES",
    "Array",
    "Backend",
    "array_to_host",
    "dtype_name",
    "is_array",
    "same_device",
]

FLOAT_NAMES = ("float32", "float64")
# Mixed precision (issue 12): the low-precision dtypes a working copy computes in,
# which Backend.float_dtype accepts where the library has them.
LOW_FLOAT_NAMES = ("float16", "bfloat16")

Array = Any
_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class Backend:
    """One array library on one device.

    Attributes
    ----------
    name : str
        Canonical name, as accepted by :func:`get_backend` (``"torch:cuda:0"``).
    library : str
        The registry entry it came from (``"torch"``).
    xp : module
        The array API namespace that layers, losses and optimizers compute with.
    device : object
        The device object of ``xp`` that every array of this backend lives on.
    writable : bool
        Whether arrays can be updated in place (``False`` for JAX).
    """

    name: str
    library: str
    xp: Any
    device: Any
    writable: bool
    _array_types: tuple[type, ...] = field(repr=False, default=())
    _single_device: bool = field(repr=False, default=False)
    _float_dtypes: Mapping[str, Any] = field(repr=False, default_factory=dict)
    _narrow_ints: Mapping[str, str] = field(repr=False, default_factory=dict)
    _add_scaled: Callable[[Array, float, Array, Array | None], Array] | None = field(
        repr=False, default=None
    )
    _needs_scratch: bool = field(repr=False, default=False)
    _sum: Callable[..., Array] | None = field(repr=False, default=None)
    _scope: Callable[[], contextlib.AbstractContextManager[Any]] | None = field(
        repr=False, default=None
    )
    _to_host: Callable[[Array], Any] | None = field(repr=False, default=None)
    _numpy_warnings: bool = field(repr=False, default=True)
    _float64_hint: str = field(repr=False, default="")
    _generator: Callable[[Backend, int], BackendGenerator] | None = field(repr=False, default=None)
    # What an array of this library needs on the way in (torch: leave autograd, widen
    # the unsigned integers it cannot compare): ``adopt(x, argname)``.
    _adopt: Callable[[Array, str], Array] | None = field(repr=False, default=None)
    # ``run(fn, *args)`` of the library, when it is more than ``fn(*args)`` in ``scope()``.
    _run: Callable[..., Any] | None = field(repr=False, default=None)
    # Why an array cannot be updated in place ("" when it can); and, for libraries whose
    # arrays can become read-only during their life (NumPy's ``flags.writeable``), a
    # cheap getter of whether one still is writable (a torch inference tensor is one
    # from the start, or never).
    _read_only: Callable[[Array], str] | None = field(repr=False, default=None)
    _writable_flag: Callable[[Array], bool] | None = field(repr=False, default=None)
    # Fused optimizer steps (issue 13): the library's kernels that update a list of
    # parameters at once, by optimizer ("sgd", "adam", "rmsprop"); see multi_update.
    _multi_update: Mapping[str, Callable[..., Any]] = field(repr=False, default_factory=dict)
    # Compiled steps (issue 13): ``compiler(fn, donate) -> (compiled fn, how)`` of the
    # library, or ``(None, why not)`` where it cannot compile here (jax.jit with donated
    # arguments, torch.compile); ``None`` for libraries without a compiler.
    _compiler: Callable[[Callable[..., Any], tuple[int, ...]], tuple[Any, str]] | None = field(
        repr=False, default=None
    )
    # Workspaces (issue 13): the library's kernels that write into a given array,
    # ``matmul_into(a, b, out)`` and ``multiply_into(a, b, out)``; ``None`` where arrays
    # are immutable or the library has no ``out=`` (JAX, array-api-strict).
    _matmul_into: Callable[[Array, Array, Array], Array] | None = field(repr=False, default=None)
    _multiply_into: Callable[[Array, Array, Array], Array] | None = field(repr=False, default=None)
    # Mixed precision (issue 12): the library's low-precision floating dtypes by name
    # (float16, bfloat16), where it has them; empty where it has neither.
    _low_float_dtypes: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        # The library's own kernels stand in for the generic methods on this instance:
        # one Python call less for each update of each parameter, at every step.
        if self._add_scaled is not None:
            object.__setattr__(self, "add_scaled", self._add_scaled)
        if self._run is not None:
            object.__setattr__(self, "run", self._run)
        # workspaces (issue 13): the same for the kernels that write into a given array
        if self._matmul_into is not None and self._multiply_into is not None:
            object.__setattr__(self, "matmul_into", self._matmul_into)
            object.__setattr__(self, "multiply_into", self._multiply_into)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backend):
            return NotImplemented
        return self.name == other.name

    def __hash__(self) -> int:
        return hash(("portprop.Backend", self.name))

    def __copy__(self) -> Backend:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Backend:
        return self  # immutable, and it holds a module, which cannot be copied

    # ---- dtypes ---------------------------------------------------------------------

    def float_dtype(self, dtype: Any = None) -> Any:
        """The namespace's floating dtype for ``dtype`` (a name, a dtype of any library, or
        ``None`` for float32).  float16 and bfloat16, where the library has them, are for
        mixed precision (issue 12, :class:`portprop.MixedPrecision`).

        Raises
        ------
        DtypeUnsupportedError
            If this backend or device has no such dtype (float64 on JAX without x64, or on
            devices without float64).
        """
        name = dtype_name(dtype)
        if name in LOW_FLOAT_NAMES:  # mixed precision (issue 12)
            return self._low_float_dtype(name)
        if name not in FLOAT_NAMES:
            msg = f"dtype must be 'float32' or 'float64', got {dtype!r}"
            raise TypeError(msg)
        try:
            return self._float_dtypes[name]
        except KeyError:
            hint = f" {self._float64_hint}" if self._float64_hint else ""
            allowed = " or ".join(map(repr, self._float_dtypes)) or "a floating dtype"
            msg = (
                f"backend {self.name!r} has no {name} on device {self.device!r}: dtype must be "
                f"{allowed} there, got {name!r}.{hint}"
            )
            raise DtypeUnsupportedError(msg) from None

    def _low_float_dtype(self, name: str) -> Any:
        """The library's float16 or bfloat16 (mixed precision, issue 12), or a
        :class:`DtypeUnsupportedError` naming the low precisions the library has."""
        try:
            return self._low_float_dtypes[name]
        except KeyError:
            have = " and ".join(map(repr, self._low_float_dtypes)) or "none"
            msg = (
                f"backend {self.name!r} has no {name}: dtype must be one of its low-precision "
                f"dtypes ({have}) or float32, got {name!r}. torch and JAX have both."
            )
            raise DtypeUnsupportedError(msg) from None

    def is_float_dtype(self, dtype: Any) -> bool:
        """Whether ``dtype`` is one of this backend's floating dtypes (float32, float64)."""
        return dtype in self._float_dtypes.values()  # compares with ==, as any(...) would

    def supports(self, dtype: Any) -> bool:
        """Whether this backend and device can hold ``dtype``."""
        return dtype_name(dtype) in self._float_dtypes

    # ---- membership -----------------------------------------------------------------

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library on this backend's device."""
        if type(x) in self._array_types:
            # arrays of every built-in library have a .device; compare it directly
            return self._single_device or same_device(x.device, self.device)
        if not is_array(x):
            return False
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            return False
        return xp is self.xp and same_device(array_api_compat.device(x), self.device)

    def check(self, x: Any, argname: str, *, owner: str = "the model") -> None:
        """Raise a clear error unless ``x`` is an array of this backend and device.

        ``argname`` names ``x`` and ``owner`` what lives on this backend, in the message.

        Raises
        ------
        MixedBackendError
            If ``x`` is an array of another library.
        MixedDeviceError
            If ``x`` is an array of this library on another device.
        TypeError
            If ``x`` is not an array.
        """
        if self.owns(x):
            return
        from portprop.backend._registry import backend_of  # noqa: PLC0415 - an error path

        where = _describe(x)
        if not is_array(x):
            msg = f"{argname} must be an array of backend {self.name!r}, got {where}"
            raise TypeError(msg)
        other = backend_of(x)
        hint = f" Move it with portprop.asarray({argname}, backend={self.name!r})"
        hint += ", or move the model with model.to(...)." if owner == "the model" else "."
        if other.library == self.library:
            msg = f"{argname} is on device {other.device!r} but {owner} is on {self.name!r}."
            raise MixedDeviceError(msg + hint)
        msg = f"{argname} is {where} but {owner} lives on backend {self.name!r}."
        raise MixedBackendError(msg + hint)

    # ---- moving arrays --------------------------------------------------------------

    def asarray(
        self, x: Any, *, dtype: Any = None, copy: bool | None = None, argname: str = "x"
    ) -> Array:
        """``x`` (an array of any supported library, a scalar or a nested sequence) as an
        array of this backend, on its device.

        Uses DLPack where the two libraries and devices allow it and goes through host
        memory otherwise.  Like ``asarray`` of the standard it may share memory with
        ``x`` unless ``copy=True``.  What comes in is what the library computes with:
        a torch tensor leaves autograd (it is detached: portprop arrays never carry
        autograd history), and torch's unsigned integers wider than 8 bits, which torch
        cannot compare, become int64 (values of ``2**63`` and more are refused).

        ``argname`` names ``x`` in error messages (``"y"``, ``"validation_data[1]"``).

        Raises
        ------
        DtypeUnsupportedError
            If ``x`` has a dtype this backend or device cannot hold and ``dtype`` does not
            say what to convert it to, or integers that do not fit the device's.
        """
        xp = self.xp
        target = None if dtype is None else self._any_dtype(dtype)
        if self.owns(x):
            y = x
        elif is_array(x):
            name = dtype_name(x.dtype)
            if name in FLOAT_NAMES and not self.supports(x.dtype):
                # e.g. float64 data for a device without float64: cast on the host first
                host = array_to_host(x).astype(dtype_name(target or "float32"))
                with self.scope():
                    y = xp.asarray(host, device=self.device)
            elif name in self._narrow_ints:
                # e.g. int64 labels for a device without 64-bit integers
                with self.scope():
                    y = xp.asarray(self._narrowed(x, name, argname), device=self.device)
            elif not hasattr(xp, name):
                # a dtype the library lacks (float16 on array-api-strict): cast on the host
                if target is None:
                    msg = (
                        f"{argname} has dtype {name}, which backend {self.name!r} cannot "
                        f"hold; pass dtype= (such as 'float32') to convert it"
                    )
                    raise DtypeUnsupportedError(msg)
                host = array_to_host(x).astype(dtype_name(target))
                with self.scope():
                    y = xp.asarray(host, device=self.device)
            else:
                y = self._import_array(x)
        else:
            with self.scope():
                y = xp.asarray(x, dtype=target, device=self.device)
        if self._adopt is not None:
            y = self._adopt(y, argname)
        if target is not None and y.dtype != target:
            return xp.astype(y, target)
        if copy:
            with self.scope():
                return xp.asarray(y, copy=True)
        return y

    def from_host(self, host: Any, dtype: Any) -> Array:
        """A NumPy array drawn on the host, cast there to ``dtype`` and then moved, so that
        the values are bit-identical on every backend."""
        target = self.float_dtype(dtype)
        host = np.asarray(host, dtype=np.dtype(dtype_name(dtype)))
        with self.scope():
            return self.xp.asarray(host, dtype=target, device=self.device, copy=True)

    def to_host(self, x: Array) -> Any:
        """A NumPy copy of ``x`` (for reporting, checkpoints and interoperability); it
        never shares memory with ``x``."""
        return np.array(array_to_host(x), copy=True)

    def _import_array(self, x: Any) -> Array:
        xp = self.xp
        with contextlib.suppress(Exception), self.scope():
            y = xp.from_dlpack(x)
            if same_device(array_api_compat.device(y), self.device):
                return y
            return array_api_compat.to_device(y, self.device)
        host = array_to_host(x)
        with self.scope():
            return xp.asarray(host, device=self.device)

    def _narrowed(self, x: Array, name: str, argname: str) -> Any:
        """A host copy of the integer array ``x`` (of dtype ``name``, which this device
        lacks) in the narrower integer dtype the device has, if every value fits."""
        host = array_to_host(x)
        narrow = self._narrow_ints[name]
        bounds = np.iinfo(narrow)
        if host.size and (host.min() < bounds.min or host.max() > bounds.max):
            msg = (
                f"{argname} holds {name} values from {host.min()} to {host.max()}, but backend "
                f"{self.name!r} has no {name} on device {self.device!r}: values must fit "
                f"{narrow}, [{bounds.min}, {bounds.max}]"
            )
            raise DtypeUnsupportedError(msg)
        return host.astype(narrow)

    def _any_dtype(self, dtype: Any) -> Any:
        name = dtype_name(dtype)
        if name in FLOAT_NAMES or name in LOW_FLOAT_NAMES:  # LOW: mixed precision (issue 12)
            return self.float_dtype(name)
        if name in self._narrow_ints:
            msg = (
                f"backend {self.name!r} has no {name} on device {self.device!r}: dtype must "
                f"be a dtype of the device (such as {self._narrow_ints[name]!r}), got {name!r}"
            )
            raise DtypeUnsupportedError(msg)
        try:
            return getattr(self.xp, name)
        except AttributeError:
            msg = f"dtype {dtype!r} is not a dtype of backend {self.name!r}"
            raise TypeError(msg) from None

    # ---- fast kernels ---------------------------------------------------------------

    @property
    def warns(self) -> bool:
        """Whether the library warns about floating-point overflow and invalid operations
        (NumPy and the libraries computing with it, such as array-api-strict)."""
        return self._numpy_warnings

    def quiet(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which overflow and invalid operations raise no warning, for code
        that checks its results itself (``numpy.errstate``; a no-op where the library
        does not warn, as torch, JAX and CuPy do not)."""
        if not self._numpy_warnings:
            return contextlib.nullcontext()
        return np.errstate(over="ignore", invalid="ignore")

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which the library computes on this backend's device, the way
        portprop computes.

        A no-op for NumPy, JAX and array-api-strict.  CuPy's creation functions ignore
        ``device=`` and compute on the *current* device: the scope makes it the
        backend's.  torch records autograd history of tensors that require gradients:
        the scope turns that off (``torch.no_grad()``), since portprop computes every
        gradient itself.
        """
        return contextlib.nullcontext() if self._scope is None else self._scope()

    def run(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        """``fn(*args)`` within :meth:`scope`.

        Where the library needs no scope, ``fn`` is called directly: a ``with`` block
        costs about 0.5 us, which the few-microsecond steps of a small model notice.
        torch enters its scope only when autograd is on (not within :func:`portprop.fit`,
        which runs in the scope).
        """
        if self._scope is None:
            return fn(*args)
        with self._scope():
            return fn(*args)

    def read_only(self, x: Array) -> str:
        """Why the array ``x`` of this backend cannot be updated in place (a read-only
        NumPy array, a torch inference tensor, an expanded view), or ``""`` when it can.

        Always ``""`` where arrays are never updated in place (JAX: a new array replaces
        the old one).
        """
        if not self.writable or self._read_only is None:
            return ""
        return self._read_only(x)

    @property
    def writable_flag(self) -> Callable[[Array], bool] | None:
        """Whether an array of this backend is still writable, for libraries whose arrays
        may become read-only after they were made (NumPy's ``flags.writeable``): a cheap
        getter to repeat before each in-place update.  ``None`` where that cannot change
        during an array's life (checking :meth:`read_only` once is enough)."""
        return self._writable_flag if self.writable else None

    # ---- compiled steps (issue 13) ---------------------------------------------------

    def compile(
        self, fn: Callable[..., Any], /, *, donate: tuple[int, ...] = ()
    ) -> tuple[Callable[..., Any] | None, str]:
        """``(compiled, how)``: ``fn`` compiled by the library into one program, and how
        (``"jax.jit"``, ``"torch.compile(backend='inductor')"``); or ``(None, why)``
        where the library has no compiler, or none that works here.

        ``donate`` lists the positional arguments whose buffers the program may reuse
        for its outputs (JAX's ``donate_argnums``; ignored where arrays are updated in
        place).  Used by :func:`portprop.compile_step`.
        """
        if self._compiler is None:
            return None, f"{self.library} has no compiler that portprop uses"
        return self._compiler(fn, donate)

    # ---- fused optimizer steps (issue 13) ---------------------------------------------

    def multi_update(self, kind: str | None) -> Callable[..., Any] | None:
        """The library's kernel that applies the update of the optimizer ``kind``
        (``"sgd"``, ``"adam"``, ``"rmsprop"``) to a list of parameters at once, in place
        (``torch._foreach_*`` ops, CuPy elementwise kernels, NumPy ``out=``), or ``None``
        where the optimizer updates one parameter at a time (JAX, array-api-strict).
        The kernels and their arguments are described in :mod:`portprop.optim`."""
        if kind is None or not self.writable:
            return None
        return self._multi_update.get(kind)

    def scratch_like(self, x: Array) -> Array | None:
        """A buffer that :meth:`add_scaled` may use to stay allocation-free, or ``None``."""
        if not self._needs_scratch:
            return None
        return self.xp.empty_like(x)

    def add_scaled(
        self,
        y: Array,
        alpha: float,
        x: Array,
        scratch: Array | None = None,  # noqa: ARG002 - used by the library kernels
    ) -> Array:
        """``y + alpha * x``, written into ``y`` where the library allows it.

        Returns the result, which is ``y`` itself on NumPy, CuPy, torch and
        array-api-strict and a new array on JAX, whose arrays are immutable.  Always
        assign the result back.  ``alpha`` must be a Python float, so that the dtype of
        ``y`` never changes.  With a ``scratch`` buffer from :meth:`scratch_like`, NumPy
        and CuPy allocate nothing.  On NumPy, CuPy and torch the library's own kernel
        replaces this method on the instance.
        """
        if self.writable:
            y += alpha * x
            return y
        return y + alpha * x

    def sum(self, x: Array, /, *, axis: int | tuple[int, ...] | None = None) -> Array:
        """``xp.sum(x, axis=axis)`` of the standard, through a faster kernel where the
        library has one (``np.add.reduce`` on NumPy, which skips the Python wrapper of
        ``np.sum``: about 2 us a call, as much as the sum itself for a small batch)."""
        if self._sum is not None:
            return self._sum(x, axis=axis)
        return self.xp.sum(x, axis=axis)

    # ---- workspaces (issue 13) --------------------------------------------------------

    @property
    def has_workspaces(self) -> bool:
        """Whether modules may keep a step's buffers and write the next step into them
        (:meth:`portprop.Module.use_workspaces`): NumPy, torch and CuPy."""
        return self._matmul_into is not None and self._multiply_into is not None

    def matmul_into(self, a: Array, b: Array, out: Array) -> Array:
        """``a @ b`` written into ``out`` (of that shape and dtype), which it returns; the
        same kernel, and so the same bits, as ``a @ b``.  Only where
        :attr:`has_workspaces`."""
        assert self._matmul_into is not None
        return self._matmul_into(a, b, out)

    def multiply_into(self, a: Array, b: Array, out: Array) -> Array:
        """``a * b`` written into ``out``, which it returns.  Only where
        :attr:`has_workspaces`."""
        assert self._multiply_into is not None
        return self._multiply_into(a, b, out)

    # ---- random numbers -------------------------------------------------------------

    def generator(self, seed: int | None = None) -> BackendGenerator:
        """A new random generator that draws with this library's own generator, on this
        backend's device (see :class:`BackendGenerator`).

        Parameters
        ----------
        seed : int, optional
            In ``[0, 2**63)``.  ``None`` draws one from the global host generator, so
            that :func:`manual_seed` makes the result reproducible.
        """
        from portprop.backend import random  # noqa: PLC0415 - random.py imports this module

        make = random.HostGenerator if self._generator is None else self._generator
        return make(self, random.generator_seed(seed))


def dtype_name(dtype: Any) -> str:
    """The standard name (``"float32"``) of a dtype of any library, or of a name."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, str):
        return dtype
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    text = str(dtype)  # torch.float32, array_api_strict.float32
    return text.rsplit(".", 1)[-1]


def same_device(a: Any, b: Any) -> bool:
    """Whether two device objects are equal (``False`` where they cannot compare)."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a device type that cannot compare is not the same
        return False


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of any array API library."""
    return array_api_compat.is_array_api_obj(x)


def _describe(x: Any) -> str:
    if not is_array(x):
        return f"an object of type {type(x).__name__}"
    from portprop.backend._registry import backend_of  # noqa: PLC0415 - an error path

    try:
        b = backend_of(x)
    except Exception:  # noqa: BLE001 - describing must not fail
        return f"an array of type {type(x).__module__}.{type(x).__name__}"
    return f"{with_article(b.library)} array on {b.device!r}"


def with_article(word: str) -> str:
    """``word`` with its indefinite article: "a numpy", "an array_api_strict"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def array_to_host(x: Any) -> Any:
    """``x`` as a NumPy array, sharing memory where the library allows it."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().to("cpu").numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except Exception:  # noqa: BLE001 - fall back to the buffer protocol / __array__
        return np.asarray(x)
