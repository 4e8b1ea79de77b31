"""A backend module written the way portprop's built-in ones are (``portprop/backend/
numpy.py`` and its siblings): functions that build a Backend, and a ``LIBRARY`` entry at
the end.  Adding a built-in library is adding such a module to ``portprop/backend/`` and
its name to ``BUILTIN_MODULES``; the registry tests register this one with
``register_library``, the same call that registers the built-ins.

Its arrays are those of ``_wrapped``, a tiny array API namespace that portprop does not
know.
"""

from __future__ import annotations

from typing import Any

import _wrapped

from portprop.backend import Backend, Library
from portprop.backend._library import float_dtypes, narrow_ints, probe_writable

NAME = "toy"


def from_device(device: Any) -> Backend:
    """The toy backend of ``device``."""
    return Backend(
        name=NAME if device == _wrapped.DEFAULT else f"{NAME}:{device}",
        library=NAME,
        xp=_wrapped,
        device=device,
        writable=probe_writable(_wrapped, device),
        _array_types=(_wrapped.WArray,),
        _float_dtypes=float_dtypes(_wrapped, device),
        _narrow_ints=narrow_ints(_wrapped, device),
    )


def build(spec: str | None) -> Backend:
    """The toy backend of the device named ``spec``, or of the default one."""
    devices = _wrapped.__array_namespace_info__().devices()
    return from_device(next(d for d in devices if spec in (None, str(d))))


LIBRARY = Library(
    name=NAME,
    install="pip install toy-arrays",
    build=build,
    matches=lambda xp: xp is _wrapped,
    from_device=from_device,
    list_devices=lambda: [str(d) for d in _wrapped.__array_namespace_info__().devices()],
)
