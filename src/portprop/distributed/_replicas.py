"""What :func:`~portprop.fit` does with a communicator: the model's replicas kept equal.

Every rank holds the whole data set and the same model.  Before the first step the
ranks agree (:meth:`Replicas.agree`: architecture, shapes, dtype, library, data, seed)
and rank 0's parameters are broadcast.  Each global batch is split into contiguous
parts, one per rank (:meth:`Replicas.part`; the last batch unevenly, nothing dropped).
In :meth:`Replicas.step` each rank runs forward and backward on its part; as soon as
the backward of a layer is done, its gradients (grouped into buckets of at least
``bucket_bytes``) start their all-reduce while the earlier layers' backward runs, and
the step waits for all of them just before the optimizer.

Exactness: a loss with ``reduction="mean"`` averages over the local part of ``n_r``
samples, so each rank scales its gradients by ``n_r / n`` (``n`` the global batch)
before the sum, which then is the gradient of the mean over the global batch.  The
loss travels in the first bucket: a NaN or an infinity on any rank makes the summed
loss or gradients non-finite on every rank, so every rank stops at the same step.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from portprop.backend import dtype_name, host_generator
from portprop.distributed._comm import Communicator, Work
from portprop.errors import DistributedError
from portprop.module import Module, Parameter, Sequential

__all__ = ["BUCKET_BYTES", "Replicas", "agreed_seed"]

Array = Any

#: Gradients are reduced in buckets of at least this many bytes (the last may be smaller).
BUCKET_BYTES = 1 << 20

_SEED_BOUND = 2**52  # travels exactly in a float64


def agreed_seed(comm: Communicator, seed: int | None, shuffle: bool) -> int | None:
    """The shuffling seed every rank uses: ``seed``, or one drawn by rank 0 (from the
    global host generator) and broadcast when ``seed`` is ``None``."""
    if not shuffle or seed is not None or comm.size == 1:
        return seed
    value = np.zeros(1, dtype=np.float64)
    if comm.rank == 0:
        value[0] = float(host_generator(None).integers(_SEED_BOUND))
    comm.broadcast_host(value)
    return int(value[0])


def fingerprint(model: Module) -> str:
    """A short digest of the model's parameter values (equal on every rank after a step)."""
    digest = hashlib.sha256()
    backend = model.backend
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(backend.to_host(p.data)).tobytes())
    return digest.hexdigest()[:16]


