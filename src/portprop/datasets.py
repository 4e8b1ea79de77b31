"""Data sets that portprop generates itself (nothing is ever downloaded)."""

from __future__ import annotations

import math
from typing import Any

from portprop._backend import Backend, host_generator, resolve

__all__ = ["DISK_RADIUS", "make_disk"]

#: Radius of the disk centred at (0.5, 0.5) whose area is 1/2 of the unit square.
DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)


def make_disk(
    n_samples: int = 1000,
    *,
    seed: int | None = None,
    backend: Backend | str | None = None,
    device: Any = None,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """The lecture's disk problem.

    Points uniform in the unit square; the label is 1 inside the disk of radius
    :data:`DISK_RADIUS` centred at ``(0.5, 0.5)`` and 0 outside, so the classes are
    balanced in expectation.

    Returns
    -------
    X : array, shape (n_samples, 2), floating ``dtype`` (default float32)
    y : array, shape (n_samples,), int64 class labels
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        msg = f"n_samples must be a positive int, got {n_samples!r}"
        raise ValueError(msg)
    target, float_dtype = resolve(backend, device, dtype)
    gen = host_generator(seed)
    points = gen.uniform(0.0, 1.0, size=(n_samples, 2))
    inside = ((points - 0.5) ** 2).sum(axis=1) < DISK_RADIUS**2
    X = target.from_host(points, float_dtype)
    y = target.asarray(inside.astype("int64"), copy=True)
    return X, y
