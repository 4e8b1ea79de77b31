"""The solver table: which optimizers each ``solver`` steps, and the optimizer state in
host memory for pickling (:func:`_host_state`).

- ``"sgd"`` and ``"adam"``: scikit-learn's own update rules (``_optimizers``), with
  scikit-learn's coupled L2 penalty ``alpha`` added to the gradients (``_network``).
- ``"adamw"``: :class:`portprop.AdamW` on the weights with decoupled weight decay
  ``alpha`` (no penalty in the gradients or the loss), plain AdamW on the intercepts.
- ``"rmsprop"``: :class:`portprop.RMSprop`, with the coupled penalty.
- ``"lbfgs"``: no optimizer; SciPy's L-BFGS-B (``_lbfgs``).
"""

from __future__ import annotations

from typing import Any

from portprop.backend import Backend
from portprop.layers import Linear
from portprop.module import Sequential
from portprop.optim import AdamW, Optimizer, RMSprop
from portprop.sklearn._optimizers import _SGD, _Adam

_SOLVERS = ("lbfgs", "sgd", "adam", "adamw", "rmsprop")
_STOCHASTIC = ("sgd", "adam", "adamw", "rmsprop")


def build_optimizers(model: Sequential, spec: dict[str, Any]) -> list[Optimizer]:
    """The optimizers of ``spec["solver"]`` over ``model``'s parameters (empty for
    ``"lbfgs"``); ``spec`` holds the estimator's hyperparameters."""
    name, lr = spec["solver"], spec["lr"]
    linears = [m for m in model if isinstance(m, Linear)]
    if name == "sgd":
        mu = spec["momentum"]
        nesterov = spec["nesterovs_momentum"] and mu > 0.0
        return [_SGD(model.parameters(), lr=lr, momentum=mu, nesterov=nesterov)]
    if name == "adam":
        betas = (spec["beta_1"], spec["beta_2"])
        return [_Adam(model.parameters(), lr=lr, betas=betas, eps=spec["epsilon"])]
    if name == "adamw":
        weights = [m.weight for m in linears]
        biases = [m.bias for m in linears if m.bias is not None]
        betas = (spec["beta_1"], spec["beta_2"])
        return [
            AdamW(weights, lr=lr, betas=betas, eps=spec["epsilon"], weight_decay=spec["alpha"]),
            AdamW(biases, lr=lr, betas=betas, eps=spec["epsilon"], weight_decay=0.0),
        ]
    if name == "rmsprop":
        return [RMSprop(model.parameters(), lr=lr)]
    return []


def coupled_alpha(spec: dict[str, Any]) -> float:
    """The penalty added to the gradients: none for ``"adamw"``, whose decay is decoupled."""
    return 0.0 if spec["solver"] == "adamw" else float(spec["alpha"])


def _host_state(backend: Backend, optimizer: Optimizer) -> dict[str, Any]:
    saved = optimizer.state_dict()
    saved["state"] = [
        {k: v if k == "step" else backend.to_host(v) for k, v in s.items()} for s in saved["state"]
    ]
    return saved
