"""Hostile input to the command line and its data readers, the progress display, and
NumPy masked arrays: every failure is one line naming the file (status 2, nothing
written), and the library functions raise typed errors that name it too."""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_cli import run

import portprop as pp
from portprop.datasets import csv_columns, load_csv, load_npz
from portprop.training import progress

# ---- 1. the progress display ---------------------------------------------------------------


class FakeTerminal(io.StringIO):
    """Standard error on a terminal, as far as ``isatty`` tells."""

    def isatty(self) -> bool:
        return True


class FakeTerminalOfUnknownSize(FakeTerminal):
    """A terminal with a file descriptor whose size reads as 0 by 0 (a serial console,
    some containers)."""

    def fileno(self) -> int:
        return 2


def _screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: a carriage return starts its line over."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")[:-1]]


def _fit_on_a_terminal(monkeypatch, stream: io.StringIO) -> pp.History:
    monkeypatch.setattr(sys, "stderr", stream)
    X, y = pp.datasets.make_disk(120, seed=1, backend="numpy")
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(2, 8), pp.Tanh(), pp.Linear(8, 2))
    optimizer = pp.SGD(model.parameters(), lr=0.1)
    return pp.fit(model, pp.CrossEntropyLoss(), optimizer, X, y, epochs=3, batch_size=16,
                  validation_split=0.25, metrics=("accuracy",), verbose=1)  # fmt: skip


def _assert_every_metric_shown(lines: list[str], history: pp.History, width: int) -> None:
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    for name, values in history.history.items():
        shown = re.findall(rf"(?<![\w]){name}: ([-+0-9.e]+)", text)
        assert len(shown) == len(values), (name, text)
        for got, value in zip(shown, values, strict=True):
            assert math.isclose(float(got), value, rel_tol=1e-3), (name, got, value)


@pytest.mark.parametrize("columns", [80, 40])
def test_progress_shows_every_metric_whole_within_the_terminal(monkeypatch, columns):
    pytest.importorskip("tqdm")
    size = os.terminal_size((columns, 24))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *args, **kwargs: size)
    stream = FakeTerminal()
    history = _fit_on_a_terminal(monkeypatch, stream)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    lines = _screen(stream.getvalue())
    assert any(line.startswith("Epoch 3/3: 100%") for line in lines)
    _assert_every_metric_shown(lines, history, columns)


