"""Training loops: :func:`fit`, :func:`evaluate` and :func:`predict`.

They wrap the manual loop of forward, loss, backward and step::

    out = model.forward(X_batch)
    loss.forward(out, y_batch)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    optimizer.step()

and add mini-batching, shuffling, validation, metrics, callbacks, learning-rate
schedules, gradient clipping, a check for divergence and a progress display.

Modules
-------
- :mod:`~portprop.training.loop`: :func:`fit`, :func:`evaluate` and :func:`predict`, the
  checks of fit's arguments, its per-epoch bookkeeping, batching and evaluation passes;
- :mod:`~portprop.training.validation`: every check and conversion of user data, shared
  with :mod:`portprop.sklearn` and the command line;
- :mod:`~portprop.training.callbacks`: :class:`History`, :class:`TrainingState`,
  :class:`Callback` and :class:`EarlyStopping`;
- :mod:`~portprop.training.metrics`: :data:`METRICS` and their sums on the device;
- :mod:`~portprop.training.divergence`: the check for NaN and infinity before each step,
  and its :class:`~portprop.TrainingDivergedError`;
- :mod:`~portprop.training.progress`: the progress display (``verbose``).

Input data
----------
``X`` and ``y`` may come from any supported library (NumPy, torch, JAX, CuPy,
array-api-strict) or be nested lists, tuples or other array-likes (pandas objects),
which are read on the host with NumPy first.  They are converted **once**, before the
first epoch, to the model's backend, device and dtype:

- data that already lives there, in the model's dtype, is used as is (no copy);
- data of another library on the same device is imported through DLPack (no copy,
  e.g. NumPy into a ``torch:cpu`` model, or torch CUDA tensors into a CuPy model);
- host data (NumPy arrays, lists) for a model on a GPU costs one host-to-device copy;
- floating data of another floating dtype (float64 data for a float32 model) is cast,
  which costs one more copy.  The low-level :meth:`Module.forward` refuses such data;
  these functions convert it for you, the same way on every backend.

The whole data set then stays on the device: a data set that does not fit in device
memory must be batched by hand.  Features ``X`` must be 2-D ``(samples, features)``.
Targets ``y`` are class labels ``(samples,)`` of an integer dtype for
:class:`~portprop.CrossEntropyLoss` (floating or boolean labels holding whole numbers
are converted, a ``(samples, 1)`` column is flattened); for other losses they are cast
to the model's dtype, and a 1-D ``y`` becomes a ``(samples, 1)`` column.

Every argument is checked before any computation; the Notes of :func:`fit` list what
is refused and what is converted.

Cost of the divergence check
----------------------------
Before each optimizer step, :func:`fit` checks on the device that the loss and every
gradient are finite (``isfinite`` of the loss plus the sum of every gradient) and reads
that one boolean back to the host, so a NaN or an infinity stops training *before* it
reaches the parameters.  That is one host-device synchronization per batch; everything
else (the running loss, the accuracy) is summed on the device and read back once per
epoch.  With ``clip_grad_norm``, the total norm that clipping returns replaces the sum
of the gradients.

Measured on a shared 2-core CPU (the lecture's 2-25-25-25-2 network, batches of 50,
process time per step, best of 9 runs of 100 steps), compared with no check at all:

==================  ==========  ====================  =====================
backend             no check    the loss alone        loss and gradients
==================  ==========  ====================  =====================
numpy               308 us      +2 us (+1%)           +34 us (+11%)
torch (cpu)         659 us      +16 us (+3%)          +62 us (+9%)
array-api-strict    1968 us     +0 us                 +194 us (+10%)
jax (eager)         6499 us     +104 us (+2%)         +103 us (+2%)
==================  ==========  ====================  =====================

The synchronization itself is cheap on a CPU; the gradient sums cost one reduction per
parameter, a fixed per-operation overhead that matters for small layers only.  On a GPU
the synchronization also stops the host from queueing the next batch's kernels before
the current ones finish (not measured here).  Note that
:class:`~portprop.CrossEntropyLoss` already reads the range of the labels back to the
host in every ``forward``.  The same synchronization covers the parameters the previous
step left (and ``fit`` checks them once more after each epoch's last step): a step with
finite gradients that overflows the parameters themselves raises
:class:`~portprop.TrainingDivergedError` with the parameters of the step before put back.

Numbering
---------
Epochs and batches given to callbacks and stored in :attr:`History.epoch` count from 0,
as in Keras; the progress display and :class:`~portprop.TrainingDivergedError` count
from 1, and say so.

Progress (``verbose``)
----------------------
``0``: nothing is printed.  ``1`` (default): a tqdm bar per epoch on standard error,
with the loss and metrics in its postfix, when standard error is a terminal and tqdm is
installed; otherwise one summary line per epoch on standard error.  ``2``: one summary
line per epoch, always.
"""

from __future__ import annotations

from portprop.training.callbacks import Callback, EarlyStopping, History, TrainingState
from portprop.training.loop import evaluate, fit, predict
from portprop.training.metrics import METRICS
from portprop.training.precision import MixedPrecision  # mixed precision (issue 12)

__all__ = [
    "METRICS",
    "Callback",
    "EarlyStopping",
    "History",
    "MixedPrecision",  # mixed precision (issue 12)
    "TrainingState",
    "evaluate",
    "fit",
    "predict",
]
