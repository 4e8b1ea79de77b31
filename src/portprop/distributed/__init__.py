"""Data-parallel training over processes and machines, on torch.distributed or MPI.

>>> import portprop as pp
>>> comm = pp.distributed.init()  # no launcher here: one process
>>> comm.engine, comm.rank, comm.size
('local', 0, 1)
>>> comm.close()

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``) :func:`init` starts torch.distributed (gloo on the CPU, NCCL on CUDA);
under ``mpirun``, ``mpiexec`` or ``srun`` (``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``,
``PMIX_RANK``, ...) it starts MPI through mpi4py.  ``pp.fit(..., comm=comm)`` then
trains data-parallel: see :mod:`portprop.distributed._replicas` for what it does.

Modules: ``_comm`` (the :class:`Communicator` every engine fills), ``_torch``,
``_mpi``, ``_local`` (one per engine), ``_replicas`` (what :func:`~portprop.fit` does
with a communicator).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from portprop.distributed._comm import Communicator, Work
from portprop.distributed._local import LocalCommunicator
from portprop.errors import DistributedError

__all__ = ["ENGINES", "Communicator", "DistributedError", "Work", "detect", "init"]

#: The engines :func:`init` accepts (``None`` detects one from the environment).
ENGINES = ("torch", "mpi", "local")

_TORCHRUN = ("RANK", "WORLD_SIZE", "MASTER_ADDR")
_MPI_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")


def detect(environ: Mapping[str, str] | None = None) -> str:
    """The engine that the launcher of this process asks for: ``"torch"`` under
    torchrun, ``"mpi"`` under an MPI launcher, else ``"local"``."""
    env = os.environ if environ is None else environ
    if all(k in env for k in _TORCHRUN):
        return "torch"
    if any(k in env for k in _MPI_SIZE):
        return "mpi"
    return "local"


def init(engine: str | None = None, timeout: float | None = None) -> Communicator:
    """Start the communicator of this process.

    Parameters
    ----------
    engine : {"torch", "mpi", "local"}, optional
        ``None`` detects it from the launcher's environment (:func:`detect`); without a
        launcher, a communicator of size 1 (``"local"``), so the same script runs alone.
    timeout : float, optional
        Seconds a collective waits for the other ranks before raising
        :class:`~portprop.DistributedError`; ``None``: the engine's default (30 minutes
        for torch.distributed, no limit for MPI).

    Returns
    -------
    Communicator
        Close it (or use it in a ``with`` block) to shut the engine down.

    Raises
    ------
    ValueError
        An unknown ``engine`` or a ``timeout`` that is not a positive number.
    DistributedError
        The engine is not installed (the message names the package), or did not start.
    """
    if engine is not None and engine not in ENGINES:
        msg = f"engine must be one of {', '.join(map(repr, ENGINES))} or None, got {engine!r}"
        raise ValueError(msg)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        msg = f"timeout must be a number of seconds > 0 or None, got {timeout!r}"
        raise ValueError(msg)
    chosen = detect() if engine is None else engine
    seconds = None if timeout is None else float(timeout)
    if chosen == "torch":
        from portprop.distributed._torch import TorchCommunicator  # noqa: PLC0415 - imports torch

        return TorchCommunicator(_local_rank(), seconds)
    if chosen == "mpi":
        from portprop.distributed._mpi import MPICommunicator  # noqa: PLC0415 - imports mpi4py

        return MPICommunicator(seconds)
    return LocalCommunicator(seconds)


def _local_rank() -> int:
    for key in _LOCAL_RANK:
        value = os.environ.get(key, "")
        if value.isdigit():
            return int(value)
    return 0