def test_progress_on_a_terminal_of_unknown_size_prints_no_empty_line(monkeypatch):
    pytest.importorskip("tqdm")
    for name in ("COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda *args: os.terminal_size((0, 0)))
    stream = FakeTerminalOfUnknownSize()
    history = _fit_on_a_terminal(monkeypatch, stream)
    lines = _screen(stream.getvalue())
    assert all(line.strip() for line in lines), lines
    assert any(line.startswith("Epoch 1/3") for line in lines)
    _assert_every_metric_shown(lines, history, 80)  # the size Python assumes, as tqdm


def test_progress_without_a_terminal_is_unchanged(capsys):
    X, y = pp.datasets.make_disk(64, seed=1, backend="numpy")
    model = pp.Sequential(pp.Linear(2, 2))
    pp.fit(model, pp.CrossEntropyLoss(), pp.SGD(model.parameters(), lr=0.1), X, y,
           epochs=2, validation_split=0.25, verbose=1)  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("Epoch 2/2 - ")
    assert "val_loss: " in lines[1]
    assert progress._stderr_is_terminal() is False


# ---- models for the command line -----------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def disk_model(folder: Path) -> Path:
    """A model of the disk: 2 features, classes 0 and 1."""
    path = folder / "disk.safetensors"
    status, _, err = run(
        "train", "--dataset", "disk", "--samples", "200", "--epochs", "2", "--hidden", "8",
        "--backend", "numpy", "--quiet", "--save", str(path),
    )  # fmt: skip
    assert status == 0, err
    return path


def _points(n: int = 6, seed: int = 3) -> np.ndarray:
    X, _ = pp.datasets.make_disk(n, seed=seed, backend="numpy", dtype="float64")
    return np.asarray(X)


def _csv(path: Path, header: str, columns: list[np.ndarray]) -> Path:
    rows = np.column_stack(columns)
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.17g")
    return path


def assert_one_line_error(status: int, out: str, err: str, *fragments: str) -> None:
    assert status == 2, err
    assert out == ""
    assert err.startswith("portprop: error: ")
    assert err.count("\n") == 1, err
    assert len(err) < 600, err  # bounded: no file contents, no long lists
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ---- 2 and 3. predict: the columns of a CSV file -------------------------------------------


def test_predict_says_which_column_it_takes_for_the_label(disk_model, tmp_path):
    X = _points()
    plain = _csv(tmp_path / "plain.csv", "x0,x1", [X])
    labelled = _csv(tmp_path / "labelled.csv", "x0,x1,label", [X, np.arange(6) % 2])
    status, expected, err = run("predict", str(disk_model), str(plain))
    assert status == 0, err
    assert err == ""  # a file of the model's features: nothing to say
    status, out, err = run("predict", str(disk_model), str(labelled))
    assert status == 0, err
    assert out == expected
    assert err == (
        f"portprop: note: {labelled}: 3 columns for a model of 2 features: the last column "
        "('label') taken as the label column and ignored (--label-column none refuses such "
        "a file)\n"
    )


def test_predict_label_column_none_refuses_an_extra_column(disk_model, tmp_path):
    labelled = _csv(tmp_path / "labelled.csv", "x0,x1,label", [_points(), np.zeros(6)])
    status, out, err = run("predict", str(disk_model), str(labelled), "--label-column", "none")
    assert_one_line_error(status, out, err, f"{labelled} has 3 columns, but the model takes 2")
    plain = _csv(tmp_path / "plain.csv", "x0,x1", [_points()])
    status, _, err = run("predict", str(disk_model), str(plain), "--label-column", "none")
    assert status == 0, err


def test_predict_with_an_explicit_label_column_needs_one_more_column(disk_model, tmp_path):
    plain = _csv(tmp_path / "plain.csv", "x0,x1", [_points()])
    status, out, err = run("predict", str(disk_model), str(plain), "--label-column", "0")
    assert_one_line_error(status, out, err, "has 2 columns, but with --label-column 0")
    first = _csv(tmp_path / "first.csv", "label,x0,x1", [np.ones(6), _points()])
    status, out, err = run("predict", str(disk_model), str(first), "--label-column", "label")
    assert status == 0, err
    assert err == ""  # asked for: no note


def test_predict_drops_the_training_runs_label_column(tmp_path):
    X, y = _points(120, seed=5), np.arange(120) % 2
    source = _csv(tmp_path / "train.csv", "y,a,b", [y, X])
    model = tmp_path / "m.safetensors"
    status, _, err = run(
        "train", "--dataset", str(source), "--label-column", "y", "--epochs", "1",
        "--hidden", "4", "--backend", "numpy", "--quiet", "--save", str(model),
    )  # fmt: skip
    assert status == 0, err
    plain = _csv(tmp_path / "plain.csv", "a,b", [X[:5]])
    status, expected, err = run("predict", str(model), str(plain))
    assert status == 0, err
    status, out, err = run("predict", str(model), str(source))
    assert status == 0, err
    assert out.splitlines()[:6] == expected.splitlines()
    assert "the first column ('y') taken as the label column and ignored" in err


def test_predict_one_column_says_how_many_features_the_model_takes(disk_model, tmp_path):
    one = _csv(tmp_path / "one.csv", "x0", [_points()[:, 0]])
    status, out, err = run("predict", str(disk_model), str(one))
    assert_one_line_error(status, out, err, f"{one} has 1 column, but the model takes 2 features")
    assert "label" not in err


def test_predict_help_documents_the_label_column():
    status, out, _ = run("predict", "--help")
    assert status == 0
    text = " ".join(out.split())
    assert "'none': INPUT has no label column" in text
    assert "training run's label column, else the last" in text


# ---- 4. damaged files: one line naming the file, status 2, nothing written -----------------


def _npy_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """``array`` in the .npy format, its header declaring ``shape`` if given."""
    buffer = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(array)
    if shape is not None:
        header["shape"] = shape
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(array.tobytes())
    return buffer.getvalue()


def _archive(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


X8 = np.arange(16, dtype=np.float64).reshape(8, 2)
Y8 = np.arange(8) % 2


def _damaged_npz(kind: str, path: Path) -> Path:
    good = {"X.npy": _npy_bytes(X8), "y.npy": _npy_bytes(Y8)}
    if kind == "truncated":
        _archive(path, good)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "huge header":  # 10**12 rows declared: 14.6 TiB of float64
        _archive(path, {**good, "X.npy": _npy_bytes(X8, (10**12, 2))})
    elif kind == "huge deflated":  # header and ZIP entry agree on 3.2 GB, from 100 bytes
        shape = (2 * 10**8, 2)
        _archive(path, {**good, "X.npy": _npy_bytes(X8, shape)}, zipfile.ZIP_DEFLATED)
        claimed = len(_npy_bytes(X8[:0])) + math.prod(shape) * 8
        data = bytearray(path.read_bytes())
        for signature, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central
            entry = data.index(signature)  # X.npy is the first member
            data[entry + at : entry + at + 4] = struct.pack("<I", claimed)
        path.write_bytes(bytes(data))
    elif kind == "bad crc":
        _archive(path, good)
        data = bytearray(path.read_bytes())
        at = data.index(X8.tobytes()) + 20
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), X8)
        path.with_suffix(".npy").rename(path)
    elif kind == "garbage":
        path.write_bytes(b"hello, this is not a zip file\n")
    return path


