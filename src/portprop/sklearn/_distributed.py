"""``comm=``: the estimators trained data-parallel over the ranks of a communicator.

Every rank holds the whole ``X`` and ``y`` and draws the same shuffles (scikit-learn's,
from the same ``random_state``; with ``random_state=None`` rank 0 draws a seed for
everyone).  The stochastic solvers split each global batch into contiguous parts, one
per rank (:meth:`~portprop.distributed._replicas.Replicas.part`, as
:func:`~portprop.fit` does); L-BFGS gives each rank its contiguous share of the rows.
Each rank divides its loss and gradients by the *global* total weight, so their sum
over the ranks (:meth:`~portprop.distributed._replicas.Replicas.sum_gradients`, one
reduction) is the gradient of the weighted mean over the whole batch; scikit-learn's
L2 penalty is added after the sum, once.  Every rank then holds the same loss, takes
the same optimizer step and reaches the same stopping decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portprop.distributed import Communicator, init
from portprop.distributed._replicas import Replicas, agreed_seed
from portprop.sklearn._network import _Network

Array = Any

# the communicator of comm="auto", started once per process and reused while open
_AUTO: list[Communicator] = []


def resolve_comm(comm: Communicator | str | None) -> Communicator | None:
    """The communicator of the ``comm`` parameter: ``None``; the one started by
    :func:`portprop.distributed.init` for ``"auto"`` (size 1 without a launcher); or the
    one given."""
    if comm is None or isinstance(comm, Communicator):
        return comm
    if not _AUTO or _AUTO[0].closed:
        _AUTO[:] = [init()]
    return _AUTO[0]


def shared_random_state(comm: Communicator | None, random_state: Any) -> Any:
    """``random_state``, except that ``None`` on several ranks becomes a seed drawn by
    rank 0, so that every rank shuffles alike."""
    if comm is None or comm.size == 1 or random_state is not None:
        return random_state
    seed = agreed_seed(comm, None, shuffle=True)
    assert seed is not None
    return np.random.RandomState(seed % 2**32)


class _Ranks:
    """One rank's side of a data-parallel fit of an estimator.

    Parameters
    ----------
    comm : Communicator
    net : _Network
        Built the same way on every rank; rank 0's parameters are broadcast.
    facts : dict
        What must be equal on every rank (the data's shape, the solver, ...); a rank
        that differs raises :class:`~portprop.DistributedError` on every rank.
    """

    def __init__(self, comm: Communicator, net: _Network, facts: dict[str, object]) -> None:
        self.comm = comm
        self.replicas = Replicas(comm, net.model, None)
        self.replicas.agree(facts)
        self.replicas.broadcast_parameters()

    @property
    def talks(self) -> bool:
        """Whether this rank prints (rank 0 only)."""
        return self.comm.rank == 0

    def part(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's rows ``[lo, hi)`` of the global rows ``[start, stop)``."""
        return self.replicas.part(start, stop)

    def sum(self, value: Array | None) -> Array:
        """The gradients and the loss ``value`` (``None``: this rank had no rows)
        summed over the ranks; returns the summed loss."""
        return self.replicas.sum_gradients(value)
