"""The ``portprop`` command: train, evaluate, predict, backends, and its errors."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portprop as pp
from portprop.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` -> (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def table(text: str) -> dict[str, dict[str, float]]:
    """The rows of the results table: ``{"test": {"samples": 80, "loss": ..., ...}}``."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == 4 and cells[0] in ("train", "validation", "test", "all"):
            acc = float("nan") if cells[3] == "-" else float(cells[3])
            rows[cells[0]] = {"samples": int(cells[1]), "loss": float(cells[2]), "accuracy": acc}
    return rows


def assert_png(path: Path) -> None:
    """A real PNG image, that matplotlib reads back, and not blank."""
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3
    assert image.shape[0] > 200
    assert image.shape[1] > 200
    assert float(np.var(image[..., :3])) > 0.0


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- one small training run on the disk, shared by the tests below ----------------------


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("disk")
    model, plot = folder / "disk.safetensors", folder / "curves.png"
    # module scope: runs before the autouse fixture that clears PORTPROP_BACKEND
    status, out, err = run(
        "train", "--dataset", "disk", "--samples", "400", "--epochs", "8", "--backend", "numpy",
        "--save", str(model), "--plot", str(plot),
    )  # fmt: skip
    assert status == 0, err
    return {"folder": folder, "model": model, "plot": plot, "out": out, "err": err}


def test_train_prints_the_table_and_where_it_ran(disk_run):
    rows = table(disk_run["out"])
    assert set(rows) == {"train", "validation", "test"}
    assert rows["test"]["samples"] == 80  # --test-size 0.2 of 400
    assert rows["validation"]["samples"] == 32  # --validation-split 0.1 of the other 320
    assert rows["train"]["samples"] == 288
    assert all(0.5 < row["accuracy"] <= 1.0 for row in rows.values())
    assert "time per epoch:" in disk_run["out"]
    assert "backend numpy, device cpu, dtype float32" in disk_run["out"]
    # the progress goes to stderr, one line per epoch when stderr is not a terminal
    assert "Epoch 8/8" in disk_run["err"]


def test_train_writes_a_loadable_checkpoint_with_the_standardization(disk_run):
    ckpt = pp.load(disk_run["model"])
    assert isinstance(ckpt.model, pp.Sequential)
    assert ckpt.epoch == 8
    extra = ckpt.extra
    assert extra["written_by"] == "portprop train"
    assert extra["loss"] == "cross_entropy"
    assert extra["classes"] == [0, 1]
    scaler = pp.datasets.Standardizer.from_dict(extra["standardizer"])
    assert scaler.mean_.shape == (2,)
    # the disk's points are uniform in the unit square: mean near 0.5, scale near 0.29
    np.testing.assert_allclose(scaler.mean_, 0.5, atol=0.06)
    np.testing.assert_allclose(scaler.scale_, 1 / np.sqrt(12), atol=0.03)
    assert extra["data"] == {"dataset": "disk", "samples": 400, "seed": 0}
    assert len(extra["history"]["val_accuracy"]) == 8
    assert ckpt.optimizer_state["type"] == "Adam"


def test_train_plots_the_curves_and_the_decision_boundary(disk_run):
    assert_png(disk_run["plot"])
    assert_png(disk_run["folder"] / "curves_boundary.png")
    assert not list(disk_run["folder"].glob("*.tmp"))


def test_evaluate_repeats_the_test_row_of_train(disk_run):
    status, out, _ = run("evaluate", str(disk_run["model"]), "--dataset", "disk")
    assert status == 0
    assert "the test split recorded in" in out
    assert table(out)["test"] == table(disk_run["out"])["test"]


