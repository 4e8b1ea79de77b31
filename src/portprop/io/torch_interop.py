"""Interoperability with torch: a model's parameters and buffers as a torch ``state_dict``
and back.

portprop names parameters as torch does (``"0.weight"``, ``"2.bias"``), so a model and
an ``nn.Sequential`` of the same layers exchange state dicts.  The conversions go
through :func:`portprop.asarray` and :meth:`portprop.Module.load_state_dict`: this
module imports no array library itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from portprop.backend import asarray
from portprop.module import Module

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]


def to_torch_state_dict(model: Module) -> dict[str, Any]:
    """The parameters and buffers (:class:`~portprop.BatchNorm1d`'s running statistics)
    as CPU torch tensors (copies), by torch name: load them into an ``nn.Sequential`` of
    the same layers with ``load_state_dict``."""
    return {
        name: asarray(value, backend="torch:cpu", copy=True)
        for name, value in model.state_dict().items()
    }


def from_torch_state_dict(model: Module, state_dict: Mapping[str, Any]) -> None:
    """Copy a torch ``state_dict()`` (tensors on any device) into ``model``, converting to
    its backend and dtype; raises :class:`StateDictError` listing every mismatch, with
    nothing changed."""
    detached = {
        name: value.detach() if callable(getattr(value, "detach", None)) else value
        for name, value in state_dict.items()
    }
    model.load_state_dict(detached)
