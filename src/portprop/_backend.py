"""Backends: the registry, the rules that pick one, and moving arrays between them.

This is the only module of portprop that imports an array library.  Everything
else receives a :class:`Backend` and computes through its ``xp`` namespace,
which follows the Python array API standard.

Which backend a call uses, in order of precedence:

1. an explicit ``backend=`` argument;
2. the arrays passed in (their library and device);
3. the innermost ``with portprop.use_backend(...)`` block;
4. the environment variable ``PORTPROP_BACKEND``, read when it is needed;
5. NumPy.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import array_api_compat
import numpy as np

from portprop.errors import (
    BackendUnavailableError,
    DtypeUnsupportedError,
    MixedBackendError,
    MixedDeviceError,
    UnknownBackendError,
)

__all__ = [
    "ENV_VAR",
    "Backend",
    "BackendGenerator",
    "BackendStatus",
    "asarray",
    "backend_of",
    "backends",
    "current_backend",
    "describe_backends",
    "get_backend",
    "manual_seed",
    "register_backend",
    "registered_backends",
    "unregister_backend",
    "use_backend",
]

ENV_VAR = "PORTPROP_BACKEND"
_FLOAT_NAMES = ("float32", "float64")

Array = Any
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------
# The Backend object
# --------------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        # The library's own kernel stands in for the generic method on this instance:
        # one Python call less for each update of each parameter, at every step.
        if self._add_scaled is not None:
            object.__setattr__(self, "add_scaled", self._add_scaled)

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
        ``None`` for float32).

        Raises
        ------
        DtypeUnsupportedError
            If this backend or device has no such dtype (float64 on JAX without x64, or on
            devices without float64).
        """
        name = dtype_name(dtype)
        if name not in _FLOAT_NAMES:
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
            return self._single_device or _same_device(x.device, self.device)
        if not _is_array(x):
            return False
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            return False
        return xp is self.xp and _same_device(array_api_compat.device(x), self.device)

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
        where = _describe(x)
        if not _is_array(x):
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

    def asarray(self, x: Any, *, dtype: Any = None, copy: bool | None = None) -> Array:
        """``x`` (an array of any supported library, a scalar or a nested sequence) as an
        array of this backend, on its device.

        Uses DLPack where the two libraries and devices allow it and goes through host
        memory otherwise.  Like ``asarray`` of the standard it may share memory with
        ``x`` unless ``copy=True``.
        """
        xp = self.xp
        target = None if dtype is None else self._any_dtype(dtype)
        if self.owns(x):
            y = x
        elif _is_array(x):
            name = dtype_name(x.dtype)
            if name in _FLOAT_NAMES and not self.supports(x.dtype):
                # e.g. float64 data for a device without float64: cast on the host first
                host = _array_to_host(x).astype(dtype_name(target or "float32"))
                with self.scope():
                    y = xp.asarray(host, device=self.device)
            elif name in self._narrow_ints:
                # e.g. int64 labels for a device without 64-bit integers
                with self.scope():
                    y = xp.asarray(self._narrowed(x, name), device=self.device)
            elif not hasattr(xp, name):
                # a dtype the library lacks (float16 on array-api-strict): cast on the host
                if target is None:
                    msg = (
                        f"x has dtype {name}, which backend {self.name!r} cannot hold; "
                        f"pass dtype= (such as 'float32') to convert it"
                    )
                    raise DtypeUnsupportedError(msg)
                host = _array_to_host(x).astype(dtype_name(target))
                with self.scope():
                    y = xp.asarray(host, device=self.device)
            else:
                y = self._import_array(x)
        else:
            with self.scope():
                y = xp.asarray(x, dtype=target, device=self.device)
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
        return np.array(_array_to_host(x), copy=True)

    def _import_array(self, x: Any) -> Array:
        xp = self.xp
        with contextlib.suppress(Exception), self.scope():
            y = xp.from_dlpack(x)
            if _same_device(array_api_compat.device(y), self.device):
                return y
            return array_api_compat.to_device(y, self.device)
        host = _array_to_host(x)
        with self.scope():
            return xp.asarray(host, device=self.device)

    def _narrowed(self, x: Array, name: str) -> Any:
        """A host copy of the integer array ``x`` (of dtype ``name``, which this device
        lacks) in the narrower integer dtype the device has, if every value fits."""
        host = _array_to_host(x)
        narrow = self._narrow_ints[name]
        bounds = np.iinfo(narrow)
        if host.size and (host.min() < bounds.min or host.max() > bounds.max):
            msg = (
                f"x holds {name} values from {host.min()} to {host.max()}, but backend "
                f"{self.name!r} has no {name} on device {self.device!r}: values must fit "
                f"{narrow}, [{bounds.min}, {bounds.max}]"
            )
            raise DtypeUnsupportedError(msg)
        return host.astype(narrow)

    def _any_dtype(self, dtype: Any) -> Any:
        name = dtype_name(dtype)
        if name in _FLOAT_NAMES:
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
        """A context in which the library computes on this backend's device.

        A no-op for every library but CuPy, whose creation functions ignore ``device=``
        and compute on the *current* device.
        """
        return contextlib.nullcontext() if self._scope is None else self._scope()

    def run(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        """``fn(*args)`` within :meth:`scope`.

        Where the library needs no scope, ``fn`` is called directly: a ``with`` block
        costs about 0.5 us, which the few-microsecond steps of a small model notice.
        """
        if self._scope is None:
            return fn(*args)
        with self._scope():
            return fn(*args)

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
        make = _HostGenerator if self._generator is None else self._generator
        return make(self, _generator_seed(seed))


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


def _same_device(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a device type that cannot compare is not the same
        return False


def _is_array(x: Any) -> bool:
    return array_api_compat.is_array_api_obj(x)


def _describe(x: Any) -> str:
    if not _is_array(x):
        return f"an object of type {type(x).__name__}"
    try:
        b = backend_of(x)
    except Exception:  # noqa: BLE001 - describing must not fail
        return f"an array of type {type(x).__module__}.{type(x).__name__}"
    return f"{_a(b.library)} array on {b.device!r}"


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a numpy", "an array_api_strict"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _array_to_host(x: Any) -> Any:
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


# --------------------------------------------------------------------------------------
# Libraries: how to build a Backend for each registered name
# --------------------------------------------------------------------------------------


def _import(module: str, library: str, install: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"backend {library!r} is not usable: {exc}. Install it with: {install}"
        raise BackendUnavailableError(msg) from exc


def _float_dtypes(xp: Any, device: Any) -> dict[str, Any]:
    info = xp.__array_namespace_info__()
    try:
        found = info.dtypes(kind="real floating", device=device)
    except TypeError:
        found = info.dtypes(kind="real floating")
    return {name: found[name] for name in _FLOAT_NAMES if name in found}


def _narrow_ints(xp: Any, device: Any) -> dict[str, str]:
    """The 64-bit integer dtypes the device lacks, each with the 32-bit one to use instead
    (array-api-strict's ``no_x64`` device; JAX without x64)."""
    info = xp.__array_namespace_info__()
    try:
        found = info.dtypes(kind="integral", device=device)
    except TypeError:
        found = info.dtypes(kind="integral")
    except Exception:  # noqa: BLE001 - a registered library without the kind: assume all
        return {}
    pairs = (("int64", "int32"), ("uint64", "uint32"))
    return {wide: narrow for wide, narrow in pairs if wide not in found and narrow in found}


def _probe_writable(xp: Any, device: Any) -> bool:
    probe = xp.zeros((1,), device=device)
    try:
        probe[...] = 1
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class _Library:
    """A registry entry: how to turn ``name[:device]`` into a :class:`Backend`."""

    name: str
    install: str
    build: Callable[[str | None], Backend]
    matches: Callable[[Any], bool]
    from_device: Callable[[Any], Backend]
    list_devices: Callable[[], list[str]]


def _numpy_add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    if alpha == 1.0:
        y += x
        return y
    if scratch is None:
        y += alpha * x
        return y
    # out= given by position: keyword parsing costs a NumPy call about 0.15 us
    np.multiply(x, alpha, scratch)
    np.add(y, scratch, y)
    return y


def _build_numpy(spec: str | None) -> Backend:
    if spec not in (None, "cpu"):
        msg = f"backend 'numpy' has only the device 'cpu', got {spec!r}"
        raise BackendUnavailableError(msg)
    return _numpy_backend()


def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xp  # noqa: PLC0415 - loaded on first use

    return Backend(
        name="numpy",
        library="numpy",
        xp=xp,
        device="cpu",
        writable=True,
        _array_types=(np.ndarray,),
        _single_device=True,
        _float_dtypes=_float_dtypes(xp, "cpu"),
        _add_scaled=_numpy_add_scaled,
        _sum=np.add.reduce,
        _needs_scratch=True,
    )


def _torch_add_scaled(
    y: Array,
    alpha: float,
    x: Array,
    scratch: Array | None = None,  # noqa: ARG001
) -> Array:
    return y.add_(x, alpha=alpha)


def _build_torch(spec: str | None) -> Backend:
    torch = _import("torch", "torch", "pip install 'portprop[torch]'")
    try:
        device = torch.device(spec) if spec else torch.get_default_device()
    except (RuntimeError, TypeError, ValueError) as exc:
        msg = f"'torch:{spec}' does not name a torch device: {exc}"
        raise UnknownBackendError(msg) from None
    return _torch_from_device(device)


def _torch_from_device(device: Any) -> Backend:
    import array_api_compat.torch as xp  # noqa: PLC0415
    import torch  # noqa: PLC0415

    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            msg = (
                "backend 'torch:cuda' is not usable: torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Install a CUDA "
                "build of torch on a machine with an NVIDIA GPU: pip install torch"
            )
            raise BackendUnavailableError(msg)
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            msg = (
                f"backend 'torch:cuda:{index}' is not usable: torch sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
            raise BackendUnavailableError(msg)
        device = torch.device("cuda", index)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        msg = "backend 'torch:mps' is not usable: torch.backends.mps.is_available() is False"
        raise BackendUnavailableError(msg)
    return Backend(
        name=f"torch:{device}",
        library="torch",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(torch.Tensor,),
        _float_dtypes=_float_dtypes(xp, device),
        _narrow_ints=_narrow_ints(xp, device),
        _add_scaled=_torch_add_scaled,
        _numpy_warnings=False,
        _generator=_TorchGenerator,
    )


def _torch_devices() -> list[str]:
    import torch  # noqa: PLC0415

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def _cupy_add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    import cupy  # noqa: PLC0415

    if alpha == 1.0:
        y += x
        return y
    if scratch is None:
        y += alpha * x
        return y
    cupy.multiply(x, alpha, out=scratch)
    cupy.add(y, scratch, out=y)
    return y


def _build_cupy(spec: str | None) -> Backend:
    cupy = _import("cupy", "cupy", "pip install 'portprop[cupy]' (needs an NVIDIA GPU)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError and driver errors alike
        msg = f"backend 'cupy' is not usable: no CUDA device ({exc})"
        raise BackendUnavailableError(msg) from None
    try:
        index = cupy.cuda.runtime.getDevice() if spec is None else int(spec)
    except ValueError:
        msg = f"'cupy:{spec}' does not name a CUDA device: expected 'cupy:<index>'"
        raise UnknownBackendError(msg) from None
    if not 0 <= index < count:
        msg = f"backend 'cupy:{index}' is not usable: CuPy sees {count} CUDA device(s)"
        raise BackendUnavailableError(msg)
    return _cupy_from_device(cupy.cuda.Device(index))


def _cupy_from_device(device: Any) -> Backend:
    import array_api_compat.cupy as xp  # noqa: PLC0415
    import cupy  # noqa: PLC0415

    return Backend(
        name=f"cupy:{device.id}",
        library="cupy",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(cupy.ndarray,),
        _float_dtypes=_float_dtypes(xp, device),
        _narrow_ints=_narrow_ints(xp, device),
        _add_scaled=_cupy_add_scaled,
        _numpy_warnings=False,
        _needs_scratch=True,
        # array-api-compat's CuPy creation functions ignore ``device=`` and use the
        # current device, so every call of a model runs inside the device's context.
        _scope=lambda: cupy.cuda.Device(device.id),
        _generator=_CupyGenerator,
    )


def _cupy_devices() -> list[str]:
    import cupy  # noqa: PLC0415

    return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]


def _build_jax(spec: str | None) -> Backend:
    jax = _import("jax", "jax", "pip install 'portprop[jax]'")
    devices = jax.devices()
    if spec is None:
        return _jax_from_device(devices[0])
    try:
        index = int(spec)
    except ValueError:
        msg = f"'jax:{spec}' does not name a JAX device: expected 'jax:<index>'"
        raise UnknownBackendError(msg) from None
    if not 0 <= index < len(devices):
        found = ", ".join(str(d) for d in devices)
        msg = (
            f"backend 'jax:{index}' is not usable: JAX sees {len(devices)} device(s) "
            f"({found}); the index must be below {len(devices)}"
        )
        raise BackendUnavailableError(msg)
    return _jax_from_device(devices[index])


def _jax_from_device(device: Any) -> Backend:
    import jax  # noqa: PLC0415
    import jax.numpy as xp  # noqa: PLC0415

    default = jax.devices()[0]
    name = "jax" if device == default else f"jax:{jax.devices().index(device)}"
    return Backend(
        name=name,
        library="jax",
        xp=xp,
        device=device,
        writable=False,
        _numpy_warnings=False,
        _array_types=(type(xp.zeros(0)),),
        _float_dtypes=_float_dtypes(xp, device),
        _narrow_ints=_narrow_ints(xp, device),
        _float64_hint=(
            "JAX keeps float64 off by default: set JAX_ENABLE_X64=1 in the environment, or call "
            "jax.config.update('jax_enable_x64', True) before creating arrays."
        ),
        _generator=_JaxGenerator,
    )


def _jax_devices() -> list[str]:
    import jax  # noqa: PLC0415

    return [str(d) for d in jax.devices()]


def _build_strict(spec: str | None) -> Backend:
    xp = _import("array_api_strict", "array_api_strict", "pip install 'portprop[strict]'")
    try:
        device = xp.Device(spec or "CPU_DEVICE")
    except ValueError:
        names = ", ".join(repr(d._device) for d in xp.__array_namespace_info__().devices())
        msg = f"'array_api_strict:{spec}' does not name a test device; they are {names}"
        raise UnknownBackendError(msg) from None
    return _strict_from_device(device)


def _strict_from_device(device: Any) -> Backend:
    import array_api_strict as xp  # noqa: PLC0415

    label = str(device._device)
    name = "array_api_strict" if label == "CPU_DEVICE" else f"array_api_strict:{label}"
    return Backend(
        name=name,
        library="array_api_strict",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(type(xp.zeros(0, device=device)),),
        _float_dtypes=_float_dtypes(xp, device),
        _narrow_ints=_narrow_ints(xp, device),
    )


def _strict_devices() -> list[str]:
    import array_api_strict as xp  # noqa: PLC0415

    return [str(d._device) for d in xp.__array_namespace_info__().devices()]


_REGISTRY: dict[str, _Library] = {}
_BACKEND_CACHE: dict[str, Backend] = {}


def _register_builtins() -> None:
    _REGISTRY["numpy"] = _Library(
        name="numpy",
        install="pip install numpy",
        build=_build_numpy,
        matches=array_api_compat.is_numpy_namespace,
        from_device=lambda _device: _numpy_backend(),
        list_devices=lambda: ["cpu"],
    )
    _REGISTRY["torch"] = _Library(
        name="torch",
        install="pip install 'portprop[torch]'",
        build=_build_torch,
        matches=array_api_compat.is_torch_namespace,
        from_device=_torch_from_device,
        list_devices=_torch_devices,
    )
    _REGISTRY["cupy"] = _Library(
        name="cupy",
        install="pip install 'portprop[cupy]'",
        build=_build_cupy,
        matches=array_api_compat.is_cupy_namespace,
        from_device=_cupy_from_device,
        list_devices=_cupy_devices,
    )
    _REGISTRY["jax"] = _Library(
        name="jax",
        install="pip install 'portprop[jax]'",
        build=_build_jax,
        matches=array_api_compat.is_jax_namespace,
        from_device=_jax_from_device,
        list_devices=_jax_devices,
    )
    _REGISTRY["array_api_strict"] = _Library(
        name="array_api_strict",
        install="pip install 'portprop[strict]'",
        build=_build_strict,
        matches=array_api_compat.is_array_api_strict_namespace,
        from_device=_strict_from_device,
        list_devices=_strict_devices,
    )


_register_builtins()
_BUILTIN_NAMES = frozenset(_REGISTRY)


def register_backend(
    name: str,
    namespace: types.ModuleType | Callable[[], Any],
    *,
    install: str = "",
    replace: bool = False,
) -> None:
    """Register an array API namespace as a portprop backend.

    Parameters
    ----------
    name : str
        The name users select it by (``get_backend(name)``, ``PORTPROP_BACKEND=name``).
        ``name:DEVICE`` then picks a device whose ``str`` is ``DEVICE``, among the
        namespace's ``__array_namespace_info__().devices()``.
    namespace : module or callable
        The namespace itself, or a function without arguments that imports and returns
        it (so that registering costs nothing until the backend is used).  Arrays must
        return it from ``__array_namespace__()``.
    install : str, optional
        The command that installs the library, shown when it cannot be imported.
    replace : bool, optional
        Allow replacing a registered name other than the built-in ones.
    """
    if not name or ":" in name:
        msg = f"name must be a non-empty string without ':', got {name!r}"
        raise ValueError(msg)
    if name in _BUILTIN_NAMES or (name in _REGISTRY and not replace):
        msg = f"a backend named {name!r} is already registered"
        raise ValueError(msg)

    def load() -> Any:
        if isinstance(namespace, types.ModuleType):
            return namespace
        try:
            return namespace()
        except ImportError as exc:
            msg = f"backend {name!r} is not usable: {exc}. Install it with: {install or '?'}"
            raise BackendUnavailableError(msg) from exc

    def from_device(device: Any) -> Backend:
        xp = load()
        label = str(device)
        default = xp.__array_namespace_info__().default_device()
        return Backend(
            name=name if _same_device(device, default) else f"{name}:{label}",
            library=name,
            xp=xp,
            device=device,
            writable=_probe_writable(xp, device),
            _float_dtypes=_float_dtypes(xp, device),
            _narrow_ints=_narrow_ints(xp, device),
        )

    def build(spec: str | None) -> Backend:
        xp = load()
        info = xp.__array_namespace_info__()
        if spec is None:
            return from_device(info.default_device())
        for device in info.devices():
            if spec in (str(device), _device_label(device)):
                return from_device(device)
        labels = ", ".join(repr(str(d)) for d in info.devices())
        msg = f"{name}:{spec} does not name a device of backend {name!r}; it has {labels}"
        raise UnknownBackendError(msg)

    def matches(xp: Any) -> bool:
        try:
            return xp is load()
        except BackendUnavailableError:
            return False

    def list_devices() -> list[str]:
        return [str(d) for d in load().__array_namespace_info__().devices()]

    _REGISTRY[name] = _Library(name, install, build, matches, from_device, list_devices)
    for key in [k for k, b in _BACKEND_CACHE.items() if b.library == name]:
        del _BACKEND_CACHE[key]


def unregister_backend(name: str) -> None:
    """Remove a backend added by :func:`register_backend` (built-in ones stay)."""
    if name in _BUILTIN_NAMES:
        msg = f"the built-in backend {name!r} cannot be unregistered"
        raise ValueError(msg)
    if name not in _REGISTRY:
        raise UnknownBackendError(_unknown_message(name))
    del _REGISTRY[name]
    for key in [k for k, b in _BACKEND_CACHE.items() if b.library == name]:
        del _BACKEND_CACHE[key]


def registered_backends() -> list[str]:
    """The registered library names, built-in ones first."""
    return list(_REGISTRY)


def _unknown_message(name: str) -> str:
    known = ", ".join(repr(n) for n in _REGISTRY)
    return (
        f"unknown backend {name!r}; registered backends are {known} "
        "(a device may follow a colon: 'torch:cuda:1', 'cupy:1', 'array_api_strict:device1')"
    )


def _by_name(name: str) -> Backend:
    cached = _BACKEND_CACHE.get(name)
    if cached is not None:
        return cached
    library, _, spec = name.partition(":")
    entry = _REGISTRY.get(library.strip())
    if entry is None:
        raise UnknownBackendError(_unknown_message(name))
    backend = entry.build(spec.strip() or None)
    _BACKEND_CACHE[name] = backend
    _BACKEND_CACHE.setdefault(backend.name, backend)
    return backend


def _coerce(backend: object) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return _by_name(backend)
    msg = f"backend must be a name such as 'numpy' or 'torch:cuda' or a Backend, got {backend!r}"
    raise TypeError(msg)


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------

_CONTEXT: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "portprop_backend", default=None
)


@contextlib.contextmanager
def use_backend(backend: Backend | str) -> Iterator[Backend]:
    """Make ``backend`` the current one inside a ``with`` block.

    >>> import portprop as pp
    >>> with pp.use_backend("numpy") as b:
    ...     print(b.name)
    numpy
    """
    resolved = _coerce(backend)
    token = _CONTEXT.set(resolved)
    try:
        yield resolved
    finally:
        _CONTEXT.reset(token)


def current_backend() -> Backend:
    """The backend used when neither ``backend=`` nor arrays decide: the innermost
    :func:`use_backend`, else ``PORTPROP_BACKEND``, else NumPy."""
    scoped = _CONTEXT.get()
    if scoped is not None:
        return scoped
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return _by_name(env)
        except UnknownBackendError as exc:
            msg = f"environment variable {ENV_VAR}={env!r}: {exc}"
            raise UnknownBackendError(msg) from None
        except BackendUnavailableError as exc:
            msg = f"environment variable {ENV_VAR}={env!r}: {exc}"
            raise BackendUnavailableError(msg) from None
    return _by_name("numpy")


def backend_of(*arrays: Any, names: tuple[str, ...] | None = None) -> Backend:
    """The backend the arrays live on; every array must share one library and device.

    Parameters
    ----------
    *arrays
        Arrays of any registered library.
    names : tuple of str, optional
        The argument names of ``arrays``, used in error messages.

    Raises
    ------
    MixedBackendError
        If the arrays come from two libraries.
    MixedDeviceError
        If they live on two devices of one library.
    """
    if not arrays:
        msg = "backend_of() needs at least one array"
        raise ValueError(msg)
    labels = names or tuple(f"array {i}" for i in range(len(arrays)))
    found: list[tuple[str, Any, Any]] = []
    for label, x in zip(labels, arrays, strict=True):
        try:
            xp = array_api_compat.array_namespace(x)
        except TypeError:
            msg = f"{label} must be an array, got an object of type {type(x).__name__}"
            raise TypeError(msg) from None
        found.append((label, xp, array_api_compat.device(x)))
    first_label, first_xp, first_device = found[0]
    for label, xp, device in found[1:]:
        if xp is not first_xp:
            msg = (
                f"{first_label} is {_a(_library_of(first_xp))} array on {first_device!r} but "
                f"{label} is {_a(_library_of(xp))} array on {device!r}; arrays of one call must "
                "share one library: move one with portprop.asarray(..., backend=...)"
            )
            raise MixedBackendError(msg)
        if not _same_device(device, first_device):
            msg = (
                f"{first_label} is on device {first_device!r} but {label} is on device "
                f"{device!r} (both {_library_of(xp)}); move one with portprop.asarray(...)"
            )
            raise MixedDeviceError(msg)
    library = _library_of(first_xp)
    key = f"{library}@{first_device!r}"
    cached = _BACKEND_CACHE.get(key)
    if cached is None:
        cached = _REGISTRY[library].from_device(first_device)
        _BACKEND_CACHE[key] = cached
    return cached


def _library_of(xp: Any) -> str:
    for entry in _REGISTRY.values():
        if entry.matches(xp):
            return entry.name
    known = ", ".join(_REGISTRY)
    msg = (
        f"arrays of namespace {getattr(xp, '__name__', xp)!r} belong to no registered backend "
        f"({known}); register it with portprop.register_backend()"
    )
    raise UnknownBackendError(msg)


def get_backend(*arrays: Any, backend: Backend | str | None = None) -> Backend:
    """The backend a call uses.

    In order of precedence: ``backend`` when given; else the backend of ``arrays``
    when any are given; else :func:`current_backend` (``use_backend``, then
    ``PORTPROP_BACKEND``, then NumPy).
    """
    if backend is not None:
        return _coerce(backend)
    for a in arrays:
        if isinstance(a, str | Backend):
            msg = f"get_backend() takes arrays positionally; pass a name as backend={a!r}"
            raise TypeError(msg)
    present = [a for a in arrays if a is not None and _is_array(a)]
    if present:
        return backend_of(*present)
    return current_backend()


def asarray(
    x: Any,
    *,
    dtype: Any = None,
    backend: Backend | str | None = None,
    device: Any = None,
    copy: bool | None = None,
) -> Array:
    """Move ``x`` to a backend and device (the current backend when neither is given).

    Uses DLPack where possible, host memory otherwise.  ``device`` picks a device of
    the backend's library (``asarray(x, backend="torch", device="cuda:1")``).
    """
    target = current_backend() if backend is None else _coerce(backend)
    if device is not None:
        target = _by_name(f"{target.library}:{_device_label(device)}")
    return target.asarray(x, dtype=dtype, copy=copy)


def _device_label(device: Any) -> str:
    label = getattr(device, "_device", None)  # array_api_strict.Device
    if isinstance(label, str):
        return label
    index = getattr(device, "id", None)  # cupy.cuda.Device
    if isinstance(index, int):
        return str(index)
    return str(device)


def resolve(
    backend: Backend | str | None = None, device: Any = None, dtype: Any = None
) -> tuple[Backend, Any]:
    """The backend and floating dtype that factory keywords ``backend=``, ``device=``,
    ``dtype=`` ask for, checked (used by every layer's constructor)."""
    target = current_backend() if backend is None else _coerce(backend)
    if device is not None:
        target = _by_name(f"{target.library}:{_device_label(device)}")
    return target, target.float_dtype(dtype)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendStatus:
    """Whether a registered backend can run here, and on which devices."""

    name: str
    available: bool
    reason: str
    devices: tuple[str, ...]
    install: str

    def __str__(self) -> str:
        state = "available" if self.available else self.reason
        devices = f" [{', '.join(self.devices)}]" if self.devices else ""
        return f"{self.name}: {state}{devices}"


def backends() -> list[BackendStatus]:
    """Every registered backend, ``available`` or the reason it is not."""
    report = []
    for entry in _REGISTRY.values():
        try:
            _by_name(entry.name)
            devices = tuple(entry.list_devices())
        except (BackendUnavailableError, UnknownBackendError) as exc:
            report.append(BackendStatus(entry.name, False, str(exc), (), entry.install))
            continue
        report.append(BackendStatus(entry.name, True, "available", devices, entry.install))
    return report


def describe_backends() -> str:
    """:func:`backends` as a table (``python -m portprop backends`` prints it)."""
    rows = backends()
    width = max(len(r.name) for r in rows)
    lines = [f"{'backend':<{width}}  status"]
    for r in rows:
        state = "available" if r.available else f"unavailable: {r.reason}"
        devices = f"  (devices: {', '.join(r.devices)})" if r.devices else ""
        lines.append(f"{r.name:<{width}}  {state}{devices}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Host random numbers: initial weights are drawn here, then moved, so that one seed
# gives bit-identical weights on every backend.
# --------------------------------------------------------------------------------------

_HOST_RNG: list[np.random.Generator] = [np.random.default_rng(0)]


def manual_seed(seed: int) -> None:
    """Seed the generator that initial weights and generated data are drawn from."""
    _HOST_RNG[0] = host_generator(seed)


def host_generator(seed: int | None = None) -> np.random.Generator:
    """A host random generator: the global one (``seed=None``) or a fresh seeded one."""
    if seed is None:
        return _HOST_RNG[0]
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        msg = f"seed must be an int, got {seed!r}"
        raise TypeError(msg)
    return np.random.default_rng(int(seed))


# --------------------------------------------------------------------------------------
# Backend random numbers: each library's own generator, seeded, with a state that
# checkpoints can save and restore (dropout masks are drawn here).
# --------------------------------------------------------------------------------------

_SEED_BOUND = 2**63  # every library below takes a seed in [0, 2**63)


def _generator_seed(seed: int | None) -> int:
    if seed is None:
        return int(host_generator(None).integers(_SEED_BOUND))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        msg = f"seed must be an int or None, got {seed!r}"
        raise TypeError(msg)
    if not 0 <= seed < _SEED_BOUND:
        msg = f"seed must be in [0, 2**63), got {seed!r}"
        raise ValueError(msg)
    return int(seed)


class BackendGenerator:
    """A seeded random generator that draws on one backend's device.

    Make one with :meth:`Backend.generator`.  Each library draws with its own generator:

    ========================================  ==============================================
    backend                                   generator; what :meth:`get_state` holds
    ========================================  ==============================================
    NumPy, array-api-strict, registered ones  ``numpy.random.Generator(PCG64)`` on the host,
                                              then moved; the bit generator's state dict
    torch                                     ``torch.Generator`` on the device; its bytes
    JAX                                       a ``jax.random.key``, split at every draw;
                                              the key's data
    CuPy                                      a host PCG64 that seeds one Philox generator
                                              on the GPU per draw; the PCG64 state
    ========================================  ==============================================

    The same seed gives the same draws on one backend; NumPy, array-api-strict and
    registered backends share one generator kind, so they also agree with each other.

    Attributes
    ----------
    backend : Backend
        Where the draws live.
    seed : int
        The seed the generator started from.
    """

    kind = ""  # the "generator" entry of the state: states load only into the same kind

    def __init__(self, backend: Backend, seed: int) -> None:
        self.backend = backend
        self.seed = seed

    def uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Independent draws, uniform on ``[0, 1)``, of ``shape`` and floating ``dtype``
        (a name or a dtype; ``float32`` by default), on the backend's device."""
        shape = tuple(int(n) for n in shape)
        target = self.backend.float_dtype(dtype)
        with self.backend.scope():
            return self._uniform(shape, target)

    def bernoulli(self, shape: tuple[int, ...], prob: float, dtype: Any = None) -> Array:
        """A boolean array of ``shape``, each element ``True`` with probability ``prob``
        independently: ``uniform(shape, dtype) < prob``."""
        return self.uniform(shape, dtype) < prob

    def get_state(self) -> dict[str, Any]:
        """The state as plain Python data (JSON-serializable): ``{"generator": kind,
        "seed": int, "state": ...}``.  :meth:`set_state` of it reproduces the next draws."""
        return {"generator": self.kind, "seed": self.seed, "state": self._get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`get_state` of a generator of the same kind."""
        if not isinstance(state, Mapping) or not {"generator", "seed", "state"} <= state.keys():
            msg = (
                "state must be a dict from BackendGenerator.get_state() with keys "
                f"'generator', 'seed' and 'state', got {type(state).__name__}"
            )
            raise TypeError(msg)
        if state["generator"] != self.kind:
            msg = (
                f"cannot load the state of a {state['generator']!r} generator into the "
                f"{self.kind!r} generator of backend {self.backend.name!r}"
            )
            raise ValueError(msg)
        seed = _generator_seed(state["seed"])
        self._set_state(state["state"])
        self.seed = seed

    def __deepcopy__(self, memo: dict[int, Any]) -> BackendGenerator:
        clone = type(self)(self.backend, self.seed)
        clone.set_state(self.get_state())
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend.name!r}, seed={self.seed})"

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        raise NotImplementedError

    def _get_state(self) -> Any:
        raise NotImplementedError

    def _set_state(self, state: Any) -> None:
        raise NotImplementedError


class _HostGenerator(BackendGenerator):
    """NumPy's PCG64 on the host; the draws are moved to the backend (NumPy keeps them).

    The array API standard has no random numbers, so this serves array-api-strict and
    every registered backend, and NumPy itself.
    """

    kind = "numpy"

    def __init__(self, backend: Backend, seed: int) -> None:
        super().__init__(backend, seed)
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        host = self._rng.random(shape, dtype=np.dtype(dtype_name(dtype)))
        if self.backend.owns(host):
            return host
        return self.backend.from_host(host, dtype)

    def _get_state(self) -> Any:
        return self._rng.bit_generator.state

    def _set_state(self, state: Any) -> None:
        self._rng.bit_generator.state = dict(state)


class _TorchGenerator(BackendGenerator):
    """A ``torch.Generator`` on the backend's device; its state is a list of byte values."""

    kind = "torch"

    def __init__(self, backend: Backend, seed: int) -> None:
        import torch  # noqa: PLC0415

        super().__init__(backend, seed)
        self._gen = torch.Generator(device=backend.device)
        self._gen.manual_seed(seed)

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import torch  # noqa: PLC0415

        return torch.rand(shape, generator=self._gen, dtype=dtype, device=self.backend.device)

    def _get_state(self) -> Any:
        return self._gen.get_state().tolist()

    def _set_state(self, state: Any) -> None:
        import torch  # noqa: PLC0415

        # torch takes the state of a generator on any device as a CPU byte tensor
        self._gen.set_state(torch.tensor(list(state), dtype=torch.uint8, device="cpu"))


class _JaxGenerator(BackendGenerator):
    """An explicit JAX key, split at every draw; its state is the key's data."""

    kind = "jax"

    def __init__(self, backend: Backend, seed: int) -> None:
        import jax  # noqa: PLC0415

        super().__init__(backend, seed)
        # jax.random.key keeps 32 bits of the seed unless x64 is on: fold the high bits
        # in, so that every seed gives its own key, the same with x64 on or off.
        key = jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), seed >> 32)
        self._key = jax.device_put(key, backend.device)

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import jax  # noqa: PLC0415

        self._key, draw = jax.random.split(self._key)
        return jax.random.uniform(draw, shape, dtype=dtype)

    def _get_state(self) -> Any:
        import jax  # noqa: PLC0415

        return [int(v) for v in np.asarray(jax.random.key_data(self._key)).reshape(-1)]

    def _set_state(self, state: Any) -> None:
        import jax  # noqa: PLC0415

        data = jax.numpy.asarray(state, dtype=jax.numpy.uint32, device=self.backend.device)
        self._key = jax.random.wrap_key_data(data)


class _CupyGenerator(BackendGenerator):
    """Draws on the GPU with a Philox generator seeded afresh from a host PCG64 at every
    draw, so that the whole state is the host generator's (cuRAND's is not readable)."""

    kind = "cupy"

    def __init__(self, backend: Backend, seed: int) -> None:
        super().__init__(backend, seed)
        self._seeds = np.random.Generator(np.random.PCG64(seed))

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import cupy  # noqa: PLC0415
        from cupy.cuda import curand  # noqa: PLC0415

        draw_seed = self._seeds.integers(_SEED_BOUND, dtype=np.uint64)
        philox = cupy.random.RandomState(draw_seed, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
        return philox.random_sample(shape, dtype=dtype)

    def _get_state(self) -> Any:
        return self._seeds.bit_generator.state

    def _set_state(self, state: Any) -> None:
        self._seeds.bit_generator.state = dict(state)
