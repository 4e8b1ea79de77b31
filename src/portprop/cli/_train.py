"""``portprop train``: split, standardize, build, fit, report, save and plot.

The model (``Linear`` layers with activations and dropout between them) and the
optimizer are built from the flags here; :func:`_train` runs the whole command.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from portprop import plots
from portprop.backend import Backend, get_backend, manual_seed
from portprop.cli._common import (
    ACTIVATIONS,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    PRECISIONS,
    WRITTEN_BY,
    _boundary_path,
    _check_parent,
    _table,
    _UserError,
    _where,
)
from portprop.cli._data import _load_data
from portprop.cli._task import _task_for_training
from portprop.datasets import Standardizer, train_test_split
from portprop.distributed import Communicator
from portprop.distributed import init as init_distributed
from portprop.io import save
from portprop.layers import BatchNorm1d, Dropout, LayerNorm, Linear
from portprop.module import Module, Parameter, Sequential
from portprop.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from portprop.training import evaluate, fit


def _build_model(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    activation: str,
    dropout: float,
    norm: str = "none",
    backend: Backend,
    dtype: Any,
) -> Sequential:
    where = {"backend": backend, "dtype": dtype}
    layers: list[Module] = []
    for width in hidden:
        layers.append(Linear(n_in, width, **where))
        if norm == "layer":
            layers.append(LayerNorm(width, **where))
        elif norm == "batch":
            layers.append(BatchNorm1d(width, **where))
        layers.append(ACTIVATIONS[activation](**where))
        if dropout > 0:
            layers.append(Dropout(dropout, **where))
        n_in = width
    layers.append(Linear(n_in, n_out, **where))
    return Sequential(*layers)


def _build_optimizer(
    name: str, params: Iterable[Parameter], lr: float | None, momentum: float | None
) -> Optimizer:
    if momentum is not None and name not in DEFAULT_MOMENTUM:
        msg = f"--momentum applies to sgd and rmsprop, not to {name} (whose betas play that part)"
        raise _UserError(msg)
    rate = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return SGD(
            params, lr=rate, momentum=DEFAULT_MOMENTUM["sgd"] if momentum is None else momentum
        )
    if name == "rmsprop":
        m = DEFAULT_MOMENTUM["rmsprop"] if momentum is None else momentum
        return RMSprop(params, lr=rate, momentum=m)
    if name == "adamw":
        return AdamW(params, lr=rate)
    return Adam(params, lr=rate)


def _train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # distributed training (issue 10): under a launcher every rank trains (fit(comm=...));
    # rank 0 alone prints and writes files
    engine = getattr(args, "engine", "auto")
    with init_distributed(engine=None if engine == "auto" else engine) as comm:
        if comm.rank != 0:
            args = argparse.Namespace(**{**vars(args), "quiet": True, "save": None, "plot": None})
            out = io.StringIO()
        return _train_ranks(args, out, err, comm)


def _train_ranks(args: argparse.Namespace, out: TextIO, err: TextIO, comm: Communicator) -> int:
    name = comm.local_backend(args.backend) if comm.size > 1 else args.backend  # own GPU
    backend = get_backend(backend=name)
    dtype = backend.float_dtype(args.dtype)
    if args.precision != "fp32":  # refused before any data is read
        if args.dtype != "float32":
            msg = f"--precision {args.precision} needs --dtype float32 (the master weights)"
            raise _UserError(msg)
        if comm.size > 1:
            msg = f"--precision {args.precision} cannot be combined with data-parallel training"
            raise _UserError(msg)
        backend.float_dtype(PRECISIONS[args.precision])  # DtypeUnsupportedError
    _check_parent(args.save, "--save")
    _check_parent(args.plot, "--plot")
    if args.plot:
        plots.require_matplotlib()

    def note(text: str) -> None:
        if not args.quiet:
            err.write(text + "\n")

    data = _load_data(
        args.dataset,
        samples=args.samples,
        seed=args.seed,
        label_column=args.label_column,
        features_key=args.features_key,
        labels_key=args.labels_key,
    )
    task = _task_for_training(args.loss, data.y)
    stratify = task.is_classifier
    X_train, X_test, y_train, y_test = train_test_split(
        data.X, data.y, test_size=args.test_size, stratify=stratify, seed=args.seed
    )
    parts = {"train": (X_train, y_train)}
    if args.validation_split > 0:
        X_train, X_val, y_train, y_val = train_test_split(
            X_train, y_train, test_size=args.validation_split, stratify=stratify, seed=args.seed
        )
        parts = {"train": (X_train, y_train), "validation": (X_val, y_val)}
    parts["test"] = (X_test, y_test)
    standardizer = Standardizer().fit(X_train)
    scaled = {k: (standardizer.transform(X), task.targets(y)) for k, (X, y) in parts.items()}

    manual_seed(args.seed)
    n_features = data.X.shape[1]
    model = _build_model(
        n_features,
        args.hidden,
        task.n_outputs,
        activation=args.activation,
        dropout=args.dropout,
        norm=args.norm,
        backend=backend,
        dtype=dtype,
    )
    optimizer = _build_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum)
    loss = task.make_loss()
    kind = f"{len(task.classes)} classes" if task.classes is not None else "regression"
    sizes = ", ".join(f"{k} {v[0].shape[0]}" for k, v in parts.items())
    note(f"data: {data.name}: {data.X.shape[0]} samples, {n_features} features, {kind}; {sizes}")
    note(
        f"model: {' -> '.join(str(w) for w in (n_features, *args.hidden, task.n_outputs))} "
        f"({args.activation}{f', {args.norm} norm' if args.norm != 'none' else ''}"
        f"{f', dropout {args.dropout:g}' if args.dropout else ''}), "
        f"loss {args.loss}, {type(optimizer).__name__} lr {optimizer.lr:g}; {_where(model)}"
        + (f", computing in {PRECISIONS[args.precision]}" if args.precision != "fp32" else "")
    )
    if comm.size > 1:  # distributed training (issue 10)
        note(f"data-parallel: {comm.size} processes ({comm.engine}), global batches")
    if args.verbose:
        note(repr(model))

    history = fit(
        model,
        loss,
        optimizer,
        *scaled["train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation_data=scaled.get("validation"),
        metrics=task.metrics,
        verbose=0 if args.quiet else 2 if args.verbose else 1,
        comm=comm if comm.size > 1 else None,  # distributed training (issue 10)
        precision=args.precision,
    )
    results = {k: evaluate(model, loss, X, t, metrics=task.metrics) for k, (X, t) in scaled.items()}
    epochs = len(history.epoch)
    total = sum(history.time_per_epoch)
    out.write(_table([(k, scaled[k][0].shape[0], results[k]) for k in scaled]))
    out.write(f"time per epoch: {total / epochs:.3g} s ({epochs} epochs, {total:.3g} s in all)\n")
    out.write(f"{_where(model)}\n")

    if args.save:
        extra = {
            "written_by": WRITTEN_BY,
            "standardizer": standardizer.to_dict(),
            "loss": task.loss,
            "classes": task.classes,
            "data": data.source,
            "split": {
                "test_size": args.test_size,
                "validation_split": args.validation_split,
                "seed": args.seed,
                "stratify": stratify,
            },
            "training": {
                "hidden": list(args.hidden),
                "activation": args.activation,
                "norm": args.norm,
                "precision": args.precision,
                "dropout": args.dropout,
                "optimizer": args.optimizer,
                "lr": optimizer.lr,
                "epochs": epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "backend": model.backend.name,
            },
            "metrics": results,
            "history": history.history,
        }
        save(args.save, model, optimizer, epoch=epochs, extra=extra)
        note(f"saved the model to {args.save}")
    if args.plot:
        title = f"{data.name}: {args.loss}, {type(optimizer).__name__}"
        plots.plot_history(history, args.plot, title=title)
        note(f"wrote the learning curves to {args.plot}")
        if n_features == 2 and task.classes is not None:
            boundary = _boundary_path(args.plot)
            plots.plot_decision_boundary(
                model,
                X_test,
                task.indices(y_test),
                boundary,
                standardizer,
                class_names=task.classes,
                title=f"Decision boundary and test samples ({data.name})",
            )
            note(f"wrote the decision boundary to {boundary}")
    return 0
