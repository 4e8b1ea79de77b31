"""The array-api-strict backend: the standard and nothing else, on its test devices.
The suite passing here is what shows that portprop uses only the standard."""

from __future__ import annotations

from typing import Any

import array_api_compat

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import HostGenerator
from portprop.errors import UnknownBackendError

__all__ = ["LIBRARY", "build", "devices", "from_device", "read_only", "writable"]


def build(spec: str | None) -> Backend:
    """The array-api-strict backend of test device ``spec``, or of ``CPU_DEVICE``."""
    xp = import_library("array_api_strict", "array_api_strict", "pip install 'portprop[strict]'")
    try:
        device = xp.Device(spec or "CPU_DEVICE")
    except ValueError:
        names = ", ".join(repr(d._device) for d in xp.__array_namespace_info__().devices())
        msg = f"'array_api_strict:{spec}' does not name a test device; they are {names}"
        raise UnknownBackendError(msg) from None
    return from_device(device)


def read_only(x: Array) -> str:
    """Why ``x`` cannot be updated in place (``""`` when it can): an array-api-strict
    array wraps a NumPy array, which may be read-only (one made from a read-only NumPy
    array without a copy)."""
    inner = getattr(x, "_array", None)
    flags = getattr(inner, "flags", None)
    if flags is None or flags.writeable:
        return ""
    return "an array_api_strict array over read-only NumPy memory"


def writable(x: Array) -> bool:
    """Whether ``x`` can (still) be updated in place: :func:`read_only` as a flag."""
    return not read_only(x)


def from_device(device: Any) -> Backend:
    """The array-api-strict backend of ``device``."""
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
        _float_dtypes=float_dtypes(xp, device),
        _narrow_ints=narrow_ints(xp, device),
        _generator=HostGenerator,
        _read_only=read_only,
        _writable_flag=writable,
    )


def devices() -> list[str]:
    """array-api-strict's test devices."""
    import array_api_strict as xp  # noqa: PLC0415

    return [str(d._device) for d in xp.__array_namespace_info__().devices()]


LIBRARY = Library(
    name="array_api_strict",
    install="pip install 'portprop[strict]'",
    build=build,
    matches=array_api_compat.is_array_api_strict_namespace,
    from_device=from_device,
    list_devices=devices,
)
