"""portprop: readable back-propagation for multilayer perceptrons, on any array API backend.

>>> import portprop as pp
>>> model = pp.Sequential(pp.Linear(2, 8), pp.Tanh(), pp.Linear(8, 2))
>>> X, y = pp.datasets.make_disk(16, seed=0)
>>> loss = pp.CrossEntropyLoss()
>>> value = loss.forward(model.forward(X), y)
>>> _ = model.backward(loss.backward())
"""

from __future__ import annotations

from portprop import datasets, functional, init
from portprop._backend import (
    ENV_VAR,
    Backend,
    BackendStatus,
    asarray,
    backend_of,
    backends,
    current_backend,
    describe_backends,
    get_backend,
    host_generator,
    manual_seed,
    register_backend,
    registered_backends,
    unregister_backend,
    use_backend,
)
from portprop.errors import (
    BackendUnavailableError,
    DtypeUnsupportedError,
    GradcheckError,
    MixedBackendError,
    MixedDeviceError,
    PortpropError,
    StateDictError,
    UnknownBackendError,
)
from portprop.gradcheck import GradcheckResult, GradcheckRow, gradcheck
from portprop.layers import Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from portprop.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from portprop.module import Module, Parameter, Sequential
from portprop.optim import SGD, Optimizer

__version__ = "0.1.0.dev0"

__all__ = [
    "ENV_VAR",
    "SGD",
    "BCEWithLogitsLoss",
    "Backend",
    "BackendStatus",
    "BackendUnavailableError",
    "CrossEntropyLoss",
    "DtypeUnsupportedError",
    "GradcheckError",
    "GradcheckResult",
    "GradcheckRow",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Loss",
    "MSELoss",
    "MixedBackendError",
    "MixedDeviceError",
    "Module",
    "Optimizer",
    "Parameter",
    "PortpropError",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "StateDictError",
    "Tanh",
    "UnknownBackendError",
    "__version__",
    "asarray",
    "backend_of",
    "backends",
    "current_backend",
    "datasets",
    "describe_backends",
    "functional",
    "get_backend",
    "gradcheck",
    "host_generator",
    "init",
    "manual_seed",
    "register_backend",
    "registered_backends",
    "unregister_backend",
    "use_backend",
]
