"""The training loops: :func:`fit`, :func:`evaluate` and :func:`predict`.

:func:`fit` checks everything it receives first (:class:`_FitRun`, with the checks of
:mod:`portprop.training.validation`), then runs the epochs and their batches; what
happens around the batches of an epoch (history, callbacks, progress, validation, a
schedule stepped per epoch) is :class:`_Bookkeeping`'s.  The batch step itself (forward,
loss, backward, the divergence check, the optimizer step) is written out in :func:`fit`,
with no call between them that the loop does not need.  This module also holds the
modes, the batching and the evaluation pass that the three functions share.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from portprop import optim as _optim
from portprop.backend import dtype_name, host_generator
from portprop.distributed import Communicator
from portprop.distributed._replicas import Replicas, agreed_seed
from portprop.module import Module, Parameter
from portprop.training.callbacks import Callback, History, TrainingState
from portprop.training.compiled import step_for_fit
from portprop.training.divergence import LastFinite
from portprop.training.metrics import Totals
from portprop.training.precision import MixedPrecision, for_fit
from portprop.training.progress import Progress
from portprop.training.validation import (
    Checks,
    accuracy_kind,
    as_features,
    check_lengths,
    check_loss,
    check_metrics,
    check_model,
    check_optimizer,
    convert,
    index_dtype,
    number,
    positive_int,
    require_2d,
    require_samples,
)

__all__ = ["evaluate", "fit", "predict"]

Array = Any


def fit(
    model: Module,
    loss: Any,
    optimizer: Any,
    X: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    metrics: Sequence[str] | str = ("loss",),
    callbacks: Sequence[Callback] = (),
    schedule: Any = None,
    clip_grad_norm: float | None = None,
    verbose: int = 1,
    comm: Communicator | None = None,
    compile: bool = False,
    precision: str | None = None,
) -> History:
    """Train ``model`` on ``(X, y)`` with mini-batch gradient descent.

    Parameters
    ----------
    model : Module
        Trained in place; in training mode during the epochs and in evaluation mode
        during validation (each module's mode is restored at the end).
    loss : Loss
        ``CrossEntropyLoss`` takes integer labels ``(samples,)``; ``MSELoss`` and
        ``BCEWithLogitsLoss`` take targets ``(samples, outputs)`` (a 1-D ``y`` is one
        output).
    optimizer : Optimizer
        Built on ``model.parameters()``.
    X : array or nested sequence, shape (samples, features)
        Of any supported library; converted once to the model's backend, device and
        dtype (see the module notes for what that costs).
    y : array or nested sequence, shape (samples,) or (samples, outputs)
    epochs : int, default 1
        Passes over the data (0 trains nothing).
    batch_size : int, default 32
        Samples per step; the last batch may be smaller.
    shuffle : bool, default True
        Visit the samples in a new random order each epoch.  The permutation is drawn
        on the host and moved as an index array, so a seed gives the same order, and
        the same batches, on every backend.
    seed : int, optional
        Seed of the shuffling generator; ``None`` draws from the global host generator
        (seeded by :func:`portprop.manual_seed`).
    validation_data : tuple (X_val, y_val), optional
        Data evaluated after each epoch (``val_loss``, ``val_accuracy``).
    validation_split : float in [0, 1), default 0.0
        The *last* fraction of ``X`` and ``y``, taken before shuffling, kept aside for
        validation (as in Keras).  Cannot be combined with ``validation_data``.
        Validation runs in batches of ``max(batch_size, 256)``.
    metrics : sequence of str, default ("loss",)
        Among :data:`METRICS`.  The loss is always reported.  ``"accuracy"`` compares
        argmax of the outputs with labels (``CrossEntropyLoss``), logits > 0 with
        targets > 0.5 elementwise (``BCEWithLogitsLoss``), or argmax of outputs with
        argmax of one-hot targets (``MSELoss`` with several columns).
    callbacks : sequence of Callback
        See :class:`Callback` and :class:`EarlyStopping`.
    schedule : Schedule, optional
        Stepped after each batch when its ``interval`` is ``"batch"``
        (:class:`~portprop.schedules.CosineWithWarmup`), else after each epoch.  A
        schedule with ``needs_metric = True`` (:class:`~portprop.schedules.ReduceLROnPlateau`)
        is stepped with the value of its ``monitor`` attribute (default ``"val_loss"`` with validation data,
        else ``"loss"``) from the epoch's logs.  With a schedule, the history also
        records the optimizer's ``lr`` of each epoch's last step.
    clip_grad_norm : float, optional
        Rescale the gradients so that their global norm is at most this value, between
        backward and step (:func:`portprop.optim.clip_grad_norm_`).
    verbose : {0, 1, 2}, default 1
        0: silent; 1: a progress bar on a terminal, else one line per epoch (on standard
        error); 2: one line per epoch.
    comm : Communicator, optional
        Train data-parallel over the ranks of ``comm`` (:func:`portprop.distributed.init`).
        Every rank passes the same model, data and arguments; ``batch_size`` is the
        global batch, of which each rank takes a contiguous part.  Rank 0's parameters
        are broadcast first, the gradients and metrics are summed over the ranks, and
        the result equals one process's up to the order of the sums.  Only rank 0 shows
        progress; callbacks with ``rank_zero_only = True`` run on rank 0 only.  With
        ``shuffle`` and no ``seed``, rank 0 draws the seed for all.
    compile : bool, default False
        Run each step as one compiled program (:func:`portprop.compile_step`) where the
        library has a compiler (``jax.jit``, ``torch.compile``), eagerly elsewhere; with
        ``clip_grad_norm``, ``comm`` or ``precision`` the eager step runs.  The result
        equals the eager step's to float32 rounding and no non-finite step is kept, but
        a divergence is reported at the batch whose loss is not finite (a step that
        overflows the parameters shows at the next batch), and methods of the loss or
        the optimizer replaced from Python are traced once, not called every step.
    precision : {None, "fp32", "bf16", "fp16"}, optional
        Compute the forward and backward passes in bfloat16 or float16, with the
        model's float32 parameters as the master weights that the optimizer updates
        (:class:`portprop.MixedPrecision`; ``"fp16"`` scales the loss dynamically and
        skips the steps whose scaled gradients overflow, which is not divergence).  The
        history gains ``loss_scale`` and ``skipped_steps``.  Not with ``comm``.

    Returns
    -------
    History

    Raises
    ------
    TrainingDivergedError
        When the loss or a gradient of a batch is NaN or infinite: raised before that
        batch's optimizer step, so the parameters hold their last finite values.  Or
        when an optimizer step made a parameter NaN or infinite (a learning rate too
        large for the gradients): found by the next batch's check, or the check after
        each epoch's last step, and the parameters are put back to their values from
        before that step (the optimizer's state keeps the step).  fit never returns with
        parameters that are not finite.  The message names the epoch and the batch,
        counted from 1.
    DistributedError
        With ``comm``: ranks whose models or data differ (the message says what and on
        which rank), or a rank that died or did not answer within the timeout.
    ValueError, TypeError
        For bad arguments and bad data (see the Notes), and for a model whose
        parameters are not finite, before anything is computed: the model and the
        optimizer are then left unchanged.

    Notes
    -----
    ``X``, ``y`` and ``validation_data`` are converted to the model's backend, device
    and dtype once, before the first epoch (see the module notes of
    ``portprop.training`` for what that costs).  Floating data of another dtype
    (float64 data for a float32 model, or the reverse) is cast to the model's dtype, on
    every backend alike; only the low-level :meth:`Module.forward` refuses it.

    Before any computation, :func:`fit`, :func:`evaluate` and :func:`predict` refuse,
    with a message that names the argument (``X``, ``y``, ``validation_data[0]``, ...),
    the value expected and the value found:

    - data that is not 2-D (with a hint to reshape it), ragged nested lists, and ``X``
      and ``y`` of different lengths (``ValueError``);
    - data that is not real numbers: strings, Python objects, complex numbers
      (``TypeError``).  Boolean and integer data are converted to the model's floating
      dtype (``True`` is 1.0); integers beyond :math:`2^{24}` in magnitude (float32) or
      :math:`2^{53}` (float64) are rounded to the nearest representable value.  String
      class labels get a ``TypeError`` that says how to encode them as integers, or to
      use :class:`portprop.sklearn.MLPClassifier`, which encodes any labels;
    - ``X`` whose number of features differs from what the model's first layer
      expects ("X has 4 features, but the model expects 3"), targets whose number of
      columns differs from the model's outputs, and class labels outside
      ``[0, outputs)`` (``ValueError``); :func:`fit` and :func:`evaluate` also refuse
      data without samples, while :func:`predict` returns an empty ``(0, outputs)``
      array;
    - NaN or infinity in ``X`` or ``y``, looked for after the cast to the model's dtype
      (so a float64 value beyond float32's range counts as infinity):
      ``ValueError("Input X contains NaN (first at sample 3, feature 1; ...)")``, in
      scikit-learn's words.

    The value checks (NaN and infinity, the range of the labels) cost one reduction
    per array and a single host-device synchronization per call, whatever the number
    of arrays; nothing is added to the batches.

    With torch, the epochs run under ``torch.no_grad()`` (portprop computes its own
    gradients): data that require gradients leave no autograd history in the
    parameters, and callbacks that need torch's autograd must enable it themselves
    (``with torch.enable_grad():``).
    """
    if comm is not None:
        if not isinstance(comm, Communicator):
            msg = f"comm must be a portprop.distributed Communicator, got {type(comm).__name__}"
            raise TypeError(msg)
        seed = agreed_seed(comm, seed, shuffle)
    run = _FitRun.check(
        model,
        loss,
        optimizer,
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        validation_data=validation_data,
        validation_split=validation_split,
        metrics=metrics,
        callbacks=callbacks,
        schedule=schedule,
        clip_grad_norm=clip_grad_norm,
        verbose=verbose,
    )
    if comm is not None and precision not in (None, "fp32"):
        msg = f"precision={precision!r} cannot be combined with comm= (distributed training)"
        raise ValueError(msg)
    mp = for_fit(run.model, precision)  # None: fit's own float32 path
    replicas = None
    if comm is not None:  # the ranks agree, then take rank 0's parameters
        run, replicas = _replicate(run, comm, seed)
    with run.model.backend.scope():  # refuses parameters that are not finite
        last_finite = LastFinite(run.model, epochs=run.epochs, batches=run.steps)
    books = _Bookkeeping(run)  # the callbacks' on_train_begin may still refuse the run

    # ---- training -----------------------------------------------------------------------
    model, X, y, epochs = run.model, run.X, run.y, run.epochs
    n, batch_size = X.shape[0], run.batch_size
    clip, max_norm, schedule, per_batch = run.clip, run.max_norm, run.schedule, run.per_batch
    state, progress, batch_hooks = books.state, books.progress, books.batch_hooks
    backend = model.backend
    xp = backend.xp
    params = model.parameters()
    reduction = getattr(loss, "reduction", "mean")
    index_name = dtype_name(index_dtype(backend))
    quiet = backend.quiet
    # the compiled step (portprop.compile_step), or None for the eager lines below
    step = step_for_fit(
        model,
        loss,
        optimizer,
        compile=compile,
        clip=clip,
        distributed=replicas is not None,
        mixed_precision=mp is not None,
    )
    if step is not None:
        step.check_data(X, y)  # once, as fit's checks did: the batches are not checked again
    # scope: CuPy computes on the backend's device, torch without autograd recording
    with _mode(model, True), backend.scope():
        try:
            if replicas is not None:
                replicas.attach()  # starts each layer's all-reduce as its backward ends
            for epoch in range(epochs):
                books.begin_epoch(epoch)
                if step is not None:
                    step.begin_epoch(epoch + 1)
                order = None
                if run.generator is not None:
                    order = backend.asarray(run.generator.permutation(n).astype(index_name))
                totals = Totals(xp, reduction, run.accuracy)
                lr_used = math.nan  # set by every step of a per-batch schedule
                b = 0
                for b, (start, stop) in enumerate(_batches(n, batch_size)):
                    lo, hi = (start, stop) if replicas is None else replicas.part(start, stop)
                    Xb = _take(xp, X, lo, hi, order)
                    yb = _take(xp, y, lo, hi, order)
                    # fit checks the loss and the gradients itself: NumPy's overflow
                    # warnings would only precede its TrainingDivergedError.
                    with quiet():
                        if step is not None:  # the same step, compiled; it checks itself
                            value = local = step.run(Xb, yb)
                            out = step.output
                        elif mp is not None:  # a low-precision working copy computes
                            out = mp.forward(Xb)
                            value = local = loss.forward(out, yb)
                            model.zero_grad()
                            mp.backward(loss.backward())
                        elif replicas is None:
                            out = model.forward(Xb)
                            value = local = loss.forward(out, yb)
                            model.zero_grad()
                            model.backward(loss.backward(), input_grad=False)
                        else:  # this rank's part; gradients and loss summed over the ranks
                            out, local, value = replicas.step(loss, Xb, yb, stop - start)
                        # The one host-device synchronization per batch, before the step:
                        # the loss, the gradients and the parameters the last step left.
                        norm = None
                        if step is not None:
                            finite = True
                        elif clip is None:
                            finite = last_finite.check(value)
                        else:
                            # clip_grad_norm_ returns the total norm before clipping: it
                            # covers the gradients (and it synchronizes already).
                            norm = float(clip(params, max_norm))
                            finite = math.isfinite(norm) and last_finite.check(value, grads=False)
                        if not finite:
                            raise last_finite.diverged(value, norm, epoch=epoch + 1, batch=b + 1)
                        if mp is not None:
                            mp.step(optimizer)  # skipped after an fp16 overflow
                        elif step is None:
                            optimizer.step()
                    if per_batch:
                        lr_used = optimizer.lr  # the history keeps the last step's lr
                        schedule.step()
                    if out is not None:  # None: this rank had no sample of the batch
                        totals.add(local, out, yb)
                    progress.batch_done(totals)
                    if batch_hooks:
                        batch_logs = {"loss": float(value), "size": float(stop - start)}
                        for cb in batch_hooks:
                            cb.on_batch_end(b, batch_logs)
                        if replicas is not None:
                            state.stop_training = replicas.any(state.stop_training)
                        if state.stop_training:
                            break
                if step is not None:
                    step.check()  # the steps the host has not read yet
                # the parameters the epoch's last step left, before anything reads them
                if not last_finite.check_parameters():
                    raise last_finite.diverged(None, None, epoch=epoch + 1, batch=b + 1)
                if replicas is not None:  # the metrics of the whole data set
                    replicas.reduce_totals(totals)
                stop_now = books.end_epoch(epoch, totals, lr_used, mp)
                if replicas is not None:
                    stop_now = replicas.any(stop_now)
                if stop_now:
                    break
        finally:
            progress.close()
            _clear_caches(model)
            if replicas is not None:
                replicas.detach()
    return books.finish()


def evaluate(
    model: Module,
    loss: Any,
    X: Any,
    y: Any,
    *,
    batch_size: int = 256,
    metrics: Sequence[str] | str = ("loss",),
) -> dict[str, float]:
    """The loss (and metrics) of ``model`` on ``(X, y)``, in evaluation mode.

    Batches are only a memory bound: the result equals the loss of one forward pass
    over all of ``X`` up to rounding (batch losses are weighted by their sizes).  ``X``
    and ``y`` are converted and checked as by :func:`fit` (see its Notes).

    Returns
    -------
    dict
        ``{"loss": float}``, plus ``"accuracy"`` when asked for.
    """
    model = check_model(model)
    check_loss(loss)
    batch_size = positive_int(batch_size, "batch_size")
    names = check_metrics(metrics)
    require_2d(X, "X")
    check_lengths(X, y, "X", "y")
    checks = Checks(model.backend)
    X, y = convert(model, loss, X, y, ("X", "y"), checks)
    require_samples(X, "X", "evaluate")
    checks.run()
    accuracy = accuracy_kind(loss, y, "y") if "accuracy" in names else None
    return _run_eval(model, loss, X, y, batch_size, accuracy).read()


def predict(model: Module, X: Any, *, batch_size: int = 256) -> Array:
    """The outputs of ``model`` for ``X``, ``(samples, outputs)``, on the model's backend.

    Runs in evaluation mode (each module's mode is restored) and in batches of
    ``batch_size``; what the forward passes keep for a backward pass is dropped at the
    end.  ``X`` is converted and checked as by :func:`fit` (see its Notes); ``X``
    without samples gives an empty ``(0, outputs)`` array.
    """
    model = check_model(model)
    batch_size = positive_int(batch_size, "batch_size")
    checks = Checks(model.backend)
    with model.backend.scope():
        X = as_features(model, X, "X", checks)
    checks.run()
    xp = model.backend.xp
    with _mode(model, False), model.backend.scope():
        try:
            outs = [
                model.forward(X[start:stop, ...])
                for start, stop in _batches(X.shape[0], batch_size)
            ]
            if not outs:  # no samples: one empty batch gives the right shape
                outs = [model.forward(X)]
        finally:
            _clear_caches(model)
    if len(outs) == 1:
        return outs[0]
    with model.backend.scope():
        return xp.concat(outs, axis=0)


# --------------------------------------------------------------------------------------
# What fit does before and around its batches
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FitRun:
    """Everything :func:`fit` receives, checked, with its data converted and split."""

    model: Module
    loss: Any
    optimizer: Any
    X: Array
    y: Array
    Xv: Array | None  # the validation data, or None
    yv: Array | None
    epochs: int
    batch_size: int
    steps: int  # batches per epoch
    accuracy: str | None  # how accuracy compares (validation.accuracy_kind); None: not asked
    log_keys: tuple[str, ...]
    callbacks: list[Callback]
    schedule: Any
    per_batch: bool  # the schedule is stepped after each batch, else after each epoch
    needs_metric: bool  # the schedule is stepped with the value of the log key `monitor`
    monitor: str
    clip: Callable[[list[Parameter], float], Any] | None  # clips the gradients, if asked
    max_norm: float
    generator: Any  # draws each epoch's order of the samples; None without shuffling
    verbose: int

    @classmethod
    def check(
        cls,
        model: Any,
        loss: Any,
        optimizer: Any,
        X: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool,
        seed: int | None,
        validation_data: tuple[Any, Any] | None,
        validation_split: float,
        metrics: Sequence[str] | str,
        callbacks: Sequence[Callback],
        schedule: Any,
        clip_grad_norm: float | None,
        verbose: int,
    ) -> _FitRun:
        """Check the arguments of :func:`fit` (see its Notes) and convert its data, in the
        order that decides which error a call with several bad arguments gets."""
        # ---- every check first: a bad argument must leave model and optimizer unchanged --
        model = check_model(model)
        check_loss(loss)
        check_optimizer(optimizer, model)
        epochs = positive_int(epochs, "epochs", low=0)
        batch_size = positive_int(batch_size, "batch_size")
        split = number(validation_split, "validation_split")
        if not 0.0 <= split < 1.0:
            msg = f"validation_split must lie in [0, 1), got {validation_split!r}"
            raise ValueError(msg)
        if split > 0.0 and validation_data is not None:
            msg = (
                "pass either validation_data or validation_split, not both (got validation_split="
                f"{validation_split!r} and validation_data)"
            )
            raise ValueError(msg)
        names = check_metrics(metrics)
        if isinstance(verbose, bool):
            verbose = int(verbose)
        if verbose not in (0, 1, 2):
            msg = f"verbose must be 0, 1 or 2, got {verbose!r}"
            raise ValueError(msg)
        callbacks = list(callbacks)
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                msg = f"callbacks[{i}] must be a portprop Callback, got {type(cb).__name__}"
                raise TypeError(msg)
        clip = None
        max_norm = 0.0
        if clip_grad_norm is not None:
            max_norm = number(clip_grad_norm, "clip_grad_norm")
            if not max_norm > 0.0 or math.isinf(max_norm):
                msg = f"clip_grad_norm must be a finite number > 0, got {clip_grad_norm!r}"
                raise ValueError(msg)
            clip = _optim.clip_grad_norm_
        if schedule is not None and not callable(getattr(schedule, "step", None)):
            msg = f"schedule must have a step() method, got {type(schedule).__name__}"
            raise TypeError(msg)
        generator = host_generator(seed) if shuffle else None
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                msg = (
                    "validation_data must be a pair (X_val, y_val), got "
                    f"{type(validation_data).__name__}"
                )
                raise TypeError(msg)
            require_2d(validation_data[0], "validation_data[0]")
            check_lengths(*validation_data, "validation_data[0]", "validation_data[1]")
        require_2d(X, "X")
        check_lengths(X, y, "X", "y")

        # ---- data: converted and checked once, then split ---------------------------------
        checks = Checks(model.backend)
        X, y = convert(model, loss, X, y, ("X", "y"), checks)
        require_samples(X, "X", "fit")
        Xv: Array | None = None
        yv: Array | None = None
        if validation_data is not None:
            vnames = ("validation_data[0]", "validation_data[1]")
            Xv, yv = convert(model, loss, *validation_data, vnames, checks)
            require_samples(Xv, vnames[0], "validation")
        checks.run()  # NaN, infinity, labels out of range: one synchronization in all
        if Xv is None and split > 0.0:
            n_all = X.shape[0]
            cut = math.floor(n_all * (1.0 - split))
            if cut in (0, n_all):
                msg = (
                    f"validation_split={validation_split!r} of {n_all} samples leaves "
                    f"{cut} for training and {n_all - cut} for validation; both need at least one"
                )
                raise ValueError(msg)
            X, Xv = X[:cut, ...], X[cut:, ...]
            y, yv = y[:cut, ...], y[cut:, ...]
        n = X.shape[0]
        accuracy = accuracy_kind(loss, y, "y") if "accuracy" in names else None
        per_batch = getattr(schedule, "interval", "epoch") == "batch"
        log_keys, needs_metric, monitor = _log_keys(names, Xv is not None, schedule, optimizer)
        return cls(
            model=model,
            loss=loss,
            optimizer=optimizer,
            X=X,
            y=y,
            Xv=Xv,
            yv=yv,
            epochs=epochs,
            batch_size=batch_size,
            steps=-(-n // batch_size),
            accuracy=accuracy,
            log_keys=log_keys,
            callbacks=callbacks,
            schedule=schedule,
            per_batch=per_batch,
            needs_metric=needs_metric,
            monitor=monitor,
            clip=clip,
            max_norm=max_norm,
            generator=generator,
            verbose=verbose,
        )


def _replicate(run: _FitRun, comm: Communicator, seed: int | None) -> tuple[_FitRun, Replicas]:
    """Check that the ranks agree on the run, give them rank 0's parameters, and keep
    progress (and callbacks marked ``rank_zero_only``) to rank 0."""
    replicas = Replicas(comm, run.model, run.loss)
    X, y = run.X, run.y
    replicas.agree(
        {
            "len(X)": X.shape[0],
            "features of X": X.shape[1],
            "shape of y[0]": tuple(y.shape[1:]),
            "validation samples": None if run.Xv is None else run.Xv.shape[0],
            "epochs": run.epochs,
            "batch_size": run.batch_size,
            "shuffling seed": seed if run.generator is not None else "no shuffling",
            "loss": f"{type(run.loss).__name__}({getattr(run.loss, 'reduction', '')})",
            "optimizer": type(run.optimizer).__name__,
        }
    )
    with run.model.backend.scope():
        replicas.broadcast_parameters()
    verbose = run.verbose if comm.rank == 0 else 0
    run = dataclasses.replace(run, callbacks=replicas.callbacks(run.callbacks), verbose=verbose)
    return run, replicas


def _log_keys(
    names: tuple[str, ...], validation: bool, schedule: Any, optimizer: Any
) -> tuple[tuple[str, ...], bool, str]:
    """The keys of the epoch logs; whether ``schedule`` steps on one of them, and which."""
    log_keys = list(names)
    if validation:
        log_keys += [f"val_{k}" for k in names]
    needs_metric = False
    monitor = ""
    if schedule is not None:
        needs_metric = bool(getattr(schedule, "needs_metric", False))
        if needs_metric:
            monitor = getattr(schedule, "monitor", None) or ("val_loss" if validation else "loss")
            if monitor not in log_keys:
                msg = (
                    f"schedule {type(schedule).__name__} monitors {monitor!r}, but fit logs "
                    f"only {', '.join(repr(k) for k in log_keys)}"
                )
                raise ValueError(msg)
        if isinstance(getattr(optimizer, "lr", None), float):
            log_keys.append("lr")
    return tuple(log_keys), needs_metric, monitor


class _Bookkeeping:
    """What :func:`fit` does around the batches of an epoch: the history, the callbacks,
    the progress display, the validation pass and a schedule stepped per epoch."""

    def __init__(self, run: _FitRun) -> None:
        """Share a new :class:`TrainingState` with the callbacks and call their
        ``on_train_begin``, where a callback may still refuse the run."""
        self.run = run
        self.history = History(
            history={k: [] for k in run.log_keys},
            params={"epochs": run.epochs, "batch_size": run.batch_size, "steps": run.steps},
        )
        self.state = TrainingState(
            model=run.model,
            loss=run.loss,
            optimizer=run.optimizer,
            epochs=run.epochs,
            batch_size=run.batch_size,
            steps=run.steps,
            log_keys=run.log_keys,
            history=self.history,
        )
        for cb in run.callbacks:
            cb.state = self.state
        for cb in run.callbacks:
            cb.on_train_begin({})  # EarlyStopping checks its monitor here
        self.batch_hooks = [
            cb for cb in run.callbacks if type(cb).on_batch_end is not Callback.on_batch_end
        ]
        self.eval_batch = max(run.batch_size, 256)
        self.progress = Progress(run.verbose, run.epochs, run.steps)
        self.started = 0.0

    def begin_epoch(self, epoch: int) -> None:
        self.state.epoch = epoch
        self.started = time.perf_counter()
        for cb in self.run.callbacks:
            cb.on_epoch_begin(epoch, {})
        self.progress.begin_epoch(epoch)

    def end_epoch(
        self, epoch: int, totals: Totals, lr_used: float, mp: MixedPrecision | None = None
    ) -> bool:
        """Validate, log, step the schedule and call back; whether training must stop."""
        run, history = self.run, self.history
        logs = totals.read()
        scaler = {} if mp is None else mp.logs()  # loss_scale, skipped_steps
        logs.update(scaler)
        if run.Xv is not None:
            val = _run_eval(run.model, run.loss, run.Xv, run.yv, self.eval_batch, run.accuracy)
            logs.update(val.read("val_"))
        if "lr" in history.history:
            # the lr of the epoch's last step: a per-batch schedule has already
            # moved optimizer.lr on to the next batch's value
            logs["lr"] = float(lr_used if run.per_batch else run.optimizer.lr)
        seconds = time.perf_counter() - self.started
        history.epoch.append(epoch)
        history.time_per_epoch.append(seconds)
        for k in (*run.log_keys, *scaler):
            history.history.setdefault(k, []).append(logs[k])
        self.progress.end_epoch(epoch, logs, seconds)
        if run.schedule is not None and not run.per_batch:
            if run.needs_metric:
                run.schedule.step(logs[run.monitor])
            else:
                run.schedule.step()
        for cb in run.callbacks:
            cb.on_epoch_end(epoch, logs)
        return self.state.stop_training

    def finish(self) -> History:
        """Call the callbacks' ``on_train_end`` with the last epoch's logs."""
        final = {k: v[-1] for k, v in self.history.history.items() if v}
        for cb in self.run.callbacks:
            cb.on_train_end(final)
        return self.history


# --------------------------------------------------------------------------------------
# Modes, batches and the validation pass
# --------------------------------------------------------------------------------------


@contextmanager
def _mode(model: Module, training: bool) -> Iterator[None]:
    """Put every module in training or evaluation mode, and restore each one's mode."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


def _clear_caches(model: Module) -> None:
    for m in model.modules():
        m._clear_cache()


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _take(xp: Any, a: Array, start: int, stop: int, order: Array | None) -> Array:
    if order is None:
        return a[start:stop, ...]
    return xp.take(a, order[start:stop], axis=0)


def _run_eval(
    model: Module, loss: Any, X: Array, y: Array, batch_size: int, accuracy: str | None
) -> Totals:
    totals = Totals(model.backend.xp, getattr(loss, "reduction", "mean"), accuracy)
    with _mode(model, False), model.backend.scope():
        try:
            for start, stop in _batches(X.shape[0], batch_size):
                out = model.forward(X[start:stop, ...])
                target = y[start:stop, ...]
                totals.add(loss.forward(out, target), out, target)
        finally:
            _clear_caches(model)
    return totals
