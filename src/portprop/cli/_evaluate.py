"""``portprop evaluate``: a saved model's loss and accuracy on a data set.

Which samples it takes (``--split``: the recorded test split, or all of them) and the
comparison of the data set with the one the model was trained on.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from portprop.cli._common import DEFAULTS, _table, _UserError, _where
from portprop.cli._data import _load_data
from portprop.cli._task import _load_saved
from portprop.datasets import train_test_split
from portprop.training import evaluate

#: The most disk points that ``evaluate`` draws because a checkpoint records them (its
#: ``extra`` is read from a file, so a damaged one could ask for any number); a larger
#: ``--samples`` given on the command line is the user's choice.
_MAX_RECORDED_SAMPLES = 10_000_000


def _same_source(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    keys = ("dataset", "path", "samples", "seed", "label_column", "features_key", "labels_key")
    return all(saved.get(k) == current.get(k) for k in keys)


def _evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    saved = _load_saved(args.model, args.backend, err)
    recorded, split = saved.source, saved.split
    samples = args.samples or recorded.get("samples") or DEFAULTS["samples"]
    if args.dataset == "disk" and args.samples is None and samples > _MAX_RECORDED_SAMPLES:
        msg = (
            f"{args.model}: the checkpoint records {samples} disk points, more than the "
            f"{_MAX_RECORDED_SAMPLES} that evaluate draws again by itself: pass --samples"
        )
        raise _UserError(msg)
    seed = args.seed
    if seed is None:
        seed = recorded.get("seed", DEFAULTS["seed"]) if recorded.get("dataset") == "disk" else 0
    data = _load_data(
        args.dataset,
        samples=int(samples),
        seed=int(seed),
        label_column=args.label_column,
        features_key=args.features_key,
        labels_key=args.labels_key,
    )
    if data.X.shape[1] != saved.n_features:
        msg = (
            f"{data.name} has {data.X.shape[1]} features, but the model of {args.model!r} "
            f"takes {saved.n_features}"
        )
        raise _UserError(msg)
    which = args.split
    if which == "auto":
        which = "test" if split and _same_source(recorded, data.source) else "all"
    X, y = data.X, data.y
    label = "all"
    if which == "test":
        if split is None:
            msg = f"{args.model!r} records no train/test split; use --split all"
            raise _UserError(msg)
        _, X, _, y = train_test_split(
            X,
            y,
            test_size=split["test_size"],
            stratify=bool(split["stratify"]),
            seed=int(split["seed"]),
        )
        label = "test"
    task = saved.task
    model = saved.checkpoint.model
    features = X if saved.standardizer is None else saved.standardizer.transform(X)
    metrics = evaluate(
        model,
        task.make_loss(),
        features,
        task.targets(y),
        batch_size=args.batch_size,
        metrics=task.metrics,
    )
    if label == "test":
        out.write(f"{data.name}: the test split recorded in {args.model}\n")
    else:
        out.write(f"{data.name}: every sample\n")
    out.write(_table([(label, X.shape[0], metrics)]))
    out.write(f"{_where(model)}\n")
    return 0
