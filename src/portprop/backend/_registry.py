"""The registry: which libraries portprop knows, and turning a name (``"torch:cuda:1"``)
or an array into the :class:`~portprop.backend._base.Backend` it means.

Each built-in library is one module of this package that defines ``LIBRARY``, a
:class:`~portprop.backend._library.Library`; :data:`BUILTIN_MODULES` lists them, and
that list is the only place a new built-in library is added.  Users add their own
namespaces with :func:`register_backend`.  Backends are built once and cached.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat

from portprop.backend._base import Backend, same_device, with_article
from portprop.backend._library import Library, float_dtypes, narrow_ints, probe_writable
from portprop.backend.random import HostGenerator
from portprop.errors import (
    BackendUnavailableError,
    MixedBackendError,
    MixedDeviceError,
    UnknownBackendError,
)

__all__ = [
    "BUILTIN_MODULES",
    "BackendStatus",
    "backend_of",
    "backends",
    "by_name",
    "coerce",
    "describe_backends",
    "device_label",
    "register_backend",
    "register_library",
    "registered_backends",
    "unregister_backend",
]

# The built-in libraries, in the order they are listed: each a module of this package.
BUILTIN_MODULES = ("numpy", "torch", "cupy", "jax", "array_api_strict")

_REGISTRY: dict[str, Library] = {}
_BACKEND_CACHE: dict[str, Backend] = {}


def _forget(library: str) -> None:
    """Drop the cached backends of ``library`` (after it is registered anew or removed)."""
    for key in [k for k, b in _BACKEND_CACHE.items() if b.library == library]:
        del _BACKEND_CACHE[key]


def register_library(library: Library, *, replace: bool = False) -> None:
    """Add a registry entry: the one way a library, built-in or not, becomes a backend.

    Parameters
    ----------
    library : Library
        How to build the library's backends (see :class:`~portprop.backend.Library`).
    replace : bool, optional
        Allow replacing a registered name other than the built-in ones.
    """
    _check_new_name(library.name, replace=replace)
    _REGISTRY[library.name] = library
    _forget(library.name)


def _check_new_name(name: Any, *, replace: bool) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        msg = f"name must be a non-empty string without ':', got {name!r}"
        raise ValueError(msg)
    if name in _BUILTIN_NAMES or (name in _REGISTRY and not replace):
        msg = f"a backend named {name!r} is already registered"
        raise ValueError(msg)


_BUILTIN_NAMES: frozenset[str] = frozenset()
for _module in BUILTIN_MODULES:
    register_library(importlib.import_module(f"portprop.backend.{_module}").LIBRARY)
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
    _check_new_name(name, replace=replace)

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
            name=name if same_device(device, default) else f"{name}:{label}",
            library=name,
            xp=xp,
            device=device,
            writable=probe_writable(xp, device),
            _float_dtypes=float_dtypes(xp, device),
            _narrow_ints=narrow_ints(xp, device),
            _generator=HostGenerator,
        )

    def build(spec: str | None) -> Backend:
        xp = load()
        info = xp.__array_namespace_info__()
        if spec is None:
            return from_device(info.default_device())
        for device in info.devices():
            if spec in (str(device), device_label(device)):
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

    register_library(
        Library(name, install, build, matches, from_device, list_devices), replace=replace
    )


def unregister_backend(name: str) -> None:
    """Remove a backend added by :func:`register_backend` (built-in ones stay)."""
    if name in _BUILTIN_NAMES:
        msg = f"the built-in backend {name!r} cannot be unregistered"
        raise ValueError(msg)
    if name not in _REGISTRY:
        raise UnknownBackendError(_unknown_message(name))
    del _REGISTRY[name]
    _forget(name)


def registered_backends() -> list[str]:
    """The registered library names, built-in ones first."""
    return list(_REGISTRY)


def _unknown_message(name: str) -> str:
    known = ", ".join(repr(n) for n in _REGISTRY)
    return (
        f"unknown backend {name!r}; registered backends are {known} "
        "(a device may follow a colon: 'torch:cuda:1', 'cupy:1', 'array_api_strict:device1')"
    )


def by_name(name: str) -> Backend:
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


def coerce(backend: object) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return by_name(backend)
    msg = f"backend must be a name such as 'numpy' or 'torch:cuda' or a Backend, got {backend!r}"
    raise TypeError(msg)


# --------------------------------------------------------------------------------------
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
                f"{first_label} is {with_article(_library_of(first_xp))} array on {first_device!r} but "
                f"{label} is {with_article(_library_of(xp))} array on {device!r}; arrays of one call must "
                "share one library: move one with portprop.asarray(..., backend=...)"
            )
            raise MixedBackendError(msg)
        if not same_device(device, first_device):
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


def device_label(device: Any) -> str:
    label = getattr(device, "_device", None)  # array_api_strict.Device
    if isinstance(label, str):
        return label
    index = getattr(device, "id", None)  # cupy.cuda.Device
    if isinstance(index, int):
        return str(index)
    return str(device)


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
            by_name(entry.name)
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
