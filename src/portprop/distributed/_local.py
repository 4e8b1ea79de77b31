"""The communicator of a process run without a launcher: one rank, nothing to send."""

from __future__ import annotations

from typing import Any

from portprop.backend import Backend
from portprop.distributed._comm import Communicator, Work

__all__ = ["LocalCommunicator"]


class LocalCommunicator(Communicator):
    """Size 1: every collective returns its input (the same script runs alone)."""

    engine = "local"

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(0, 1, 0, timeout)

    def _allreduce(self, arrays: list[Any], backend: Backend | None) -> Work:  # noqa: ARG002
        return Work(arrays, lambda: None)

    def _broadcast(self, arrays: list[Any], backend: Backend | None, root: int) -> None:  # noqa: ARG002
        return

    def _barrier(self) -> None:
        return

    def _allgather_text(self, text: str) -> list[str]:
        return [text]
