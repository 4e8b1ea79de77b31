"""Backends: the array libraries portprop computes with, and the rules that pick one.

This package is the only part of portprop that imports an array library.  Everything
else receives a :class:`Backend` and computes through its ``xp`` namespace, which
follows the Python array API standard.

=========================  ===============================================================
module                     what it holds
=========================  ===============================================================
``_base.py``               :class:`Backend`: one library on one device, its dtypes, moving
                           arrays in and out, the fast kernels of a training step
``_library.py``            :class:`Library`, a registry entry, and the probes a library
                           module uses (import with a clear error, the device's dtypes)
``_registry.py``           the registry: built-in libraries, :func:`register_backend`, names
                           and arrays to backends (:func:`backend_of`), the status report
``_selection.py``          which backend a call uses (argument > arrays > context >
                           environment > NumPy): :func:`get_backend`, :func:`use_backend`
``random.py``              the host generator of initial weights; :class:`BackendGenerator`
``numpy.py``, ``torch.py``, one module per library: how to build its backend, its kernels,
``cupy.py``, ``jax.py``,   its random generator; each ends with its ``LIBRARY`` entry
``array_api_strict.py``
=========================  ===============================================================

The package is named ``backend`` (singular, as in Keras) because ``portprop.backends()``
is a public function that lists the backends; a subpackage of that name would be
shadowed by it.
"""

from __future__ import annotations

from portprop.backend._base import Array, Backend, dtype_name, is_array
from portprop.backend._library import Library
from portprop.backend._registry import (
    BackendStatus,
    backend_of,
    backends,
    describe_backends,
    register_backend,
    register_library,
    registered_backends,
    unregister_backend,
)
from portprop.backend._selection import (
    ENV_VAR,
    asarray,
    current_backend,
    get_backend,
    resolve,
    use_backend,
)
from portprop.backend.random import BackendGenerator, host_generator, manual_seed

__all__ = [
    "ENV_VAR",
    "Array",
    "Backend",
    "BackendGenerator",
    "BackendStatus",
    "Library",
    "asarray",
    "backend_of",
    "backends",
    "current_backend",
    "describe_backends",
    "dtype_name",
    "get_backend",
    "host_generator",
    "is_array",
    "manual_seed",
    "register_backend",
    "register_library",
    "registered_backends",
    "resolve",
    "unregister_backend",
    "use_backend",
]
