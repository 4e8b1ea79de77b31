"""The MPI engine, through mpi4py (launched by ``mpirun``, ``mpiexec`` or ``srun``).

NumPy arrays, torch CPU tensors and array-api-strict arrays travel as buffers without a
copy (:func:`~portprop.distributed._comm.host_views`); CuPy arrays travel as device
buffers where MPI is CUDA-aware, else through the host (said once, on standard error);
JAX arrays through the host.  Every collective is non-blocking and polled, so that a
rank that stops answering raises :class:`~portprop.DistributedError` after the timeout.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from portprop.backend import Backend
from portprop.distributed._comm import Communicator, Work, host_views
from portprop.errors import DistributedError

__all__ = ["MPICommunicator"]


def _mpi() -> Any:
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional, loaded by init
    except ImportError:
        msg = (
            "the mpi engine needs mpi4py and an MPI library: pip install mpi4py mpich "
            "(or portprop[distributed])"
        )
        raise DistributedError(msg, engine="mpi") from None
    return MPI


class MPICommunicator(Communicator):
    """A duplicate of ``MPI.COMM_WORLD`` (freed at close; MPI itself ends with the
    process)."""

    engine = "mpi"

    def __init__(self, timeout: float | None) -> None:
        MPI = _mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD.Dup()
        local = self._comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank = local.Get_rank()
        local.Free()
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), local_rank, timeout)
        self._cuda_aware = bool(getattr(MPI, "Query_cuda_support", lambda: False)())
        self._warned = False

    def _poll(self, requests: list[Any], what: str) -> None:
        """Wait for ``requests``, at most ``timeout`` seconds."""
        if self.timeout is None:
            self._MPI.Request.Waitall(requests)
            return
        deadline = time.monotonic() + self.timeout
        pause = 1e-6
        while not self._MPI.Request.Testall(requests):
            if time.monotonic() > deadline:
                raise self.error(what)
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)

    def _buffers(self, arrays: list[Any], backend: Backend | None) -> tuple[list[Any], Any]:
        if backend is not None and backend.library == "cupy":
            if self._cuda_aware:
                return list(arrays), lambda: None
            if not self._warned:
                self._warned = True
                print(  # noqa: T201 - said once per process, as the issue asks
                    "portprop: MPI is not CUDA-aware here; CuPy arrays travel through the host",
                    file=sys.stderr,
                )
        return host_views(arrays, backend)

    def _allreduce(self, arrays: list[Any], backend: Backend | None) -> Work:
        buffers, write_back = self._buffers(arrays, backend)
        MPI = self._MPI
        what = "Iallreduce"
        try:
            requests = [self._comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM) for b in buffers]
        except MPI.Exception as exc:
            raise self.error(what, exc) from exc

        def finish() -> None:
            self._poll(requests, "Iallreduce")
            write_back()

        return Work(arrays, finish)

    def _broadcast(self, arrays: list[Any], backend: Backend | None, root: int) -> None:
        buffers, write_back = self._buffers(arrays, backend)
        requests = [self._comm.Ibcast(b, root=root) for b in buffers]
        self._poll(requests, "Ibcast")
        write_back()

    def _barrier(self) -> None:
        self._poll([self._comm.Ibarrier()], "Ibarrier")

    def _allgather_text(self, text: str) -> list[str]:
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        lengths = np.zeros(self.size, dtype=np.int64)
        mine = np.array([data.size], dtype=np.int64)
        self._poll([self._comm.Iallgather(mine, lengths)], "Iallgather")
        out = np.zeros(int(lengths.sum()), dtype=np.uint8)
        request = self._comm.Iallgatherv(data, [out, lengths.tolist()])
        self._poll([request], "Iallgatherv")
        starts = np.concatenate([[0], np.cumsum(lengths)])
        return [bytes(out[starts[r] : starts[r + 1]]).decode() for r in range(self.size)]

    def _close(self) -> None:
        self._comm.Free()
