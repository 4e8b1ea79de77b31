"""Data: the bundled digits, CSV and .npz readers, the stratified split and the
standardizer (on host arrays and on every backend)."""

from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp
from portprop.datasets import Standardizer, load_csv, load_digits, load_npz, train_test_split

# ---- load_digits -----------------------------------------------------------------------


def test_load_digits_on_each_backend(backend):
    pytest.importorskip("sklearn")
    X, y = load_digits(backend=backend)
    assert backend.owns(X)
    assert backend.owns(y)
    assert tuple(X.shape) == (1797, 64)
    assert tuple(y.shape) == (1797,)
    assert X.dtype == backend.float_dtype("float32")
    host_X, host_y = to_numpy(X), to_numpy(y)
    assert host_X.min() == 0.0
    assert host_X.max() == 1.0
    assert host_y.dtype == np.int64
    assert sorted(set(host_y.tolist())) == list(range(10))


def test_load_digits_matches_scikit_learn_scaled():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X, y = load_digits(dtype="float64")
    bunch = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(X, bunch.data / 16.0)
    np.testing.assert_array_equal(y, bunch.target)


def test_load_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


# ---- load_csv --------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_csv_with_a_header(tmp_path):
    path = _write(tmp_path, "a,b,label\n1,2,0\n3.5,-4,1\n\n5,6e1,1\n")
    X, y = load_csv(path)
    np.testing.assert_array_equal(X, [[1, 2], [3.5, -4], [5, 60]])
    assert X.dtype == np.float64
    np.testing.assert_array_equal(y, [0, 1, 1])
    assert y.dtype == np.int64


def test_load_csv_label_by_name_and_position(tmp_path):
    path = _write(tmp_path, "label,a,b\n0,1,2\n1,3,4\n")
    X, y = load_csv(path, label_column="label")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])
    X2, y2 = load_csv(path, label_column=0)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_load_csv_without_a_header(tmp_path):
    path = _write(tmp_path, "1,2,0.5\n3,4,1.5\n")
    X, y = load_csv(path)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [0.5, 1.5])
    X_forced, _ = load_csv(path, header=True)
    assert X_forced.shape == (1, 2)


def test_load_csv_string_labels_are_not_taken_for_a_header(tmp_path):
    path = _write(tmp_path, "5.1;3.5;setosa\n6.2;2.9;versicolor\n", "iris.csv")
    X, y = load_csv(path, delimiter=";")
    assert X.shape == (2, 2)
    assert y.tolist() == ["setosa", "versicolor"]


def test_load_csv_skips_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffx,y\n1,0\n".encode())
    X, y = load_csv(path, label_column="y")
    np.testing.assert_array_equal(X, [[1.0]])
    np.testing.assert_array_equal(y, [0])


