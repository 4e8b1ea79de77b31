"""The exceptions portprop raises.

Every exception derives from :class:`PortpropError` and from the built-in
exception a Python user would expect (``ValueError`` for a bad value,
``TypeError`` for a bad type, ...), so both ``except pp.PortpropError`` and
``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "CompileUnsupportedError",
    "DistributedError",
    "DtypeUnsupportedError",
    "GradcheckError",
    "MixedBackendError",
    "MixedDeviceError",
    "PortpropError",
    "StateDictError",
    "TrainingDivergedError",
    "UnknownBackendError",
]


class PortpropError(Exception):
    """Base class of every exception raised by portprop."""


class UnknownBackendError(PortpropError, ValueError):
    """A backend name that is not registered, or a device part that names no device of
    that library on any machine (``"jax:gpu"``, ``"array_api_strict:device9"``); the
    message lists the valid names."""


class BackendUnavailableError(PortpropError, RuntimeError):
    """A registered backend that cannot run here: its library is not installed, or this
    machine lacks the device (``"torch:cuda"`` without a GPU, ``"jax:3"`` with one JAX
    device); the message says why, and how to install the library."""


class MixedBackendError(PortpropError, TypeError):
    """Arrays of two array libraries met in one call."""


class MixedDeviceError(PortpropError, ValueError):
    """Arrays of one library on two devices met in one call."""


class DtypeUnsupportedError(PortpropError, TypeError):
    """A dtype the backend or its device cannot hold (float64 on some GPUs, JAX without
    x64), or integers too wide for a device without 64-bit integers."""


class StateDictError(PortpropError, KeyError):
    """A state dict whose keys or shapes do not match the model; nothing was loaded."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a state-dict report reads better unquoted.
        return str(self.args[0]) if self.args else ""


class GradcheckError(PortpropError, AssertionError):
    """Analytic and finite-difference gradients disagree; the message holds the report."""


class CheckpointError(PortpropError, ValueError):
    """A checkpoint that cannot be written, or a file that is not a valid checkpoint (or
    not one for this model); the message names the file and the problem."""


# distributed training (issue 10)
class DistributedError(PortpropError, RuntimeError):
    """A communication between the processes of a data-parallel run failed: a rank died,
    did not answer within the timeout, or disagrees with the others; or the engine is
    not installed.  The message names the engine and the rank.

    Attributes
    ----------
    engine : str
        ``"torch"``, ``"mpi"`` or ``"local"``.
    rank : int or None
        The rank that raised (``None`` before the engine started).
    """

    def __init__(self, message: str, *, engine: str, rank: int | None = None) -> None:
        super().__init__(message)
        self.engine = engine
        self.rank = rank

    def __reduce__(self) -> tuple[object, ...]:
        return (_distributed_error, (str(self), self.engine, self.rank))


def _distributed_error(message: str, engine: str, rank: int | None) -> DistributedError:
    return DistributedError(message, engine=engine, rank=rank)


class CompileUnsupportedError(PortpropError, RuntimeError):
    """A training step that cannot be compiled here, raised by
    :func:`portprop.compile_step` with ``fallback="raise"`` (a library without a
    compiler, such as NumPy, or a step that cannot be traced); the message says why.
    Nothing about the model or the optimizer was changed."""


class TrainingDivergedError(PortpropError, FloatingPointError):
    """The loss or a gradient became NaN or infinite during :func:`portprop.fit`.

    Raised *before* the optimizer step of the offending batch, so the parameters hold
    their last finite values.

    Attributes
    ----------
    epoch, batch : int
        Where it happened, both counted from 1.
    quantity : str
        What was not finite: ``"loss"``, ``"gradient of '0.weight'"``, or
        ``"gradients"`` (their total norm under clipping, or their sum overflowing).
    """

    def __init__(self, message: str, *, epoch: int, batch: int, quantity: str) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.quantity = quantity

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle as cls(*args); the keyword-only attributes need their own path.
        return (_diverged, (str(self), self.epoch, self.batch, self.quantity))


def _diverged(message: str, epoch: int, batch: int, quantity: str) -> TrainingDivergedError:
    return TrainingDivergedError(message, epoch=epoch, batch=batch, quantity=quantity)
