"""The array-api-strict backend: the standard and nothing else, on its test devices.
The suite passing here is what shows that portprop uses only the standard."""

from __future__ import annotations

from typing import Any

import array_api_compat

from portprop.backend._base import Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import HostGenerator
from portprop.errors import UnknownBackendError

__all__ = ["LIBRARY", "build", "devices", "from_device"]


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