def test_evaluate_applies_the_stored_standardization(disk_run):
    status, out, _ = run(
        "evaluate", str(disk_run["model"]), "--dataset", "disk", "--seed", "7", "--samples", "300"
    )
    assert status == 0
    assert "every sample" in out
    got = table(out)["all"]
    assert got["samples"] == 300
    ckpt = pp.load(disk_run["model"])
    scaler = pp.datasets.Standardizer.from_dict(ckpt.extra["standardizer"])
    X, y = pp.datasets.make_disk(300, seed=7, backend="numpy", dtype="float64")
    loss = pp.CrossEntropyLoss()
    metrics = ("loss", "accuracy")
    expected = pp.evaluate(ckpt.model, loss, scaler.transform(X), y, metrics=metrics)
    raw = pp.evaluate(ckpt.model, loss, X, y, metrics=metrics)
    assert got["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-4)
    assert abs(raw["loss"] - expected["loss"]) > 1e-3  # the standardization matters


def test_evaluate_split_all_and_test(disk_run):
    _, out_all, _ = run("evaluate", str(disk_run["model"]), "--dataset", "disk", "--split", "all")
    _, out_test, _ = run("evaluate", str(disk_run["model"]), "--dataset", "disk", "--split", "test")
    assert table(out_all)["all"]["samples"] == 400
    assert table(out_test)["test"]["samples"] == 80


def _expected_probabilities(model_path: Path, X: np.ndarray) -> np.ndarray:
    ckpt = pp.load(model_path)
    scaler = pp.datasets.Standardizer.from_dict(ckpt.extra["standardizer"])
    logits = ckpt.model.backend.to_host(pp.predict(ckpt.model, scaler.transform(X)))
    return softmax(np.asarray(logits, dtype=np.float64))


def _read_predictions(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    labels = np.array([int(r[0]) for r in body])
    probabilities = np.array([[float(v) for v in r[1:]] for r in body])
    return header, labels, probabilities


def test_predict_csv_matches_pp_predict_on_the_loaded_model(disk_run, tmp_path):
    X, _ = pp.datasets.make_disk(50, seed=3, backend="numpy", dtype="float64")
    source = tmp_path / "points.csv"
    np.savetxt(source, X, delimiter=",", header="x0,x1", comments="")
    status, out, err = run("predict", str(disk_run["model"]), str(source))
    assert status == 0, err
    header, labels, probabilities = _read_predictions(out)
    assert header == ["prediction", "probability_0", "probability_1"]
    expected = _expected_probabilities(disk_run["model"], X)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_predict_npz_and_labelled_csv_to_a_file(disk_run, tmp_path):
    X, y = pp.datasets.make_disk(30, seed=4, backend="numpy", dtype="float64")
    expected = _expected_probabilities(disk_run["model"], X)
    npz, labelled = tmp_path / "points.npz", tmp_path / "labelled.csv"
    np.savez(npz, X=X, y=y)
    np.savetxt(labelled, np.column_stack([y, X]), delimiter=",")  # the label first
    for source, extra in ((npz, ()), (labelled, ("--label-column", "0"))):
        target = tmp_path / f"{source.stem}.out.csv"
        status, out, err = run(
            "predict", str(disk_run["model"]), str(source), "-o", str(target), *extra
        )
        assert status == 0, err
        assert out == ""
        _, _, probabilities = _read_predictions(target.read_text())
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_predict_refuses_the_wrong_number_of_columns(disk_run, tmp_path):
    source = tmp_path / "wide.csv"
    np.savetxt(source, np.zeros((3, 5)), delimiter=",")
    status, _, err = run("predict", str(disk_run["model"]), str(source))
    assert status == 2
    assert err == (
        f"portprop: error: {source} has 5 columns, but the model takes 2 features "
        "(give those, or those and a label column)\n"
    )


def test_predict_with_a_checkpoint_saved_by_pp_save(tmp_path):
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(2, 4), pp.Tanh(), pp.Linear(4, 3))
    path = tmp_path / "plain.safetensors"
    pp.save(path, model)
    X = np.random.default_rng(0).normal(size=(6, 2))
    np.savez(tmp_path / "x.npz", X=X)
    status, out, err = run("predict", str(path), str(tmp_path / "x.npz"))
    assert status == 0
    assert "was not written by 'portprop train': no standardization is applied" in err
    header, labels, probabilities = _read_predictions(out)
    assert header == ["prediction", "probability_0", "probability_1", "probability_2"]
    expected = softmax(np.asarray(pp.predict(model, X), dtype=np.float64))
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=1))


