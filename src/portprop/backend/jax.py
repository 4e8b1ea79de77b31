"""The JAX backend: ``jax.numpy`` (which follows the standard itself), immutable arrays
updated by returning new ones, and an explicit key split at every draw."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import BackendGenerator
from portprop.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["LIBRARY", "JaxGenerator", "build", "compiler", "devices", "from_device"]


def build(spec: str | None) -> Backend:
    """The JAX backend of device ``spec`` (an index into ``jax.devices()``), or the first."""
    jax = import_library("jax", "jax", "pip install 'portprop[jax]'")
    devices = jax.devices()
    if spec is None:
        return from_device(devices[0])
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
    return from_device(devices[index])


def from_device(device: Any) -> Backend:
    """The JAX backend of ``device``; JAX arrays are immutable, so it is not writable."""
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
        _float_dtypes=float_dtypes(xp, device),
        _low_float_dtypes={n: xp.dtype(n) for n in ("float16", "bfloat16")},  # issue 12
        _narrow_ints=narrow_ints(xp, device),
        _float64_hint=(
            "JAX keeps float64 off by default: set JAX_ENABLE_X64=1 in the environment, or call "
            "jax.config.update('jax_enable_x64', True) before creating arrays."
        ),
        _generator=JaxGenerator,
        _compiler=compiler,  # compiled steps (issue 13)
    )


# ---- compiled steps (issue 13) ------------------------------------------------------


def compiler(fn: Any, donate: tuple[int, ...]) -> tuple[Any, str]:
    """``fn`` under ``jax.jit``, the buffers of the arguments ``donate`` given to its
    outputs (``donate_argnums``): the Backend's ``compile``."""
    import jax  # noqa: PLC0415

    return jax.jit(fn, donate_argnums=donate), "jax.jit"


def devices() -> list[str]:
    """The devices JAX sees."""
    import jax  # noqa: PLC0415

    return [str(d) for d in jax.devices()]


class JaxGenerator(BackendGenerator):
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

    # A compiled step (issue 13) carries the key through its program as an array: it
    # takes the key in, draws with it as the eager code does, and puts the new one back.
    def device_state(self) -> Array:
        """The key, as a compiled step passes it into its program."""
        return self._key

    def set_device_state(self, key: Array) -> None:
        """Take ``key`` (from :meth:`device_state`, or the program's output) as the key."""
        self._key = key

    def _get_state(self) -> Any:
        import jax  # noqa: PLC0415

        return [int(v) for v in np.asarray(jax.random.key_data(self._key)).reshape(-1)]

    def _set_state(self, state: Any) -> None:
        import jax  # noqa: PLC0415

        data = jax.numpy.asarray(state, dtype=jax.numpy.uint32, device=self.backend.device)
        self._key = jax.random.wrap_key_data(data)


LIBRARY = Library(
    name="jax",
    install="pip install 'portprop[jax]'",
    build=build,
    matches=array_api_compat.is_jax_namespace,
    from_device=from_device,
    list_devices=devices,
)
