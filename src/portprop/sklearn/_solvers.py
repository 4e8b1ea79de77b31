"""What :func:`portprop.fit` runs for the estimators: the solver table, the losses in
scikit-learn's form (:class:`_CrossEntropy`, :class:`_HalfSquaredError`), the optimizer
wrapper that adds scikit-learn's L2 penalty (:class:`_Solver`), the per-epoch
bookkeeping and stopping rule (:class:`_Stopping`), and the optimizer state in host
memory for pickling (:func:`_host_state`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from portprop import functional as F
from portprop.backend import Backend
from portprop.losses import CrossEntropyLoss, MSELoss
from portprop.module import Module, Parameter
from portprop.optim import Optimizer
from portprop.training import Callback

if TYPE_CHECKING:
    from portprop.sklearn._base import _BaseMLP

Array = Any

_SOLVERS = ("adam", "adamw", "rmsprop", "sgd")


class _CrossEntropy(CrossEntropyLoss):
    """Cross-entropy (mean over the batch) that remembers the size of its last batch."""

    batch_size = 0

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:
        self.batch_size = pred.shape[0]
        return super()._forward(xp, pred, target)


class _HalfSquaredError(MSELoss):
    r"""scikit-learn's regression loss :math:`\frac{1}{2n}\sum (f(x) - y)^2`, summed over
    the outputs and averaged over the ``n`` samples of the batch (whose size it keeps)."""

    batch_size = 0

    def _forward(self, xp: Any, pred: Array, target: Array) -> Array:  # noqa: ARG002
        self.batch_size = pred.shape[0]
        self._c = 0.5 / pred.shape[0]
        assert self._backend is not None
        value, self._diff = F.mse_loss(self._backend.sum, pred, target, self._c)
        return value


class _Solver:
    r"""The optimizer(s) that :func:`portprop.fit` steps, plus scikit-learn's penalty.

    With ``coupled_alpha`` :math:`\alpha > 0`, each step first adds :math:`\alpha / n`
    times each weight matrix to its gradient (``n``: the batch size the loss saw) and
    sums :math:`\frac{\alpha}{2}\lVert W \rVert^2` on the device, the penalty's share of
    the epoch's summed loss; :meth:`take_penalty` reads it back once per epoch.
    """

    def __init__(
        self,
        optimizers: list[Optimizer],
        weights: list[Parameter],
        coupled_alpha: float,
        loss: _CrossEntropy | _HalfSquaredError,
        backend: Backend,
    ) -> None:
        self.optimizers = optimizers
        self.params = [p for opt in optimizers for p in opt.params]
        self.weights = weights
        self.coupled_alpha = coupled_alpha
        self.loss = loss
        self.backend = backend
        self._squares: Array | None = None  # sum of ||W||^2 over weights and steps

    @property
    def lr(self) -> float:
        return self.optimizers[0].lr

    def step(self) -> None:
        alpha = self.coupled_alpha
        if alpha > 0.0:
            backend, xp = self.backend, self.backend.xp
            decay = alpha / self.loss.batch_size
            with backend.scope():
                for w in self.weights:
                    if w.grad is None:
                        continue
                    square = xp.sum(w.data * w.data)
                    self._squares = square if self._squares is None else self._squares + square
                    w.grad = backend.add_scaled(w.grad, decay, w.data)
        for opt in self.optimizers:
            opt.step()

    def take_penalty(self) -> float:
        """The penalty summed since the last call (one read-back), and reset it."""
        total = 0.0 if self._squares is None else float(self._squares)
        self._squares = None
        return 0.5 * self.coupled_alpha * total


class _Stopping(Callback):
    """scikit-learn's bookkeeping and stopping rule, run by :func:`portprop.fit` after
    each epoch (see ``_update_no_improvement_count`` in scikit-learn)."""

    def __init__(
        self,
        estimator: _BaseMLP,
        solver: _Solver,
        n_train: int,
        validation: tuple[Array, Any] | None,
        scores: list[float],
        incremental: bool,
        loss_scale: float,
    ) -> None:
        self.estimator = estimator
        self.scores = scores
        self.loss_scale = loss_scale
        self.solver = solver
        self.n_train = n_train
        self.validation = validation
        self.incremental = incremental
        self.converged = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # noqa: ARG002
        est = self.estimator
        loss = logs["loss"] * self.loss_scale + self.solver.take_penalty() / self.n_train
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_curve_.append(loss)
        if est.verbose:
            sys.stderr.write(f"Iteration {est.n_iter_}, loss = {loss:.8f}\n")
        if self.validation is not None:
            score = est._validation_score(*self.validation)
            self.scores.append(score)
            if est.verbose:
                sys.stderr.write(f"Validation score: {score:f}\n")
            if score < est._best_score + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est._best_score:
                est._best_score = est.best_validation_score_ = score
                est._best_parameters = _copy_parameters(est.model_)
        else:
            if loss > est._best_loss - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est._best_loss = est.best_loss_ = min(est._best_loss, loss)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            if est.verbose:
                sys.stderr.write(
                    f"{what} did not improve more than tol={est.tol:f} for "
                    f"{est.n_iter_no_change} consecutive epochs. Stopping.\n"
                )
            self.converged = True
            if self.state is not None and not self.incremental:
                self.state.stop_training = True


def _copy_parameters(model: Module) -> list[Array]:
    xp = model.backend.xp
    with model.backend.scope():
        return [xp.asarray(p.data, copy=True) for p in model.parameters()]


def _host_state(backend: Backend, optimizer: Optimizer) -> dict[str, Any]:
    saved = optimizer.state_dict()
    saved["state"] = [
        {k: v if k == "step" else backend.to_host(v) for k, v in s.items()} for s in saved["state"]
    ]
    return saved