# ---- other data and losses ------------------------------------------------------------------


def test_csv_with_named_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    names = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    source = tmp_path / "animals.csv"
    with source.open("w") as f:
        f.write("kind,a,b,c\n")
        f.writelines(f"{n},{a},{b},{c}\n" for n, (a, b, c) in zip(names, X, strict=True))
    model = tmp_path / "m.safetensors"
    status, out, err = run(
        "train", "--dataset", str(source), "--label-column", "kind", "--epochs", "15",
        "--quiet", "--save", str(model),
    )  # fmt: skip
    assert status == 0, err
    assert err == ""  # --quiet
    assert table(out)["test"]["accuracy"] > 0.8
    status, out, err = run("predict", str(model), str(source), "--label-column", "kind")
    assert status == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["prediction", "probability_no", "probability_yes"]
    predicted = np.array([r[0] for r in rows[1:]])
    assert np.mean(predicted == names) > 0.8


def test_regression_with_mse(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    target = X @ np.array([1.5, -2.0]) + 0.25
    source = tmp_path / "line.npz"
    np.savez(source, features=X, target=target)
    model = tmp_path / "reg.safetensors"
    status, out, err = run(
        "train", "--dataset", str(source), "--features-key", "features", "--labels-key",
        "target", "--loss", "mse", "--epochs", "30", "--quiet", "--save", str(model),
    )  # fmt: skip
    assert status == 0, err
    rows = table(out)
    assert np.isnan(rows["test"]["accuracy"])  # shown as "-"
    assert rows["test"]["loss"] < 0.5
    status, out, err = run("predict", str(model), str(source), "--features-key", "features")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "prediction"
    predicted = np.array([float(v) for v in lines[1:]])
    assert np.sqrt(np.mean((predicted - target) ** 2)) < 0.7


def test_bce_and_mse_on_the_disk(tmp_path):
    for loss in ("bce", "mse"):
        model = tmp_path / f"{loss}.safetensors"
        status, out, err = run(
            "train", "--dataset", "disk", "--samples", "300", "--epochs", "5", "--loss", loss,
            "--validation-split", "0", "--quiet", "--save", str(model),
        )  # fmt: skip
        assert status == 0, err
        assert set(table(out)) == {"train", "test"}
        assert pp.load(model).extra["loss"] == loss
        status, out, err = run("evaluate", str(model), "--dataset", "disk", "--samples", "300")
        assert status == 0, err
        assert table(out)["test"]["samples"] == 60


def test_sgd_dropout_and_tanh(tmp_path):
    status, out, err = run(
        "train", "--dataset", "disk", "--samples", "300", "--epochs", "3", "--optimizer", "sgd",
        "--momentum", "0.5", "--lr", "0.02", "--dropout", "0.2", "--activation", "tanh",
        "--hidden", "16", "--dtype", "float64", "--verbose",
    )  # fmt: skip
    assert status == 0, err
    assert "dtype float64" in out
    assert "(2): Dropout(p=0.2)" in err  # --verbose shows the model
    assert "2 -> 16 -> 2 (tanh, dropout 0.2), loss cross_entropy, SGD lr 0.02" in err


@pytest.mark.slow
def test_default_digits_run_reaches_96_percent():
    pytest.importorskip("sklearn", reason="no scikit-learn: --dataset digits reads its digits")
    status, out, err = run("train", "--dataset", "digits", "--quiet")
    assert status == 0, err
    assert table(out)["test"]["accuracy"] >= 0.96


@pytest.mark.slow
def test_default_disk_run_has_under_5_percent_test_error():
    status, out, err = run("train", "--dataset", "disk", "--quiet")
    assert status == 0, err
    assert table(out)["test"]["accuracy"] > 0.95


# ---- backends -------------------------------------------------------------------------------


def test_backends_lists_each_backend_and_its_devices():
    status, out, _ = run("backends")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["backend", "status"]
    assert any(line.startswith("numpy") and "available  (devices: cpu)" in line for line in lines)
    assert len(lines) == 1 + len(pp.registered_backends())


def test_train_and_evaluate_on_each_backend(backend, tmp_path):
    model = tmp_path / "m.safetensors"
    status, out, err = run(
        "train", "--dataset", "disk", "--samples", "120", "--epochs", "2", "--hidden", "8",
        "--backend", backend.name, "--quiet", "--save", str(model),
    )  # fmt: skip
    assert status == 0, err
    assert f"backend {backend.name}, device " in out
    status, out, err = run(
        "evaluate", str(model), "--dataset", "disk", "--samples", "120", "--backend", backend.name
    )
    assert status == 0, err
    assert f"backend {backend.name}, device " in out


# ---- errors: one line on stderr, status 2, no traceback ------------------------------------


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nope"], "unknown dataset 'nope': expected 'disk', 'digits'"),
        (["train", "--dataset", "{tmp}/missing.csv"], "missing.csv: No such file or directory"),
        (["evaluate", "{tmp}/missing.safetensors", "--dataset", "disk"], "No such file"),
        (["evaluate", "{corrupt}", "--dataset", "disk"], "is not a valid portprop checkpoint"),
        (["predict", "{corrupt}", "{tmp}/x.csv"], "is not a valid portprop checkpoint"),
        (["train", "--dataset", "disk", "--epochs", "many"], "argument --epochs: expected an"),
        (["train", "--dataset", "disk", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--dataset", "disk", "--loss", "hinge"], "argument --loss: invalid choice"),
        (["train", "--dataset", "disk", "--backend", "nosuch"], "unknown backend 'nosuch'"),
        (["train", "--dataset", "disk", "--momentum", "0.5"], "--momentum applies to sgd"),
        (["train", "--dataset", "disk", "--save", "{tmp}/no/dir/m.safetensors"], "does not exist"),
        (["train", "--dataset", "disk", "--hidden", "8,x"], "argument --hidden: expected"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, tmp_path, corrupt):
    argv = [a.format(tmp=tmp_path, corrupt=corrupt) for a in argv]
    status, out, err = run(*argv)
    assert status == 2
    assert out == ""
    assert err.startswith("portprop: error: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_an_unavailable_backend_is_a_one_line_error():
    unavailable = [s.name for s in pp.backends() if not s.available]
    if not unavailable:
        pytest.skip("every backend is available here")
    status, _, err = run("train", "--dataset", "disk", "--backend", unavailable[0])
    assert status == 2
    assert err.startswith(f"portprop: error: backend {unavailable[0]!r} is not usable")
    assert err.count("\n") == 1


def test_bce_needs_two_classes():
    pytest.importorskip("sklearn", reason="no scikit-learn: --dataset digits reads its digits")
    status, _, err = run("train", "--dataset", "digits", "--loss", "bce")
    assert status == 2
    assert "--loss bce needs exactly 2 classes, the labels hold 10" in err


def test_help_and_version_exit_0():
    status, out, _ = run("--help")
    assert status == 0
    assert "train" in out
    assert "predict" in out
    status, out, _ = run("--version")
    assert status == 0
    assert out.strip() == f"portprop {pp.__version__}"


def test_python_dash_m_portprop():
    env = {**os.environ, "PORTPROP_BACKEND": "numpy"}
    done = subprocess.run(
        [sys.executable, "-m", "portprop", "backends"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backend")
    done = subprocess.run(
        [sys.executable, "-m", "portprop", "train", "--dataset", "nope"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        "portprop: error: unknown dataset 'nope': expected 'disk', 'digits', or the path of "
        "a .csv or .npz file\n"
    )
