"""The :class:`Communicator` that every engine fills, its :class:`Work`, and host views.

An engine module (``_torch``, ``_mpi``, ``_local``) subclasses :class:`Communicator`
and implements the collectives on arrays of any backend.  Arrays travel without a copy
where the engine can read and write their memory (see :func:`host_views`); otherwise
a host copy travels and the result replaces the array in the caller's list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from portprop.backend import Backend
from portprop.errors import DistributedError

__all__ = ["Communicator", "Work", "host_views"]

Array = Any


class Work:
    """An all-reduce in flight; :meth:`wait` finishes it.

    Parameters
    ----------
    arrays : list
        The caller's list, which holds the sums once :meth:`wait` returns.
    finish : callable
        Waits for the engine and writes host copies back (called once).
    """

    def __init__(self, arrays: list[Array], finish: Callable[[], None]) -> None:
        self.arrays = arrays
        self._finish: Callable[[], None] | None = finish

    def wait(self) -> list[Array]:
        """Wait for the sums (idempotent) and return the list that holds them.

        Raises
        ------
        DistributedError
            A rank died or did not answer within the communicator's timeout.
        """
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()
        return self.arrays


class Communicator:
    """The processes of one data-parallel run, and their collectives.

    Attributes
    ----------
    engine : str
        ``"torch"``, ``"mpi"`` or ``"local"`` (one process, no launcher).
    rank, size : int
        This process's number and the number of processes.
    local_rank : int
        Its number on its machine (the GPU it uses, where there are GPUs).
    timeout : float or None
        Seconds a collective may wait for the other ranks before raising
        :class:`~portprop.DistributedError`; ``None``: the engine's default.
    """

    engine = "local"

    def __init__(self, rank: int, size: int, local_rank: int, timeout: float | None) -> None:
        self.rank, self.size, self.local_rank, self.timeout = rank, size, local_rank, timeout
        self.closed = False

    def __repr__(self) -> str:
        return f"Communicator(engine={self.engine!r}, rank={self.rank}, size={self.size})"

    def __enter__(self) -> Communicator:  # noqa: PYI034 - engines add no methods to chain
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the public collectives ----------------------------------------------------------

    def allreduce_sum_(self, arrays: list[Array], backend: Backend) -> Work:
        """Start summing each array of ``arrays`` over the ranks, in place.

        Returns at once; the sums are there after :meth:`Work.wait`.  Arrays of a
        library that cannot be written in place (JAX) or that the engine cannot read
        (CuPy without CUDA-aware MPI) travel through the host, and their sums replace
        them in ``arrays``.
        """
        self._require_open()
        return self._allreduce(arrays, backend)

    def broadcast_(self, arrays: list[Array], backend: Backend, root: int = 0) -> None:
        """Give every rank the values of rank ``root``'s ``arrays``, in place (or by
        replacing them in ``arrays``, as :meth:`allreduce_sum_`)."""
        self._require_open()
        if not 0 <= root < self.size:
            msg = f"root must be a rank in [0, {self.size}), got {root!r}"
            raise ValueError(msg)
        self._broadcast(arrays, backend, root)

    def barrier(self) -> None:
        """Wait until every rank has called it."""
        self._require_open()
        self._barrier()

    def close(self) -> None:
        """Shut the engine down (the process group); idempotent."""
        if not self.closed:
            self.closed = True
            self._close()

    def local_backend(self, name: str | None) -> str | None:
        """The backend name ``name`` bound to this rank's GPU: ``"torch:cuda"`` becomes
        ``"torch:cuda:<local_rank>"`` and ``"cupy"`` becomes ``"cupy:<local_rank>"``; a
        name with a device index, a CPU backend or ``None`` is returned as it is."""
        if name == "torch:cuda":
            return f"torch:cuda:{self.local_rank}"
        if name == "cupy":
            return f"cupy:{self.local_rank}"
        return name

    # ---- what portprop itself needs (host values) ------------------------------------------

    def allgather_text(self, text: str) -> list[str]:
        """Every rank's ``text``, in rank order (the checks that ranks agree)."""
        self._require_open()
        return self._allgather_text(text)

    def sum_host(self, values: np.ndarray) -> None:
        """Sum a float64 host array over the ranks, in place (metrics, flags)."""
        self._require_open()
        self._allreduce([values], _HOST).wait()

    def broadcast_host(self, values: np.ndarray, root: int = 0) -> None:
        """Broadcast a host array from ``root``, in place (the shuffling seed)."""
        self._require_open()
        self._broadcast([values], _HOST, root)

    # ---- what an engine implements ----------------------------------------------------------

    def _allreduce(self, arrays: list[Array], backend: Backend | None) -> Work:
        raise NotImplementedError

    def _broadcast(self, arrays: list[Array], backend: Backend | None, root: int) -> None:
        raise NotImplementedError

    def _barrier(self) -> None:
        raise NotImplementedError

    def _allgather_text(self, text: str) -> list[str]:
        raise NotImplementedError

    def _close(self) -> None:
        """Nothing to release by default."""

    # ---- shared by the engines -------------------------------------------------------------

    def _require_open(self) -> None:
        if self.closed:
            msg = f"{self!r} is closed: call portprop.distributed.init() again"
            raise DistributedError(msg, engine=self.engine, rank=self.rank)

    def error(self, what: str, exc: BaseException | None = None) -> DistributedError:
        """The error of a failed collective ``what``, naming the engine and this rank."""
        limit = "the engine's default" if self.timeout is None else f"{self.timeout:g} s"
        cause = f": {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}" if exc else ""
        msg = (
            f"{self.engine} engine, rank {self.rank} of {self.size}: {what} failed; another "
            f"rank died or did not answer within the timeout ({limit}){cause}"
        )
        return DistributedError(msg, engine=self.engine, rank=self.rank)


# Host arrays given to the internal collectives carry no backend.
_HOST: Backend | None = None


def host_views(
    arrays: list[Array], backend: Backend | None
) -> tuple[list[np.ndarray], Callable[[], None]]:
    """NumPy arrays that share memory with ``arrays`` where the library allows it (NumPy,
    torch on the CPU, array-api-strict), else host copies; and the function that puts
    the copies' values back (as new arrays, into ``arrays``).

    ``backend`` ``None`` means that ``arrays`` are NumPy arrays already.
    """
    views: list[np.ndarray] = []
    copied: list[int] = []
    for i, a in enumerate(arrays):
        view = _shared(a, backend)
        if view is None:
            assert backend is not None
            view = np.ascontiguousarray(backend.to_host(a))
            copied.append(i)
        views.append(view)

    def write_back() -> None:
        assert backend is not None or not copied
        for i in copied:
            arrays[i] = backend.from_host(views[i], arrays[i].dtype) if backend else views[i]

    return views, write_back


def _shared(a: Array, backend: Backend | None) -> np.ndarray | None:
    """A writable contiguous NumPy view of ``a``, or None."""
    if isinstance(a, np.ndarray):
        view = a
    elif backend is None or not backend.writable:
        return None
    else:
        try:
            view = np.from_dlpack(a)
        except (BufferError, RuntimeError, TypeError, ValueError):
            return None  # on a GPU, or a library without DLPack on the CPU
    if not (view.flags.writeable and view.flags.c_contiguous):
        return None
    return view
