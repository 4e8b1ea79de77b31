"""The CuPy backend (NVIDIA GPUs): array-api-compat's CuPy namespace, run inside the
device's context (its creation functions ignore ``device=``), and a Philox generator
seeded from the host for random draws."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import SEED_BOUND, BackendGenerator
from portprop.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["LIBRARY", "CupyGenerator", "add_scaled", "build", "devices", "from_device"]


def add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    """``y += alpha * x`` in place, through ``scratch`` without allocating when given."""
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


def build(spec: str | None) -> Backend:
    """The CuPy backend of CUDA device ``spec`` (an index), or of the current device."""
    cupy = import_library("cupy", "cupy", "pip install 'portprop[cupy]' (needs an NVIDIA GPU)")
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
    return from_device(cupy.cuda.Device(index))


def from_device(device: Any) -> Backend:
    """The CuPy backend of ``device`` (a ``cupy.cuda.Device``)."""
    import array_api_compat.cupy as xp  # noqa: PLC0415
    import cupy  # noqa: PLC0415

    return Backend(
        name=f"cupy:{device.id}",
        library="cupy",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(cupy.ndarray,),
        _float_dtypes=float_dtypes(xp, device),
        _narrow_ints=narrow_ints(xp, device),
        _add_scaled=add_scaled,
        _numpy_warnings=False,
        _needs_scratch=True,
        # array-api-compat's CuPy creation functions ignore ``device=`` and use the
        # current device, so every call of a model runs inside the device's context.
        _scope=lambda: cupy.cuda.Device(device.id),
        _generator=CupyGenerator,
    )


def devices() -> list[str]:
    """The indices of the CUDA devices CuPy sees."""
    import cupy  # noqa: PLC0415

    return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]


class CupyGenerator(BackendGenerator):
    """Draws on the GPU with a Philox generator seeded afresh from a host PCG64 at every
    draw, so that the whole state is the host generator's (cuRAND's is not readable)."""

    kind = "cupy"

    def __init__(self, backend: Backend, seed: int) -> None:
        super().__init__(backend, seed)
        self._seeds = np.random.Generator(np.random.PCG64(seed))

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import cupy  # noqa: PLC0415
        from cupy.cuda import curand  # noqa: PLC0415

        draw_seed = self._seeds.integers(SEED_BOUND, dtype=np.uint64)
        philox = cupy.random.RandomState(draw_seed, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
        return philox.random_sample(shape, dtype=dtype)

    def _get_state(self) -> Any:
        return self._seeds.bit_generator.state

    def _set_state(self, state: Any) -> None:
        self._seeds.bit_generator.state = dict(state)


LIBRARY = Library(
    name="cupy",
    install="pip install 'portprop[cupy]'",
    build=build,
    matches=array_api_compat.is_cupy_namespace,
    from_device=from_device,
    list_devices=devices,
)
