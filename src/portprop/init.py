"""Initial weights.

Weights are drawn on the host, in float64, from a NumPy random generator, then cast to
the model's dtype and moved to its backend, so that one seed gives bit-identical initial
weights on every backend and device.

====================  ==========================================  ==============
scheme                weight                                      bias
====================  ==========================================  ==============
``"default"``         U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as      same as weight
                      ``torch.nn.Linear``
``"xavier_uniform"``  U(-a, a), a = sqrt(6 / (fan_in + fan_out))  zeros
``"xavier_normal"``   N(0, 2 / (fan_in + fan_out))                zeros
``"he_uniform"``      U(-a, a), a = sqrt(6 / fan_in)              zeros
``"he_normal"``       N(0, 2 / fan_in)                            zeros
====================  ==========================================  ==============

Glorot and Bengio (2010) derive the Xavier schemes; He et al. (2015) the He schemes,
which suit ReLU networks.
"""

from __future__ import annotations

import math
from typing import Any

from portprop.backend import host_generator, manual_seed

__all__ = ["SCHEMES", "draw_linear", "manual_seed"]

SCHEMES = ("default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


def draw_linear(
    scheme: str, out_features: int, in_features: int, *, seed: int | None = None, rng: Any = None
) -> tuple[Any, Any]:
    """Host float64 arrays ``(weight, bias)`` of shapes ``(out, in)`` and ``(out,)``.

    ``rng`` (a ``numpy.random.Generator``) wins over ``seed``; with neither, the global
    generator that :func:`portprop.manual_seed` seeds is used.
    """
    if scheme not in SCHEMES:
        msg = f"init must be one of {', '.join(map(repr, SCHEMES))}, got {scheme!r}"
        raise ValueError(msg)
    if rng is not None and seed is not None:
        msg = "pass rng= or seed=, not both"
        raise TypeError(msg)
    gen = rng if rng is not None else host_generator(seed)
    shape = (out_features, in_features)
    fan_in, fan_out = in_features, out_features
    if scheme == "default":
        bound = 1.0 / math.sqrt(fan_in)
        weight = gen.uniform(-bound, bound, size=shape)
        return weight, gen.uniform(-bound, bound, size=(out_features,))
    if scheme == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        weight = gen.uniform(-bound, bound, size=shape)
    elif scheme == "xavier_normal":
        weight = gen.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    elif scheme == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        weight = gen.uniform(-bound, bound, size=shape)
    else:
        weight = gen.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    return weight, [0.0] * out_features
