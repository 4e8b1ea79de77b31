"""Which backend a call uses, in order of precedence:

1. an explicit ``backend=`` argument;
2. the arrays passed in (their library and device);
3. the innermost ``with portprop.use_backend(...)`` block;
4. the environment variable ``PORTPROP_BACKEND``, read when it is needed;
5. NumPy.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

from portprop.backend._base import Array, Backend, is_array
from portprop.backend._registry import backend_of, by_name, coerce, device_label
from portprop.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["ENV_VAR", "asarray", "current_backend", "get_backend", "resolve", "use_backend"]

ENV_VAR = "PORTPROP_BACKEND"


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
    resolved = coerce(backend)
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
            return by_name(env)
        except UnknownBackendError as exc:
            msg = f"environment variable {ENV_VAR}={env!r}: {exc}"
            raise UnknownBackendError(msg) from None
        except BackendUnavailableError as exc:
            msg = f"environment variable {ENV_VAR}={env!r}: {exc}"
            raise BackendUnavailableError(msg) from None
    return by_name("numpy")


def get_backend(*arrays: Any, backend: Backend | str | None = None) -> Backend:
    """The backend a call uses.

    In order of precedence: ``backend`` when given; else the backend of ``arrays``
    when any are given; else :func:`current_backend` (``use_backend``, then
    ``PORTPROP_BACKEND``, then NumPy).
    """
    if backend is not None:
        return coerce(backend)
    for a in arrays:
        if isinstance(a, str | Backend):
            msg = f"get_backend() takes arrays positionally; pass a name as backend={a!r}"
            raise TypeError(msg)
    present = [a for a in arrays if a is not None and is_array(a)]
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
    target = current_backend() if backend is None else coerce(backend)
    if device is not None:
        target = by_name(f"{target.library}:{device_label(device)}")
    return target.asarray(x, dtype=dtype, copy=copy)


def resolve(
    backend: Backend | str | None = None, device: Any = None, dtype: Any = None
) -> tuple[Backend, Any]:
    """The backend and floating dtype that factory keywords ``backend=``, ``device=``,
    ``dtype=`` ask for, checked (used by every layer's constructor)."""
    target = current_backend() if backend is None else coerce(backend)
    if device is not None:
        target = by_name(f"{target.library}:{device_label(device)}")
    return target, target.float_dtype(dtype)
