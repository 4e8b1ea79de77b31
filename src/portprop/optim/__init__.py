r"""Optimizers: the gradient step :math:`w \leftarrow w - \eta\,\partial\ell/\partial w`,
its adaptive variants (Adam, AdamW, RMSprop) and gradient clipping.

Updates are in place on NumPy, CuPy and torch (through :meth:`Backend.add_scaled` and
in-place operators on the optimizer's own buffers), and rebind ``param.data`` on JAX,
whose arrays are immutable.  Every hyperparameter is kept as a Python float, so that a
float32 model stays float32 (NumPy 2 would promote it when combined with a NumPy
float64 scalar).  Each optimizer follows torch's definition, so that the same
hyperparameters give the same trajectory.

The package holds the base class (``_base.py``), one module per optimizer (``sgd.py``,
``adam.py``, ``rmsprop.py``) and gradient clipping (``clip.py``).  Where the array library
has them, the optimizers update every parameter at once with its multi-tensor or fused
kernels (the ``multi_update`` capability of :class:`portprop.backend.Backend`).
"""

from __future__ import annotations

from portprop.optim._base import Optimizer, moving_average
from portprop.optim._base import _hyper as _hyper  # for portprop.schedules
from portprop.optim.adam import Adam, AdamW
from portprop.optim.clip import clip_grad_norm_
from portprop.optim.rmsprop import RMSprop
from portprop.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm_",
    "moving_average",
]