@pytest.mark.parametrize(
    ("text", "kwargs", "error", "fragment"),
    [
        ("a,b,c\n1,x,0\n", {}, ValueError, "line 2, column 1 ('b'): expected a number, found 'x'"),
        ("1,,0\n2,3,1\n", {}, ValueError, "line 1, column 1: expected a number, found an empty"),
        ("a,b,c\n1,2,0\n1,2\n", {}, ValueError, "line 3 has 2 fields but the header has 3"),
        ("a,b,c\n1,2,0\n", {"label_column": "target"}, KeyError, "no column named 'target'"),
        ("1,2,0\n", {"label_column": "c"}, KeyError, "the file has no header"),
        ("1,2,0\n", {"label_column": 3}, KeyError, "out of range for 3 columns"),
        ("\n\n", {}, ValueError, "holds no rows"),
        ("a,b\n", {}, ValueError, "has a header but no data rows"),
        ("1\n2\n", {}, ValueError, "at least one feature column"),
    ],
)
def test_load_csv_errors_name_the_file_and_place(tmp_path, text, kwargs, error, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(error) as info:
        load_csv(path, **kwargs)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


# ---- load_npz --------------------------------------------------------------------------


def test_load_npz(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.arange(6, dtype=np.int32).reshape(3, 2), y=np.array([0, 1, 0]))
    X, y = load_npz(path)
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(y, [0, 1, 0])


def test_load_npz_other_names(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, features=np.ones((2, 3)), target=np.array(["a", "b"]))
    X, y = load_npz(path, features="features", labels="target")
    assert X.shape == (2, 3)
    assert y.tolist() == ["a", "b"]


def test_load_npz_missing_key_lists_the_arrays(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, data=np.ones((2, 2)), y=np.zeros(2))
    with pytest.raises(KeyError) as info:
        load_npz(path)
    assert str(path) in str(info.value)
    assert "no array named 'X'" in str(info.value)
    assert "['data', 'y']" in str(info.value)


def test_load_npz_refuses_object_arrays(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X=np.ones((2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=r"array 'y' cannot be read without unpickling") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_load_npz_refuses_pickles_and_npy_files(tmp_path):
    pickled = tmp_path / "data.pkl"
    pickled.write_bytes(pickle.dumps({"X": [[1.0]], "y": [0]}))
    with pytest.raises(ValueError, match="without unpickling"):
        load_npz(pickled)
    npy = tmp_path / "data.npy"
    np.save(npy, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        load_npz(npy)


@pytest.mark.parametrize(
    ("X", "y", "fragment"),
    [
        (np.ones(3), np.zeros(3), "must be a 2-D numeric array"),
        (np.array([["a", "b"]]), np.zeros(1), "must be a 2-D numeric array"),
        (np.ones((3, 2)), np.zeros(2), "one label per sample (3)"),
    ],
)
def test_load_npz_checks_shapes(tmp_path, X, y, fragment):
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=y)
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        load_npz(path)
    assert str(path) in str(info.value)


# ---- train_test_split ------------------------------------------------------------------


def _classes(n_per_class: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    X = np.arange(len(y) * 2, dtype=np.float64).reshape(-1, 2)
    return X, y


def test_split_sizes_disjoint_and_complete():
    X, y = _classes((50, 30, 20))
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    assert len(X_test) == len(y_test) == 20
    assert len(X_train) == len(y_train) == 80
    rows = np.concatenate([X_train[:, 0], X_test[:, 0]])
    assert sorted(rows.tolist()) == sorted(X[:, 0].tolist())
    # rows and labels stay paired
    np.testing.assert_array_equal(y[(X_test[:, 0] // 2).astype(int)], y_test)


def test_split_is_stratified():
    X, y = _classes((45, 33, 22))
    _, _, y_train, y_test = train_test_split(X, y, test_size=0.3)
    assert len(y_test) == 30
    for c, n in enumerate((45, 33, 22)):
        assert abs(int(np.sum(y_test == c)) - n * 0.3) < 1
        assert int(np.sum(y_test == c)) + int(np.sum(y_train == c)) == n


def test_split_is_shuffled_and_reproducible():
    X, y = _classes((40, 40))
    first = train_test_split(X, y, seed=1)
    again = train_test_split(X, y, seed=1)
    other = train_test_split(X, y, seed=2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[2], np.sort(first[2]))  # classes are interleaved


def test_split_without_stratification_and_with_a_count():
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = np.random.default_rng(1).normal(size=10)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=3, stratify=False)
    assert X_train.shape == (7, 3)
    assert X_test.shape == (3, 3)
    assert y_train.shape == (7,)
    assert y_test.shape == (3,)
    with pytest.raises(ValueError, match="stratify=False"):
        train_test_split(X, y)


@pytest.mark.parametrize(
    ("test_size", "error"),
    [(0.0, ValueError), (1.0, ValueError), (0, ValueError), (10, ValueError), (True, TypeError)],
)
def test_split_rejects_bad_test_sizes(test_size, error):
    X, y = _classes((5, 5))
    with pytest.raises(error, match="test_size"):
        train_test_split(X, y, test_size=test_size)


def test_split_checks_the_labels():
    with pytest.raises(ValueError, match="one label per sample"):
        train_test_split(np.ones((4, 2)), np.zeros(3))


# ---- Standardizer ----------------------------------------------------------------------


def _features() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 4.0], size=(200, 3))
    X[:, 1] = 7.0  # a constant feature
    return X


def test_standardizer_fits_on_the_host():
    X = _features()
    s = Standardizer().fit(X)
    assert s.mean_ is not None
    assert s.scale_ is not None
    assert s.mean_.dtype == s.scale_.dtype == np.float64
    np.testing.assert_allclose(s.mean_, X.mean(axis=0))
    np.testing.assert_allclose(s.scale_, [X[:, 0].std(), 1.0, X[:, 2].std()])
    Z = s.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(s.inverse_transform(Z), X)


def test_standardizer_matches_scikit_learn():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X = _features()
    ours = Standardizer().fit_transform(X)
    theirs = preprocessing.StandardScaler().fit_transform(X)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_standardizer_on_each_backend(backend):
    X = _features()
    s = Standardizer().fit(X)
    Xb = backend.from_host(X, "float32")
    Z = s.transform(Xb)
    assert backend.owns(Z)
    assert Z.dtype == backend.float_dtype("float32")
    np.testing.assert_allclose(to_numpy(Z), s.transform(X), rtol=1e-5, atol=1e-5)
    back = s.inverse_transform(Z)
    assert backend.owns(back)
    np.testing.assert_allclose(to_numpy(back), X, rtol=1e-5, atol=1e-4)
    fitted_there = Standardizer().fit(Xb)  # fitting accepts backend arrays too
    np.testing.assert_allclose(fitted_there.mean_, X.astype(np.float32).mean(axis=0), rtol=1e-6)


def test_standardizer_keeps_float32_host_arrays_float32_and_promotes_ints():
    s = Standardizer().fit(_features())
    assert s.transform(_features().astype(np.float32)).dtype == np.float32
    ints = np.ones((2, 3), dtype=np.int64)
    assert s.transform(ints).dtype == np.float64
    assert s.transform([[1.0, 2.0, 3.0]]).shape == (1, 3)


def test_standardizer_dict_round_trip_is_exact_through_json():
    s = Standardizer().fit(_features())
    restored = Standardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored.mean_ is not None
    assert restored.scale_ is not None
    np.testing.assert_array_equal(restored.mean_, s.mean_)
    np.testing.assert_array_equal(restored.scale_, s.scale_)


def test_standardizer_travels_in_a_checkpoint(tmp_path):
    s = Standardizer().fit(_features())
    model = pp.Sequential(pp.Linear(3, 2))
    pp.save(tmp_path / "m.safetensors", model, extra={"standardizer": s.to_dict()})
    loaded = pp.load(tmp_path / "m.safetensors")
    restored = Standardizer.from_dict(loaded.extra["standardizer"])
    np.testing.assert_array_equal(restored.transform(_features()), s.transform(_features()))


def test_standardizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(np.ones((2, 3)))
    s = Standardizer().fit(_features())
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        s.transform(np.ones((2, 4)))
    with pytest.raises(ValueError, match="2-D numeric"):
        Standardizer().fit(np.ones(3))
    with pytest.raises(ValueError, match="scale finite and positive"):
        Standardizer.from_dict({"mean": [0.0], "scale": [0.0]})
    with pytest.raises(ValueError, match="'mean' and 'scale'"):
        Standardizer.from_dict({"mean": [0.0]})
