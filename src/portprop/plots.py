"""Plots of training: the learning curves and, for 2-D inputs, the decision boundary.

matplotlib is an optional dependency (``pip install 'portprop[plot]'``), imported when a
function here is called, never by ``import portprop``.  Figures are drawn with the Agg
canvas directly (no :mod:`matplotlib.pyplot`, so no global backend is switched and no
window opens), and written atomically: to a hidden temporary file beside the target,
then renamed onto it with :func:`os.replace`, so that an earlier file at that path
stays intact if drawing or writing fails.  The file format follows the suffix of the
path (``.png`` when it has none).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from portprop.backend import backend_of, is_array
from portprop.io.atomic import write_atomically
from portprop.module import Module
from portprop.training import History, predict

__all__ = ["plot_decision_boundary", "plot_history"]

PathLike = str | os.PathLike[str]

#: What to install when matplotlib is missing.
INSTALL_HINT = "pip install 'portprop[plot]'"

_TRAIN_STYLE: dict[str, Any] = {"color": "tab:blue", "linestyle": "-"}
_VALIDATION_STYLE: dict[str, Any] = {"color": "tab:orange", "linestyle": "--"}


def require_matplotlib() -> None:
    """Raise :class:`ImportError` (saying what to install) unless matplotlib is present."""
    _matplotlib()


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's ``Figure`` and ``FigureCanvasAgg`` classes, imported on first use."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        msg = f"portprop's plots need matplotlib, which is not installed: {INSTALL_HINT}"
        raise ImportError(msg) from exc
    return Figure, FigureCanvasAgg


def _save(fig: Any, canvas_class: Any, path: PathLike) -> None:
    canvas_class(fig)  # attach the Agg canvas
    suffix = Path(os.fspath(path)).suffix.lstrip(".").lower() or "png"
    write_atomically(path, lambda f: fig.savefig(f, format=suffix, dpi=fig.dpi))


# --------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------


def _curves(history: History | Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    values = history.history if isinstance(history, History) else history
    if not isinstance(values, Mapping):
        msg = (
            "history must be a portprop History or a dict of metric name to per-epoch "
            f"values, got {type(history).__name__}"
        )
        raise TypeError(msg)
    curves = {str(k): [float(v) for v in vs] for k, vs in values.items()}
    if not curves.get("loss"):
        msg = f"history has no 'loss' values to plot (its keys: {sorted(curves)})"
        raise ValueError(msg)
    return curves


def plot_history(
    history: History | Mapping[str, Sequence[float]],
    path: PathLike,
    *,
    title: str | None = None,
) -> None:
    """Plot the loss and the accuracy per epoch, on the training and validation data.

    Parameters
    ----------
    history : History or dict of str to list of float
        What :func:`portprop.fit` returns, or its ``history`` dict: ``"loss"`` is
        required; ``"val_loss"``, ``"accuracy"`` and ``"val_accuracy"`` are drawn when
        present.  Epochs are numbered from 1 on the x-axis.
    path : str or path-like
        The image to write (``.png``, ``.svg``, ``.pdf``, ...), atomically.
    title : str, optional
        A title above both panels.

    The loss panel uses a logarithmic y-axis when every loss is positive (a loss falls
    by orders of magnitude); the accuracy panel (only with accuracies) is linear.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install 'portprop[plot]'``).
    """
    curves = _curves(history)
    Figure, canvas = _matplotlib()
    panels = [("loss", "Loss")]
    if curves.get("accuracy") or curves.get("val_accuracy"):
        panels.append(("accuracy", "Accuracy"))
    fig = Figure(figsize=(5.0 * len(panels), 4.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, legend, style in (
            (key, "train", _TRAIN_STYLE),
            (f"val_{key}", "validation", _VALIDATION_STYLE),
        ):
            values = curves.get(name)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            few = len(values) <= 30
            ax.plot(epochs, values, label=legend, marker="o" if few else None, ms=3, **style)
        if key == "loss" and all(v > 0 and math.isfinite(v) for v in curves["loss"]):
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    _save(fig, canvas, path)


# --------------------------------------------------------------------------------------
# Decision boundary
# --------------------------------------------------------------------------------------


def _host(x: Any, name: str) -> np.ndarray[Any, Any]:
    if is_array(x):
        return np.asarray(backend_of(x, names=(name,)).to_host(x))
    return np.asarray(x)


def plot_decision_boundary(
    model: Module,
    X: Any,
    y: Any,
    path: PathLike,
    standardizer: Any = None,
    *,
    class_names: Sequence[Any] | None = None,
    title: str | None = None,
    resolution: int = 300,
) -> None:
    """Plot the classes a model predicts over the plane, with the samples on top.

    The model is evaluated with :func:`portprop.predict` on its own backend, on a
    ``resolution`` x ``resolution`` grid that covers the samples (plus a margin of 5%);
    each region is filled with its predicted class's colour and the boundaries are
    drawn.  The samples are drawn in the colour of their true class; the misclassified
    ones are circled in red.

    Parameters
    ----------
    model : Module
        A classifier of 2 inputs: several outputs are read as class scores (the class
        is their argmax), a single output as a logit (class 1 where it is positive, as
        for :class:`~portprop.BCEWithLogitsLoss`).
    X : array, shape (samples, 2)
        The samples in their original units, of any backend.
    y : array, shape (samples,)
        Their class indices, ``0`` to ``classes - 1``.
    path : str or path-like
        The image to write, atomically.
    standardizer : Standardizer, optional
        Applied to the grid before the model sees it, so that the axes show the
        original units of ``X`` (pass the one the model was trained behind).
    class_names : sequence, optional
        Legend names of the classes (default: their indices).
    title : str, optional
    resolution : int, default 300
        Grid points along each axis.

    Raises
    ------
    ValueError
        If ``X`` is not ``(samples, 2)`` or ``y`` does not hold one label per sample.
    ImportError
        If matplotlib is not installed (``pip install 'portprop[plot]'``).
    """
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    points = _host(X, "X").astype(np.float64)
    labels = _host(y, "y")
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        msg = (
            "plot_decision_boundary draws 2-D inputs: X must have shape (samples, 2), "
            f"got {points.shape}"
        )
        raise ValueError(msg)
    if labels.shape != (points.shape[0],):
        msg = f"y must hold one label per sample, shape ({points.shape[0]},), got {labels.shape}"
        raise ValueError(msg)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        msg = f"resolution must be an int >= 2, got {resolution!r}"
        raise ValueError(msg)
    if labels.dtype.kind not in "iub" or (labels.size and labels.min() < 0):
        msg = f"y must hold class indices 0, 1, ..., got dtype {labels.dtype}"
        raise ValueError(msg)
    labels = labels.astype(np.int64)
    Figure, canvas = _matplotlib()

    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.05 * np.where(high > low, high - low, 1.0)
    low, high = low - margin, high + margin
    gx, gy = np.meshgrid(
        np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
    )
    grid = np.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    grid_class, n_classes = _classify(model, grid, standardizer)
    n_classes = max(n_classes, int(labels.max()) + 1)
    names = list(range(n_classes)) if class_names is None else list(class_names)

    colours = [f"C{i % 10}" for i in range(n_classes)]
    from matplotlib.colors import ListedColormap  # noqa: PLC0415 - after _matplotlib()

    cmap = ListedColormap(colours)
    levels = np.arange(n_classes + 1) - 0.5
    fig = Figure(figsize=(6.0, 5.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    regions = grid_class.reshape(gx.shape)
    ax.contourf(gx, gy, regions, levels=levels, cmap=cmap, alpha=0.25)
    if np.unique(regions).size > 1:
        ax.contour(gx, gy, regions, levels=levels[1:-1], colors="k", linewidths=1.0)
    for c in range(n_classes):
        mask = labels == c
        if np.any(mask):
            name = names[c] if c < len(names) else c
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=12 if labels.size > 200 else 24,
                color=colours[c],
                edgecolors="white",
                linewidths=0.3,
                label=f"class {name}",
            )
    predicted, _ = _classify(model, points, standardizer)
    wrong = predicted != labels
    if np.any(wrong):
        ax.scatter(
            points[wrong, 0],
            points[wrong, 1],
            s=60,
            facecolors="none",
            edgecolors="red",
            linewidths=1.2,
            label=f"misclassified ({int(wrong.sum())} of {labels.size})",
        )
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    span = (high - low).astype(float)
    if 1 / 3 <= span[0] / span[1] <= 3:
        ax.set_aspect("equal")
    ax.set_xlabel("feature 0")
    ax.set_ylabel("feature 1")
    ax.set_title(title or "Decision boundary")
    ax.legend(loc="best", fontsize="small", framealpha=0.8)
    _save(fig, canvas, path)


def _classify(
    model: Module, points: np.ndarray[Any, Any], standardizer: Any
) -> tuple[np.ndarray[Any, Any], int]:
    """The class the model predicts for each point, and the number of classes."""
    features = points if standardizer is None else standardizer.transform(points)
    scores = np.asarray(model.backend.to_host(predict(model, features, batch_size=8192)))
    if scores.ndim != 2:
        msg = f"the model's outputs must be 2-D (samples, outputs), got shape {scores.shape}"
        raise ValueError(msg)
    if scores.shape[1] == 1:  # one logit
        return (scores[:, 0] > 0).astype(np.int64), 2
    return np.argmax(scores, axis=1), int(scores.shape[1])
