"""The NumPy backend (CPU): array-api-compat's NumPy namespace, with NumPy's own kernels
for the in-place update (``out=`` by position) and the sum (``np.add.reduce``)."""

from __future__ import annotations

import operator

import array_api_compat
import numpy as np

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes
from portprop.backend.random import HostGenerator
from portprop.errors import BackendUnavailableError

__all__ = ["LIBRARY", "add_scaled", "build", "read_only"]


def add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    """``y += alpha * x`` in place, through ``scratch`` without allocating when given."""
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


def read_only(x: Array) -> str:
    """Why ``x`` cannot be updated in place (``""`` when it can): NumPy marks views of
    read-only memory (``np.broadcast_to``, a ``bytes`` buffer, a JAX array seen through
    ``np.asarray``) read-only, and anyone may set ``x.flags.writeable = False``."""
    return "" if x.flags.writeable else "a read-only NumPy array (its flags.writeable is False)"


def build(spec: str | None) -> Backend:
    """The NumPy backend; ``spec`` may only be ``"cpu"``."""
    if spec not in (None, "cpu"):
        msg = f"backend 'numpy' has only the device 'cpu', got {spec!r}"
        raise BackendUnavailableError(msg)
    return _backend()


def _backend() -> Backend:
    import array_api_compat.numpy as xp  # noqa: PLC0415 - loaded on first use

    return Backend(
        name="numpy",
        library="numpy",
        xp=xp,
        device="cpu",
        writable=True,
        _array_types=(np.ndarray,),
        _single_device=True,
        _float_dtypes=float_dtypes(xp, "cpu"),
        _add_scaled=add_scaled,
        _sum=np.add.reduce,
        _needs_scratch=True,
        _generator=HostGenerator,
        _read_only=read_only,
        _writable_flag=operator.attrgetter("flags.writeable"),  # C: no Python call
    )


LIBRARY = Library(
    name="numpy",
    install="pip install numpy",
    build=build,
    matches=array_api_compat.is_numpy_namespace,
    from_device=lambda _device: _backend(),
    list_devices=lambda: ["cpu"],
)