class Replicas:
    """One rank's side of a data-parallel :func:`~portprop.fit`.

    Parameters
    ----------
    comm : Communicator
    model : Module
        Its ``Sequential`` layers get the hook that starts each layer's reduction.
    loss : Loss
        Its ``reduction`` (``"mean"`` or ``"sum"``) decides the gradients' scale.
    bucket_bytes : int
        The least size of a reduction (small layers share one).
    """

    def __init__(
        self, comm: Communicator, model: Module, loss: Any, *, bucket_bytes: int = BUCKET_BYTES
    ) -> None:
        self.comm, self.model = comm, model
        self.backend = model.backend
        self.xp = model.backend.xp
        self.mean = getattr(loss, "reduction", "mean") != "sum"
        self.params = model.parameters()
        self.bucket_bytes = bucket_bytes
        self.by_layer: list[list[Parameter]] = []
        if isinstance(model, Sequential):
            self.by_layer = [layer.parameters() for layer in model.layers]
        self._scale = 1.0
        self._loss: Array | None = None  # the scaled local loss, until the first bucket leaves
        self._pending: list[Parameter] = []
        self._pending_bytes = 0
        self._started: list[Parameter] = []
        self._works: list[tuple[list[Parameter], Work, bool]] = []

    # ---- before the first step ------------------------------------------------------------

    def agree(self, facts: dict[str, object]) -> None:
        """Refuse ranks that differ from rank 0 in any of ``facts`` (plus the model's
        architecture, parameter shapes, dtype and library).

        Raises
        ------
        DistributedError
            On every rank, naming what differs, on which ranks, and the values.
        """
        model = self.model
        shapes = ", ".join(f"{n}{tuple(p.data.shape)}" for n, p in model.named_parameters())
        mine = {
            "library": self.backend.library,
            "dtype": dtype_name(self.params[0].data.dtype) if self.params else "-",
            "architecture": " ".join(repr(model).split()),
            "parameter shapes": shapes,
            **{k: str(v) for k, v in facts.items()},
        }
        text = "\n".join(f"{k}\t{v}" for k, v in mine.items())
        every = [
            dict(line.split("\t", 1) for line in t.split("\n"))
            for t in self.comm.allgather_text(text)
        ]
        for key in mine:
            differ = [r for r, facts_r in enumerate(every) if facts_r.get(key) != every[0].get(key)]
            if differ:
                r = differ[0]
                msg = (
                    f"{self.comm.engine} engine: rank{'s' if len(differ) > 1 else ''} "
                    f"{', '.join(map(str, differ))} differ{'' if len(differ) > 1 else 's'} from "
                    f"rank 0 in {key}: expected {every[0].get(key)!r} (rank 0), got "
                    f"{every[r].get(key)!r} (rank {r}); build the same model and give the "
                    "same data on every rank"
                )
                raise DistributedError(msg, engine=self.comm.engine, rank=self.comm.rank)

    def broadcast_parameters(self) -> None:
        """Give every rank rank 0's parameters."""
        arrays = [p.data for p in self.params]
        self.comm.broadcast_(arrays, self.backend, root=0)
        for p, a in zip(self.params, arrays, strict=True):
            p.data = a  # the same array, or its new value on JAX

    def attach(self) -> None:
        """Let ``Sequential._backward`` call :meth:`layer_done` after each layer."""
        if self.by_layer:
            self.model._after_layer_backward = self.layer_done  # type: ignore[attr-defined]

    def detach(self) -> None:
        if self.by_layer:
            self.model._after_layer_backward = None  # type: ignore[attr-defined]

    # ---- each step ------------------------------------------------------------------------

    def part(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's contiguous part ``[lo, hi)`` of the global batch ``[start, stop)``:
        the first ``(stop - start) % size`` ranks take one sample more."""
        count, extra = divmod(stop - start, self.comm.size)
        r = self.comm.rank
        lo = start + r * count + min(r, extra)
        return lo, lo + count + (1 if r < extra else 0)

    def step(self, loss: Any, Xb: Array, yb: Array, total: int) -> tuple[Array, Array, Array]:
        """Forward and backward on this rank's part of a global batch of ``total``
        samples, the gradients summed over the ranks into every ``p.grad``.

        Returns
        -------
        out, value : array or None
            The local outputs and loss (``None`` for a rank without samples here).
        global_value : array
            The loss of the global batch (0-d), equal on every rank.
        """
        xp, model = self.xp, self.model
        local = int(Xb.shape[0])
        self._scale = local / total if self.mean else 1.0
        self._pending, self._pending_bytes, self._started, self._works = [], 0, [], []
        out = value = None
        model.zero_grad()
        if local:
            out = model.forward(Xb)
            value = loss.forward(out, yb)
            self._loss = xp.reshape(self._scaled(value), (1,))
            model.backward(loss.backward(), input_grad=False)  # calls layer_done
        else:  # the same buckets as the other ranks, of zeros
            self._loss = xp.reshape(self._zero(), (1,))
            for i in range(len(self.by_layer) - 1, -1, -1):
                self.layer_done(i)
        started = {id(p) for p in self._started} | {id(p) for p in self._pending}
        self._pending += [p for p in self.params if id(p) not in started]
        self._launch()
        return out, value, self._finish()

    # the scikit-learn estimators (issue 10): gradients already divided by the global count
    def sum_gradients(self, value: Array | None) -> Array:
        """Sum every parameter's ``grad`` (``None``: zeros) and the 0-d ``value``
        (``None``: 0) over the ranks, unscaled, in one reduction; the gradients land in
        every ``p.grad``.  For losses that divide by the global count themselves (the
        scikit-learn estimators' weighted means).  Returns the summed value (0-d)."""
        self._scale = 1.0
        self._loss = self.xp.reshape(self._zero() if value is None else value, (1,))
        self._pending, self._pending_bytes = list(self.params), 0
        self._started, self._works = [], []
        self._launch()
        return self._finish()

    def _zero(self) -> Array:
        """A 0-d zero loss in the parameters' dtype, for a rank without samples."""
        dtype = self.params[0].data.dtype if self.params else self.backend.float_dtype()
        return self.xp.zeros((), dtype=dtype, device=self.backend.device)

    def layer_done(self, index: int) -> None:
        """The hook: layer ``index``'s gradients are final; start a bucket when full."""
        for p in self.by_layer[index]:
            self._pending.append(p)
            self._pending_bytes += math.prod(p.data.shape) * _itemsize(p.data)
        if self._pending_bytes >= self.bucket_bytes:
            self._launch()

    def _scaled(self, a: Array) -> Array:
        return a if self._scale == 1.0 else a * self._scale

    def _launch(self) -> None:
        params, self._pending, self._pending_bytes = self._pending, [], 0
        if not params and self._loss is None:
            return
        xp, backend = self.xp, self.backend
        parts = [] if self._loss is None else [self._loss]
        for p in params:
            grad = p.grad if p.grad is not None else xp.zeros_like(p.data)
            parts.append(xp.reshape(self._scaled(grad), (-1,)))
        with_loss = self._loss is not None
        self._loss = None
        flat = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
        if flat is parts[0] and not with_loss:
            flat = xp.asarray(flat, copy=True)  # never reduce into a gradient's own memory
        self._started += params
        self._works.append((params, self.comm.allreduce_sum_([flat], backend), with_loss))

    def _finish(self) -> Array:
        xp = self.xp
        global_value = None
        for params, work, with_loss in self._works:
            flat = work.wait()[0]
            start = 0
            if with_loss:
                global_value = xp.reshape(flat[0:1], ())
                start = 1
            for p in params:
                stop = start + math.prod(p.data.shape)
                p.grad = xp.reshape(flat[start:stop], tuple(p.data.shape))
                start = stop
        self._works = []
        assert global_value is not None
        return global_value

    # ---- each epoch -------------------------------------------------------------------------

    def reduce_totals(self, totals: Any) -> None:
        """Sum an epoch's :class:`~portprop.training.metrics.Totals` over the ranks, so
        that every rank reads the metrics of the whole data set."""
        sums = np.array(
            [
                0.0 if totals.loss is None else float(totals.loss),
                float(totals.samples),
                0.0 if totals.correct is None else float(totals.correct),
                float(totals.elements),
            ],
            dtype=np.float64,
        )
        self.comm.sum_host(sums)
        totals.loss, totals.correct = float(sums[0]), float(sums[2])
        totals.samples, totals.elements = int(sums[1]), int(sums[3])

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on some rank (a callback asked to stop)."""
        votes = np.array([1.0 if flag else 0.0], dtype=np.float64)
        self.comm.sum_host(votes)
        return bool(votes[0] > 0.0)

    def callbacks(self, callbacks: Sequence[Any]) -> list[Any]:
        """The callbacks this rank runs: all of them on rank 0; elsewhere those without
        ``rank_zero_only = True`` (set it on a callback that writes files)."""
        if self.comm.rank == 0:
            return list(callbacks)
        return [cb for cb in callbacks if not getattr(cb, "rank_zero_only", False)]


def _itemsize(a: Array) -> int:
    size = getattr(a.dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    return 8 if dtype_name(a.dtype).endswith("64") else 4