NPZ_DAMAGE = {
    "truncated": "a damaged or truncated .npz archive",
    "huge header": "declares shape (1000000000000, 2) of float64, 16,000,000,000,000 bytes",
    "huge deflated": "more than its compression can give",
    "bad crc": "array 'X' is damaged or truncated (BadZipFile: Bad CRC-32",
    "npy": "holds a single array (an .npy file), not an .npz archive",
    "garbage": "is not an .npz archive (a ZIP file of .npy arrays)",
}


@pytest.mark.parametrize("kind", list(NPZ_DAMAGE))
def test_load_npz_names_the_file_of_a_damaged_archive(tmp_path, kind):
    path = _damaged_npz(kind, tmp_path / "data.npz")
    with pytest.raises(ValueError, match=re.escape(NPZ_DAMAGE[kind])) as info:
        load_npz(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("kind", list(NPZ_DAMAGE))
def test_the_command_line_refuses_a_damaged_archive(disk_model, tmp_path, kind):
    path = _damaged_npz(kind, tmp_path / "data.npz")
    saved, output = tmp_path / "m.safetensors", tmp_path / "out.csv"
    status, out, err = run("train", "--dataset", str(path), "--save", str(saved), "--quiet")
    assert_one_line_error(status, out, err, str(path), NPZ_DAMAGE[kind])
    status, out, err = run("predict", str(disk_model), str(path), "-o", str(output))
    assert_one_line_error(status, out, err, str(path), NPZ_DAMAGE[kind])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # nothing written


def test_load_npz_reads_fortran_order_compressed_and_features_alone(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, X=np.asfortranarray(X8), y=np.array(["a", "b"] * 4))
    X, y = load_npz(path)
    np.testing.assert_array_equal(X, X8)
    assert y.tolist() == ["a", "b"] * 4
    y[0] = "c"  # writable, as numpy.load gives
    X, none = load_npz(path, labels=None)
    np.testing.assert_array_equal(X, X8)
    assert none is None


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CSV_DAMAGE = {
    "field over the limit": (
        b"a,b,c\n3," + b"9" * 200_000 + b",1\n1,2,0\n",
        "line 2: a field is longer than 131072 characters",
    ),
    "utf-16": (
        "a,b,c\n1,2,0\n3,4,1\n".encode("utf-16"),
        "expected UTF-8 text, but the file starts with the byte-order mark of UTF-16 (ff fe)",
    ),
    "binary": (bytes(range(256)) * 8, "expected UTF-8 text, but the file holds NUL bytes"),
    "latin-1": (
        "a,b,c\n1,2,0\n3,4,é\n".encode("latin-1"),
        "expected UTF-8 text, but byte 16 (0xe9) is not UTF-8",
    ),
}


@pytest.mark.parametrize("kind", list(CSV_DAMAGE))
def test_load_csv_names_the_file_and_the_encoding_expected(tmp_path, kind):
    data, fragment = CSV_DAMAGE[kind]
    path = _write_bytes(tmp_path / "data.csv", data)
    for read in (load_csv, csv_columns):
        with pytest.raises(ValueError, match=re.escape(fragment)) as info:
            read(path)
        assert str(info.value).startswith(f"{path}: ")
        assert len(str(info.value)) < 300


@pytest.mark.parametrize("kind", list(CSV_DAMAGE))
def test_the_command_line_refuses_a_damaged_csv(disk_model, tmp_path, kind):
    data, fragment = CSV_DAMAGE[kind]
    path = _write_bytes(tmp_path / "data.csv", data)
    saved, output = tmp_path / "m.safetensors", tmp_path / "out.csv"
    status, out, err = run("train", "--dataset", str(path), "--save", str(saved), "--quiet")
    assert_one_line_error(status, out, err, str(path), fragment)
    status, out, err = run("predict", str(disk_model), str(path), "-o", str(output))
    assert_one_line_error(status, out, err, str(path), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_csv_messages_are_bounded(tmp_path):
    long = "x" * 5000
    path = _write_bytes(tmp_path / "wide.csv", f"a,b,c\n1,{long},0\n".encode())
    with pytest.raises(ValueError, match="5000 characters") as info:
        load_csv(path)
    assert len(str(info.value)) < 300
    names = ",".join(f"c{i}" for i in range(1000))
    path = _write_bytes(tmp_path / "many.csv", f"{names}\n{','.join(['1'] * 1000)}\n".encode())
    with pytest.raises(KeyError, match=r"1000 in all") as info:
        load_csv(path, label_column="label")
    assert len(str(info.value)) < 400


# ---- 4. checkpoints whose extra is damaged --------------------------------------------------

GOOD_EXTRA = {
    "written_by": "portprop train",
    "standardizer": {"mean": [0.5, 0.5], "scale": [0.3, 0.3]},
    "loss": "cross_entropy",
    "classes": [0, 1],
    "data": {"dataset": "disk", "samples": 60, "seed": 0},
    "split": {"test_size": 0.2, "validation_split": 0.1, "seed": 0, "stratify": True},
}

BAD_EXTRA = {
    "standardizer not a dict": ({"standardizer": [1, 2]}, "extra['standardizer'] must be"),
    "standardizer too long": (
        {"standardizer": {"mean": [0.0] * 10**5, "scale": [1.0] * 10**5}},
        "extra['standardizer'] must be the statistics of 2 features, got 100000",
    ),
    "loss a list": ({"loss": ["x"] * 10**5}, "extra['loss'] must be one of"),
    "loss huge string": ({"loss": "x" * 10**6}, "extra['loss'] must be one of"),
    "classes a string": ({"classes": "ab"}, "extra['classes'] must be a list of 2 class"),
    "classes too many": ({"classes": list(range(10**5))}, "a list of 2 class labels"),
    "classes nested": ({"classes": [[1], [2]]}, "distinct strings, ints or finite floats"),
    "classes repeated": ({"classes": [1, 1]}, "distinct strings, ints or finite floats"),
    "no classes for cross-entropy": ({"classes": None}, "the class labels of a cross_entropy"),
    "data a list": ({"data": [1, 2]}, "extra['data'] must be a dict"),
    "samples a string": ({"data": {"dataset": "disk", "samples": "many"}}, "['samples'] must"),
    "samples negative": ({"data": {"dataset": "disk", "samples": -5}}, "an int >= 2"),
    "seed too large": ({"data": {"dataset": "disk", "seed": 2**70}}, "an int in [0, 2**63)"),
    "label column a dict": ({"data": {"label_column": {}}}, "['label_column'] must be an int"),
    "split a string": ({"split": "0.2"}, "extra['split'] must be a dict"),
    "split without seed": ({"split": {"test_size": 0.2, "stratify": True}}, "with 'seed'"),
    "test size a string": (
        {"split": {"test_size": "x", "seed": 0, "stratify": True}},
        "['test_size'] must be a fraction in (0, 1) or an int >= 1",
    ),
    "stratify a string": (
        {"split": {"test_size": 0.2, "seed": 0, "stratify": "yes"}},
        "['stratify'] must be a bool",
    ),
}


def _checkpoint(path: Path, extra: dict) -> Path:
    pp.manual_seed(0)
    model = pp.Sequential(pp.Linear(2, 4), pp.ReLU(), pp.Linear(4, 2))
    pp.save(path, model, extra={**GOOD_EXTRA, **extra})
    return path


def test_a_good_extra_is_read(tmp_path):
    model = _checkpoint(tmp_path / "m.safetensors", {})
    status, _, err = run("evaluate", str(model), "--dataset", "disk")
    assert status == 0, err
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    status, _, err = run("predict", str(model), str(points))
    assert status == 0, err


@pytest.mark.parametrize("case", list(BAD_EXTRA))
def test_a_damaged_extra_is_one_line_naming_the_checkpoint(tmp_path, case):
    extra, fragment = BAD_EXTRA[case]
    model = _checkpoint(tmp_path / "m.safetensors", extra)
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    output = tmp_path / "out.csv"
    status, out, err = run("evaluate", str(model), "--dataset", "disk")
    assert_one_line_error(status, out, err, f"{model}: the checkpoint's ", fragment)
    status, out, err = run("predict", str(model), str(points), "-o", str(output))
    assert_one_line_error(status, out, err, f"{model}: the checkpoint's ", fragment)
    assert not output.exists()


def test_evaluate_draws_no_absurd_number_of_recorded_points(tmp_path):
    model = _checkpoint(tmp_path / "m.safetensors", {"data": {"dataset": "disk",
                                                              "samples": 10**12, "seed": 0}})  # fmt: skip
    status, out, err = run("evaluate", str(model), "--dataset", "disk")
    assert_one_line_error(status, out, err, "records 1000000000000 disk points", "--samples")
    status, _, err = run("evaluate", str(model), "--dataset", "disk", "--samples", "50")
    assert status == 0, err


# ---- 5. --output: standard output, devices, FIFOs, links -----------------------------------


def test_predict_output_dash_is_standard_output(disk_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    status, default, err = run("predict", str(disk_model), str(points))
    assert status == 0, err
    status, out, err = run("predict", str(disk_model), str(points), "--output", "-")
    assert status == 0, err
    assert out == default
    assert out.startswith("prediction,probability_0,probability_1\n")
    assert len(out.splitlines()) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]  # no file named '-'


def _read_fifo(path: Path, received: list[bytes], seconds: float = 60.0) -> None:
    """Read ``path`` until its writer closes it, or ``seconds`` pass (never blocks)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    deadline, seen = time.monotonic() + seconds, False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:  # a writer, no data yet
                seen = True
                time.sleep(0.01)
                continue
            if chunk:
                received.append(chunk)
                seen = True
            elif seen:
                return  # the writer closed it
            else:
                time.sleep(0.01)  # no writer yet
    finally:
        os.close(fd)


def test_predict_writes_through_a_link_to_a_fifo(disk_model, tmp_path):
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    fifo, link = tmp_path / "fifo", tmp_path / "out.csv"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=_read_fifo, args=(fifo, received))
    reader.start()
    try:
        status, out, err = run("predict", str(disk_model), str(points), "-o", str(link))
    finally:
        reader.join()
    assert status == 0, err
    assert out == ""
    assert link.is_symlink()
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    rows = b"".join(received).decode().splitlines()
    assert rows[0] == "prediction,probability_0,probability_1"
    assert len(rows) == 7


def test_predict_writes_through_a_link_to_a_character_device(disk_model, tmp_path):
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    link = tmp_path / "null.csv"
    link.symlink_to(os.devnull)
    status, out, err = run("predict", str(disk_model), str(points), "-o", str(link))
    assert status == 0, err
    assert out == ""
    assert link.is_symlink()
    assert stat.S_ISCHR(Path(os.devnull).stat().st_mode)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_predict_output_to_standard_output_by_its_path(disk_model, tmp_path):
    """``--output /dev/stdout``, through a link of our own to the same place (a test
    must never risk the machine's /dev)."""
    points = _csv(tmp_path / "x.csv", "a,b", [_points()])
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    env = {**os.environ, "PORTPROP_BACKEND": "numpy"}
    done = subprocess.run(
        [sys.executable, "-m", "portprop", "predict", str(disk_model), str(points), "-o", str(link)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("prediction,probability_0,probability_1\n")
    assert link.is_symlink()


# ---- 6. NumPy masked arrays -----------------------------------------------------------------


def _masked() -> tuple[np.ma.MaskedArray, np.ndarray]:
    X, y = pp.datasets.make_disk(12, seed=2, backend="numpy", dtype="float64")
    mask = np.zeros((12, 2), dtype=bool)
    mask[3, 1] = True
    return np.ma.array(np.asarray(X), mask=mask), np.asarray(y)


def _assert_refused(call, argname: str = "X") -> None:
    with pytest.raises(
        TypeError, match=rf"{argname} is a NumPy masked array \(1 masked value\)"
    ) as info:
        call()
    assert f"{argname}.filled(value)" in str(info.value)


def test_fit_and_predict_refuse_a_masked_array(backend):
    X, y = _masked()
    pp.manual_seed(0)
    kw = {"backend": backend}
    model = pp.Sequential(pp.Linear(2, 4, **kw), pp.Tanh(**kw), pp.Linear(4, 2, **kw))
    before = {k: np.asarray(backend.to_host(p.data)) for k, p in model.named_parameters()}
    optimizer = pp.SGD(model.parameters(), lr=0.1)
    loss = pp.CrossEntropyLoss()
    _assert_refused(lambda: pp.fit(model, loss, optimizer, X, y, verbose=0))
    masked_y = np.ma.array(y, mask=np.arange(12) == 0)
    _assert_refused(lambda: pp.fit(model, loss, optimizer, X.data, masked_y, verbose=0), "y")
    _assert_refused(lambda: pp.predict(model, X))
    _assert_refused(lambda: pp.evaluate(model, loss, X, y))
    after = {k: np.asarray(backend.to_host(p.data)) for k, p in model.named_parameters()}
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_the_estimators_refuse_a_masked_array(backend):
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning

    from portprop.sklearn import MLPClassifier, MLPRegressor

    X, y = _masked()
    for estimator in (MLPClassifier(max_iter=2, backend=backend),
                      MLPRegressor(max_iter=2, backend=backend)):  # fmt: skip
        with pytest.raises(TypeError, match=r"is a NumPy masked array \(1 masked value\)"):
            estimator.fit(X, y)
    fitted = MLPClassifier(max_iter=2, backend=backend)
    with pytest.warns(ConvergenceWarning):  # after 2 iterations
        fitted.fit(X.data, y)
    for method in (fitted.predict, fitted.predict_proba, lambda X: fitted.score(X, y)):
        with pytest.raises(TypeError, match=r"is a NumPy masked array"):
            method(X)


def test_the_datasets_helpers_refuse_a_masked_array():
    X, y = _masked()
    _assert_refused(lambda: pp.datasets.Standardizer().fit(X))
    _assert_refused(lambda: pp.datasets.Standardizer().fit(X.data).transform(X))
    _assert_refused(lambda: pp.datasets.train_test_split(X, y))
