"""The epochs of the stochastic solvers, as scikit-learn runs them: the same shuffles
(drawn from the estimator's ``random_state`` stream, after the initial weights and the
validation split), the same batches, the loss of each epoch, the stopping rule, the
learning-rate schedules and the ``verbose`` lines.

What portprop adds: the loss of the epoch is summed on the device and read back once
per epoch, and after an epoch whose loss is not finite the parameters are checked at
once (scikit-learn checks them after the last epoch): non-finite parameters raise
scikit-learn's error then, instead of after ``max_iter`` wasted epochs.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import shuffle as shuffled

from portprop.optim import Optimizer
from portprop.sklearn._network import _is_sparse, _Network, _row_slice

if TYPE_CHECKING:
    from portprop.sklearn._base import _BaseMLP
    from portprop.sklearn._distributed import _Ranks

Array = Any

NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large "
    "values and need to be preprocessed."
)


@dataclass
class _Data:
    """Training rows: ``X`` (a device array, or SciPy sparse on the host), ``Y``
    ``(n, outputs)`` on the device, the weights on the device and on the host."""

    X: Any
    Y: Array
    w: Array | None
    w_host: Any

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def rows(self, net: _Network, index: Any) -> tuple[Any, Array, Array | None, float]:
        """The batch of ``index`` (a slice, or host indices), and its total weight."""
        backend = net.backend
        if isinstance(index, slice):
            X = _row_slice(self.X, index.start, index.stop)
            Y = self.Y[index, ...]
            w = None if self.w is None else self.w[index]
        else:
            with backend.scope():
                device_index = backend.asarray(index)
                take = backend.xp.take
                X = self.X[index] if _is_sparse(self.X) else take(self.X, device_index, axis=0)
                Y = take(self.Y, device_index, axis=0)
                w = None if self.w is None else take(self.w, device_index, axis=0)
        return net.as_batch(X), Y, w, self.weight(index)

    def weight(self, index: Any) -> float:
        """The total weight of the rows of ``index`` (their number without weights)."""
        if self.w_host is not None:
            return float(self.w_host[index].sum())
        if isinstance(index, slice):
            return float(len(range(*index.indices(self.n))))
        return float(len(index))

    def batch(
        self, net: _Network, ranks: _Ranks | None, order: Any, start: int, stop: int
    ) -> tuple[Any, Array | None, Array | None, float]:
        """This rank's rows of the global batch ``[start, stop)`` of ``order`` (``None``:
        the rows in order), ``X`` ``None`` when it has none, and the global batch's
        total weight (the whole batch without ``ranks``)."""

        def index(lo: int, hi: int) -> Any:
            return slice(lo, hi) if order is None else order[lo:hi]

        if ranks is None:
            return self.rows(net, index(start, stop))
        lo, hi = ranks.part(start, stop)
        weight = self.weight(index(start, stop))
        if lo == hi:
            return None, None, None, weight
        X, Y, w, _ = self.rows(net, index(lo, hi))
        return X, Y, w, weight


def _say(line: str) -> None:
    """One of scikit-learn's ``verbose`` lines, on standard output as scikit-learn prints."""
    sys.stdout.write(line + "\n")


def _batch_size(est: _BaseMLP, n_samples: int) -> int:
    if est.batch_size == "auto":
        return min(200, n_samples)
    if int(est.batch_size) > n_samples:
        warnings.warn(
            "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
            UserWarning,
            stacklevel=5,
        )
    return int(min(est.batch_size, n_samples))


def run_epochs(
    est: _BaseMLP,
    net: _Network,
    optimizers: list[Optimizer],
    train: _Data,
    validation: tuple[Any, Any, Any] | None,
    *,
    incremental: bool,
    random_state: np.random.RandomState,
    ranks: _Ranks | None = None,
) -> None:
    """Train for up to ``max_iter`` epochs (one with ``incremental``), updating the
    estimator's bookkeeping after each; with ``ranks`` (``comm=``), data-parallel
    (see :mod:`portprop.sklearn._distributed`), printing on rank 0 only."""
    n = train.n
    batch_size = _batch_size(est, n)
    order = np.arange(n)
    est.n_iter_ = 0
    backend = net.backend
    verbose = bool(est.verbose) and (ranks is None or ranks.talks)
    reduce = None if ranks is None else ranks.sum
    try:
        for _ in range(est.max_iter):
            if est.shuffle:
                order = shuffled(order, random_state=random_state)
            total: Any = 0.0
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                X, Y, w, weight = train.batch(
                    net, ranks, order if est.shuffle else None, start, stop
                )
                with backend.quiet():
                    value = net.step_loss(X, Y, w, weight, reduce)
                    for optimizer in optimizers:
                        optimizer.step()
                    total = total + value * (stop - start)
            loss = float(total) / n
            if not math.isfinite(loss):
                # scikit-learn checks the parameters once, after the last epoch; once
                # they are not finite they stay so, and the epochs left are wasted
                est._require_finite_parameters()
            est.n_iter_ += 1
            est.t_ += n
            est.loss_ = loss
            est.loss_curve_.append(loss)
            if verbose:
                _say(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
            _update_no_improvement_count(est, net, validation, verbose=verbose)
            if est.learning_rate == "invscaling" and est.solver == "sgd":
                optimizers[0].lr = est.learning_rate_init / (est.t_ + 1) ** est.power_t
            if est._no_improvement_count > est.n_iter_no_change:
                if _stops(est, optimizers[0], verbose=verbose):
                    break
                est._no_improvement_count = 0
            if incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and "
                    "the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.", UserWarning, stacklevel=4)
    if validation is not None and est._best_parameters is not None:
        for p, best in zip(net.model.parameters(), est._best_parameters, strict=True):
            p.data = backend.asarray(best, copy=True)


def _update_no_improvement_count(
    est: _BaseMLP, net: _Network, validation: tuple[Any, Any, Any] | None, *, verbose: bool
) -> None:
    """scikit-learn's rule: an epoch improves when the loss falls (or the validation
    score rises) by more than ``tol`` against the best so far."""
    if validation is not None:
        score = est._score_on(*validation)
        assert est.validation_scores_ is not None
        est.validation_scores_.append(score)
        if verbose:
            _say(f"Validation score: {score:f}")
        assert est.best_validation_score_ is not None
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_parameters = _copy_parameters(net)
        return
    loss = est.loss_curve_[-1]
    assert est.best_loss_ is not None
    if loss > est.best_loss_ - est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    est.best_loss_ = min(est.best_loss_, loss)


def _stops(est: _BaseMLP, optimizer: Optimizer, *, verbose: bool) -> bool:
    """After ``n_iter_no_change`` epochs without improvement: stop, or, with
    ``learning_rate="adaptive"`` (``sgd``), divide the learning rate by 5 until it is
    at most 1e-6."""
    what = "Validation score" if est.early_stopping else "Training loss"
    msg = (
        f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} "
        "consecutive epochs."
    )
    if est.solver != "sgd" or est.learning_rate != "adaptive":
        if verbose:
            _say(msg + " Stopping.")
        return True
    if optimizer.lr <= 1e-6:
        if verbose:
            _say(msg + " Learning rate too small. Stopping.")
        return True
    optimizer.lr /= 5.0
    if verbose:
        _say(msg + f" Setting learning rate to {optimizer.lr:f}")
    return False


def _copy_parameters(net: _Network) -> list[Array]:
    backend = net.backend
    with backend.scope():
        return [backend.xp.asarray(p.data, copy=True) for p in net.model.parameters()]
