"""portprop.plots: learning curves and decision boundaries, written atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import portprop as pp
from portprop import plots

matplotlib = pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> np.ndarray:
    """The image, after checking that it is a real, non-blank PNG."""
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3
    assert float(np.var(image[..., :3])) > 0.0
    return image


def no_temporaries(folder: Path) -> bool:
    return not list(folder.glob("*.tmp"))


HISTORY = {
    "loss": [0.7, 0.4, 0.2, 0.15],
    "accuracy": [0.6, 0.8, 0.9, 0.95],
    "val_loss": [0.75, 0.5, 0.3, 0.25],
    "val_accuracy": [0.55, 0.75, 0.85, 0.9],
}


# ---- plot_history --------------------------------------------------------------------------


def test_history_with_accuracy_has_two_panels(tmp_path):
    both, loss_only = tmp_path / "both.png", tmp_path / "loss.png"
    plots.plot_history(HISTORY, both, title="a title")
    plots.plot_history({"loss": HISTORY["loss"]}, loss_only)
    wide, narrow = read_png(both), read_png(loss_only)
    assert wide.shape[1] > 1.5 * narrow.shape[1]  # a second panel
    assert no_temporaries(tmp_path)


def test_history_from_fit(tmp_path):
    pp.manual_seed(0)
    X, y = pp.datasets.make_disk(100, seed=0)
    model = pp.Sequential(pp.Linear(2, 8), pp.Tanh(), pp.Linear(8, 2))
    history = pp.fit(model, pp.CrossEntropyLoss(), pp.Adam(model.parameters(), lr=1e-2), X, y,
                     epochs=3, validation_split=0.2, metrics=("loss", "accuracy"), verbose=0)  # fmt: skip
    path = tmp_path / "fit.png"
    plots.plot_history(history, path)
    read_png(path)


def test_history_formats_follow_the_suffix(tmp_path):
    plots.plot_history(HISTORY, tmp_path / "curves.svg")
    plots.plot_history(HISTORY, tmp_path / "curves")  # no suffix: PNG
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "curves").read_bytes().startswith(PNG_SIGNATURE)


def test_history_without_loss_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no 'loss' values"):
        plots.plot_history({"accuracy": [0.5]}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="History or a dict"):
        plots.plot_history([0.5, 0.4], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_failed_plot_leaves_the_earlier_file_intact(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "curves.png"
    path.write_bytes(b"earlier")

    def broken(self, *args, **kwargs):
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_history(HISTORY, path)
    assert path.read_bytes() == b"earlier"
    assert no_temporaries(tmp_path)


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'portprop\[plot\]'"):
        plots.plot_history(HISTORY, tmp_path / "x.png")
    with pytest.raises(ImportError, match=r"pip install 'portprop\[plot\]'"):
        plots.require_matplotlib()


# ---- plot_decision_boundary ------------------------------------------------------------------


def _trained_disk_model(backend=None, outputs=2):
    pp.manual_seed(0)
    kw = {"backend": backend}
    X, y = pp.datasets.make_disk(300, seed=0, backend="numpy", dtype="float64")
    scaler = pp.datasets.Standardizer().fit(X)
    model = pp.Sequential(pp.Linear(2, 16, **kw), pp.ReLU(**kw), pp.Linear(16, outputs, **kw))
    if outputs == 1:
        loss, target = pp.BCEWithLogitsLoss(), y.astype(np.float64)
    else:
        loss, target = pp.CrossEntropyLoss(), y
    pp.fit(model, loss, pp.Adam(model.parameters(), lr=1e-2), scaler.transform(X), target,
           epochs=20, verbose=0)  # fmt: skip
    return model, X, y, scaler


def test_decision_boundary_of_a_trained_model(tmp_path):
    model, X, y, scaler = _trained_disk_model()
    path = tmp_path / "boundary.png"
    plots.plot_decision_boundary(model, X, y, path, scaler, class_names=["out", "in"])
    image = read_png(path)
    # the regions are filled with two colours: many distinct pixel values
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20
    assert no_temporaries(tmp_path)


def test_decision_boundary_of_a_single_logit(tmp_path):
    model, X, y, scaler = _trained_disk_model(outputs=1)
    plots.plot_decision_boundary(model, X, y, tmp_path / "bce.png", standardizer=scaler)
    read_png(tmp_path / "bce.png")


def test_decision_boundary_on_each_backend(backend, tmp_path):
    pp.manual_seed(0)
    model = pp.Sequential(
        pp.Linear(2, 8, backend=backend), pp.Tanh(backend=backend), pp.Linear(8, 3, backend=backend)
    )
    X, y = pp.datasets.make_disk(60, seed=1, backend=backend)
    xp = backend.xp
    y = y + xp.astype(X[:, 0] > 0.8, y.dtype)  # a third class, on the backend's own arrays
    path = tmp_path / "b.png"
    plots.plot_decision_boundary(model, X, y, path, resolution=60)
    read_png(path)


def test_decision_boundary_refuses_other_shapes(tmp_path):
    model = pp.Sequential(pp.Linear(3, 2))
    with pytest.raises(ValueError, match=r"X must have shape \(samples, 2\)"):
        plots.plot_decision_boundary(model, np.zeros((5, 3)), np.zeros(5, int), tmp_path / "x.png")
    model = pp.Sequential(pp.Linear(2, 2))
    with pytest.raises(ValueError, match="one label per sample"):
        plots.plot_decision_boundary(model, np.zeros((5, 2)), np.zeros(4, int), tmp_path / "x.png")
    with pytest.raises(ValueError, match="class indices"):
        plots.plot_decision_boundary(model, np.zeros((5, 2)), np.full(5, 0.5), tmp_path / "x.png")
    with pytest.raises(TypeError, match="portprop Module"):
        plots.plot_decision_boundary(
            object(), np.zeros((5, 2)), np.zeros(5, int), tmp_path / "x.png"
        )
    assert not (tmp_path / "x.png").exists()
