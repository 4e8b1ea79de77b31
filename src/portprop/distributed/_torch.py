"""The torch.distributed engine: gloo for CPU tensors, NCCL for CUDA tensors.

Arrays become torch tensors without a copy where DLPack allows (NumPy, CuPy,
array-api-strict, torch itself); JAX arrays, which cannot be written in place, travel
through the host.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from portprop.backend import Backend
from portprop.distributed._comm import Communicator, Work
from portprop.errors import DistributedError

__all__ = ["TorchCommunicator"]


def _dist() -> Any:
    try:
        import torch.distributed as dist  # noqa: PLC0415 - optional, loaded by init
    except ImportError:
        msg = "the torch engine needs torch: pip install torch (or portprop[torch])"
        raise DistributedError(msg, engine="torch") from None
    if not dist.is_available():
        msg = "this torch build has no torch.distributed: install torch from pytorch.org"
        raise DistributedError(msg, engine="torch")
    return dist


class TorchCommunicator(Communicator):
    """The default process group of ``torch.distributed``, started from torchrun's
    environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``), or one that the caller started already (left open at close)."""

    engine = "torch"

    def __init__(self, local_rank: int, timeout: float | None) -> None:
        dist = _dist()
        import torch  # noqa: PLC0415

        self._owned = not dist.is_initialized()
        if self._owned:
            # CPU tensors go through gloo, CUDA tensors through NCCL.
            cuda = torch.cuda.is_available() and dist.is_nccl_available()
            if cuda:
                torch.cuda.set_device(local_rank % torch.cuda.device_count())
            kwargs: dict[str, Any] = {"backend": "cpu:gloo,cuda:nccl" if cuda else "gloo"}
            if timeout is not None:
                kwargs["timeout"] = dt.timedelta(seconds=timeout)
            try:
                dist.init_process_group(init_method="env://", **kwargs)
            except (RuntimeError, ValueError) as exc:
                msg = f"torch engine: the process group did not start: {exc}"
                raise DistributedError(msg, engine="torch") from exc
        super().__init__(dist.get_rank(), dist.get_world_size(), local_rank, timeout)
        self._d = dist
        self._failures = 0

    def error(self, what: str, exc: BaseException | None = None) -> DistributedError:
        """The error of a failed collective, naming the ranks that no longer answer where
        the rendezvous store can tell."""
        found = super().error(what, exc)
        silent = self._silent_ranks()
        if silent:
            ranks = ", ".join(map(str, silent))
            note = f" (rank{'s' if len(silent) > 1 else ''} {ranks} did not answer)"
            found = DistributedError(str(found) + note, engine=self.engine, rank=self.rank)
        return found

    def _silent_ranks(self, wait: float = 2.0) -> list[int]:
        """The ranks that do not sign in to the rendezvous store within ``wait`` seconds
        (empty when the store itself is gone, with rank 0)."""
        self._failures += 1
        prefix = f"portprop/alive/{self._failures}/"
        try:
            store = self._d.distributed_c10d._get_default_store()
            store.set(f"{prefix}{self.rank}", "1")
            deadline = time.monotonic() + wait
            while True:
                silent = [r for r in range(self.size) if not store.check([f"{prefix}{r}"])]
                if not silent or time.monotonic() > deadline:
                    return silent
                time.sleep(0.05)
        except (RuntimeError, AttributeError, ValueError):
            return []

    def _wait_for(self, work: Any, what: str) -> None:
        try:
            if self.timeout is None:
                work.wait()
            else:
                work.wait(timeout=dt.timedelta(seconds=self.timeout))
        except (RuntimeError, ValueError) as exc:
            raise self.error(what, exc) from exc

    def _allreduce(self, arrays: list[Any], backend: Backend | None) -> Work:
        tensors, write_back = _tensors(arrays, backend)
        try:
            works = [self._d.all_reduce(t, op=self._d.ReduceOp.SUM, async_op=True) for t in tensors]
        except RuntimeError as exc:
            what = "all_reduce"
            raise self.error(what, exc) from exc

        def finish() -> None:
            for w in works:
                self._wait_for(w, "all_reduce")
            write_back()

        return Work(arrays, finish)

    def _broadcast(self, arrays: list[Any], backend: Backend | None, root: int) -> None:
        tensors, write_back = _tensors(arrays, backend)
        try:
            works = [self._d.broadcast(t, src=root, async_op=True) for t in tensors]
        except RuntimeError as exc:
            what = "broadcast"
            raise self.error(what, exc) from exc
        for w in works:
            self._wait_for(w, "broadcast")
        write_back()

    def _barrier(self) -> None:
        try:
            work = self._d.barrier(async_op=True)
        except RuntimeError as exc:
            what = "barrier"
            raise self.error(what, exc) from exc
        self._wait_for(work, "barrier")

    def _allgather_text(self, text: str) -> list[str]:
        out: list[Any] = [None] * self.size
        try:
            self._d.all_gather_object(out, text)
        except RuntimeError as exc:
            what = "all_gather_object"
            raise self.error(what, exc) from exc
        return [str(t) for t in out]

    def _close(self) -> None:
        if self._owned and self._d.is_initialized():
            self._d.destroy_process_group()


def _tensors(arrays: list[Any], backend: Backend | None) -> tuple[list[Any], Callable[[], None]]:
    """Torch tensors sharing memory with ``arrays`` where possible, else host copies; and
    the function that puts the copies' values back into ``arrays``."""
    import torch  # noqa: PLC0415

    tensors: list[Any] = []
    copied: list[int] = []
    for i, a in enumerate(arrays):
        t = None
        if isinstance(a, torch.Tensor):
            t = a
        elif isinstance(a, np.ndarray):
            t = torch.from_numpy(a) if a.flags.writeable else None
        elif backend is not None and backend.writable:
            try:
                t = torch.utils.dlpack.from_dlpack(a)
            except (BufferError, RuntimeError, TypeError, ValueError):
                t = None
        if t is None or not t.is_contiguous():
            assert backend is not None
            t = torch.from_numpy(np.ascontiguousarray(backend.to_host(a)))
            copied.append(i)
        tensors.append(t)

    def write_back() -> None:
        for i in copied:
            host = tensors[i].numpy()
            arrays[i] = backend.from_host(host, arrays[i].dtype) if backend else host

    return tensors, write_back
