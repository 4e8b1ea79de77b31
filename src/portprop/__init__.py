"""portprop: readable back-propagation for multilayer perceptrons, on any array API backend.

>>> import portprop as pp
>>> model = pp.Sequential(pp.Linear(2, 8), pp.Tanh(), pp.Linear(8, 2))
>>> X, y = pp.datasets.make_disk(16, seed=0)
>>> loss = pp.CrossEntropyLoss()
>>> value = loss.forward(model.forward(X), y)
>>> _ = model.backward(loss.backward())
"""

from __future__ import annotations

from portprop import (
    checkpoint,
    datasets,
    distributed,  # distributed training (issue 10)
    functional,
    init,
    io,
)
from portprop.backend import (
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
    CheckpointError,
    CompileUnsupportedError,  # compiled steps (issue 13)
    DistributedError,  # distributed training (issue 10)
    DtypeUnsupportedError,
    GradcheckError,
    MixedBackendError,
    MixedDeviceError,
    PortpropError,
    StateDictError,
    TrainingDivergedError,
    UnknownBackendError,
)
from portprop.gradcheck import GradcheckResult, GradcheckRow, gradcheck
from portprop.io import Checkpoint, load, load_into, restore_rng, save
from portprop.layers import (
    ELU,
    GELU,
    BatchNorm1d,  # issue 12: batch normalization
    Dropout,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from portprop.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    L1Loss,
    Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from portprop.module import Module, Parameter, Sequential
from portprop.optim import SGD, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm_
from portprop.schedules import (
    CosineWithWarmup,
    ExponentialLR,
    ReduceLROnPlateau,
    Schedule,
    StepLR,
)
from portprop.training import Callback, EarlyStopping, History, evaluate, fit, predict
from portprop.training.compiled import CompiledStep, compile_step  # issue 13
from portprop.training.precision import MixedPrecision  # mixed precision (issue 12)

__version__ = "0.1.0.dev0"

__all__ = [
    "ELU",
    "ENV_VAR",
    "GELU",
    "SGD",
    "Adam",
    "AdamW",
    "BCEWithLogitsLoss",
    "Backend",
    "BackendStatus",
    "BackendUnavailableError",
    "BatchNorm1d",  # issue 12: batch normalization
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CompileUnsupportedError",
    "CompiledStep",
    "CosineWithWarmup",
    "CrossEntropyLoss",
    "DistributedError",  # distributed training (issue 10)
    "Dropout",
    "DtypeUnsupportedError",
    "EarlyStopping",
    "ExponentialLR",
    "GradcheckError",
    "GradcheckResult",
    "GradcheckRow",
    "History",
    "HuberLoss",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "MixedBackendError",
    "MixedDeviceError",
    "MixedPrecision",  # mixed precision (issue 12)
    "Module",
    "NLLLoss",
    "Optimizer",
    "Parameter",
    "PortpropError",
    "RMSprop",
    "ReLU",
    "ReduceLROnPlateau",
    "Schedule",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softplus",
    "StateDictError",
    "StepLR",
    "Tanh",
    "TrainingDivergedError",
    "UnknownBackendError",
    "__version__",
    "asarray",
    "backend_of",
    "backends",
    "checkpoint",
    "clip_grad_norm_",
    "compile_step",
    "current_backend",
    "datasets",
    "describe_backends",
    "distributed",  # distributed training (issue 10)
    "evaluate",
    "fit",
    "functional",
    "get_backend",
    "gradcheck",
    "host_generator",
    "init",
    "io",
    "load",
    "load_into",
    "manual_seed",
    "predict",
    "register_backend",
    "registered_backends",
    "restore_rng",
    "save",
    "unregister_backend",
    "use_backend",
]
