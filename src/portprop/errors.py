"""The exceptions portprop raises.

Every exception derives from :class:`PortpropError` and from the built-in
exception a Python user would expect (``ValueError`` for a bad value,
``TypeError`` for a bad type, ...), so both ``except pp.PortpropError`` and
``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "DtypeUnsupportedError",
    "GradcheckError",
    "MixedBackendError",
    "MixedDeviceError",
    "PortpropError",
    "StateDictError",
    "UnknownBackendError",
]


class PortpropError(Exception):
    """Base class of every exception raised by portprop."""


class UnknownBackendError(PortpropError, ValueError):
    """A backend name that is not registered; the message lists the registered names."""


class BackendUnavailableError(PortpropError, RuntimeError):
    """A registered backend that cannot run here (not installed, or no such device)."""


class MixedBackendError(PortpropError, TypeError):
    """Arrays of two array libraries met in one call."""


class MixedDeviceError(PortpropError, ValueError):
    """Arrays of one library on two devices met in one call."""


class DtypeUnsupportedError(PortpropError, TypeError):
    """A dtype the backend or its device cannot hold (float64 on some GPUs, JAX without x64)."""


class StateDictError(PortpropError, KeyError):
    """A state dict whose keys or shapes do not match the model; nothing was loaded."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a state-dict report reads better unquoted.
        return str(self.args[0]) if self.args else ""


class GradcheckError(PortpropError, AssertionError):
    """Analytic and finite-difference gradients disagree; the message holds the report."""
