"""What a registry entry is (:class:`Library`), and the probes a library module uses to
build its :class:`~portprop.backend._base.Backend`: importing the library with a clear
error, and reading which dtypes a device has.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portprop.backend._base import FLOAT_NAMES, Backend
from portprop.errors import BackendUnavailableError

__all__ = ["Library", "float_dtypes", "import_library", "narrow_ints", "probe_writable"]


def import_library(module: str, library: str, install: str) -> types.ModuleType:
    """Import ``module``, or raise :class:`BackendUnavailableError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"backend {library!r} is not usable: {exc}. Install it with: {install}"
        raise BackendUnavailableError(msg) from exc


def float_dtypes(xp: Any, device: Any) -> dict[str, Any]:
    """The floating dtypes portprop uses (float32, float64) that ``device`` has, by name."""
    info = xp.__array_namespace_info__()
    try:
        found = info.dtypes(kind="real floating", device=device)
    except TypeError:
        found = info.dtypes(kind="real floating")
    return {name: found[name] for name in FLOAT_NAMES if name in found}


def narrow_ints(xp: Any, device: Any) -> dict[str, str]:
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


def probe_writable(xp: Any, device: Any) -> bool:
    """Whether arrays of ``xp`` on ``device`` can be assigned to in place."""
    probe = xp.zeros((1,), device=device)
    try:
        probe[...] = 1
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class Library:
    """A registry entry: how to turn ``name[:device]`` into a :class:`Backend`.

    Attributes
    ----------
    name : str
        The name users select the library by (``"torch"``).
    install : str
        The command that installs it, shown when it cannot be imported.
    build : callable
        ``build(spec)`` returns the Backend of the device ``spec`` (the text after the
        colon of ``"torch:cuda:1"``, or ``None`` for the library's default device).
    matches : callable
        ``matches(xp)`` says whether the array API namespace ``xp`` is this library's.
    from_device : callable
        ``from_device(device)`` returns the Backend of one of the library's device objects.
    list_devices : callable
        ``list_devices()`` lists the devices that can be used here, as text.
    """

    name: str
    install: str
    build: Callable[[str | None], Backend]
    matches: Callable[[Any], bool]
    from_device: Callable[[Any], Backend]
    list_devices: Callable[[], list[str]]
