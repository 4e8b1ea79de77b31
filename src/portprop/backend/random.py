"""Random numbers: the host generator that initial weights and generated data are drawn
from, and the seeded per-backend generators (dropout masks) with a state that checkpoints
save and restore.

Initial weights are drawn on the host and then moved, so that one seed gives
bit-identical weights on every backend.  :class:`BackendGenerator` is the interface;
:class:`HostGenerator` serves NumPy, array-api-strict and registered backends, and each
library module that has its own generator (``torch.py``, ``jax.py``, ``cupy.py``) defines
it next to the library's other code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from portprop.backend._base import Array, dtype_name

if TYPE_CHECKING:
    from portprop.backend._base import Backend

__all__ = [
    "SEED_BOUND",
    "BackendGenerator",
    "HostGenerator",
    "generator_seed",
    "host_generator",
    "manual_seed",
]

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

SEED_BOUND = 2**63  # every library below takes a seed in [0, 2**63)


def generator_seed(seed: int | None) -> int:
    """``seed`` checked, or one drawn from the global host generator when it is ``None``."""
    if seed is None:
        return int(host_generator(None).integers(SEED_BOUND))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        msg = f"seed must be an int or None, got {seed!r}"
        raise TypeError(msg)
    if not 0 <= seed < SEED_BOUND:
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
        seed = generator_seed(state["seed"])
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


class HostGenerator(BackendGenerator):
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
