"""Reliability of checkpoints (issue 4, cases 21-26), and a fuzz test of the loader.

Each case checks the exception's type, that its message names the file and the problem
(with the expected and the actual values where there are such), and that the model,
the optimizer and the files on disk are exactly as they were afterwards.

- 21: crafted safetensors files (truncated, bad header sizes, bad offsets, shapes,
  dtypes, trailing bytes, an empty file, malformed JSON, NaN in the data);
- 22: missing, unexpected and wrongly shaped tensors, listed in one error, nothing loaded;
- 23: a checkpoint of another architecture, of a newer format, of another program;
- 24: pickles, torch ``.pt`` files, object ``.npz`` files: refused, never unpickled,
  and no pickle loader anywhere in the package source;
- 25: a writer killed in the middle of a save; stale temporary files;
- 26: a read-only directory, a full disk, a file-size limit at save time.

The fuzz test runs briefly here; ``nox -s fuzz`` runs it long
(``PORTPROP_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import ast
import errno
import itertools
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import portprop as pp
from portprop import io as ckpt
from portprop.io import atomic, safetensors

SRC = Path(pp.__file__).parent
NAME = "model.safetensors"


# ---- helpers ---------------------------------------------------------------------------


def _build(backend: Any = "numpy", seed: int = 0) -> pp.Sequential:
    kw = {"backend": backend}
    pp.manual_seed(seed)
    return pp.Sequential(
        pp.Linear(2, 4, **kw), pp.ReLU(**kw), pp.Dropout(0.25, **kw), pp.Linear(4, 3, **kw),
    )  # fmt: skip


def _trained(backend: Any = "numpy", seed: int = 0) -> tuple[pp.Sequential, pp.Adam]:
    """A model and an Adam optimizer after one step, so that both have state."""
    model = _build(backend, seed)
    optimizer = pp.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad = model.backend.from_host(rng.normal(size=p.shape), "float32")
    optimizer.step()
    return model, optimizer


class _Snapshot:
    """The exact state of a model and its optimizer: every array's object, dtype and
    bytes, the gradients, and the optimizer's state dict copied to the host."""

    def __init__(self, model: pp.Module, optimizer: Any = None) -> None:
        self.params = [(p, p.data, p.grad, _bits(p.data)) for p in model.parameters()]
        self.optimizer = optimizer
        self.optimizer_state = None if optimizer is None else _host_state(optimizer)

    def assert_unchanged(self) -> None:
        for i, (p, data, grad, bits) in enumerate(self.params):
            assert p.data is data, f"parameter {i} was replaced"
            assert p.grad is grad, f"the gradient of parameter {i} was replaced"
            assert _bits(p.data) == bits, f"parameter {i} changed"
        if self.optimizer is not None:
            assert _host_state(self.optimizer) == self.optimizer_state, "the optimizer changed"


def _bits(x: Any) -> tuple[str, tuple[int, ...], bytes]:
    host = np.asarray(to_numpy(x))
    return str(host.dtype), host.shape, host.tobytes()


def _host_state(optimizer: Any) -> Any:
    def host(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: host(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [host(v) for v in value]
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return ("array", *_bits(value))
        return value

    return host(optimizer.state_dict())


def _listing(directory: Path) -> dict[str, bytes | None]:
    """Every entry of ``directory`` (hidden ones included) with its bytes (a folder:
    None)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(directory.iterdir())}


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _split(raw: bytes) -> tuple[int, dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _join(header: dict[str, Any] | bytes, data: bytes, *, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _saved_bytes(tmp_path: Path, seed: int = 7) -> bytes:
    """A valid checkpoint of ``_trained``'s architecture, with optimizer state."""
    model, optimizer = _trained("numpy", seed)
    path = tmp_path / "valid" / NAME
    path.parent.mkdir(exist_ok=True)
    pp.save(path, model, optimizer, epoch=3, extra={"note": "valid"})
    return path.read_bytes()


def _rewrite(
    raw: bytes, path: Path, change: Callable[[dict[str, Any], dict[str, str]], None]
) -> None:
    """Write to ``path`` the checkpoint ``raw`` with ``change(tensors, metadata)`` made."""
    source = path.parent / "source.safetensors"
    source.write_bytes(raw)
    tensors, metadata = ckpt.read_safetensors(source)
    source.unlink()
    change(tensors, metadata)
    ckpt.write_safetensors(path, tensors, metadata)


@pytest.fixture(autouse=True)
def _keep_the_host_generator() -> Iterator[None]:
    """restore_rng() and manual_seed() here must not change other tests' draws."""
    generator = pp.host_generator()
    state = generator.bit_generator.state
    yield
    generator.bit_generator.state = state


# ---- case 21: crafted safetensors files -------------------------------------------------


def _craft(case: str, raw: bytes) -> tuple[bytes, list[str]]:
    """A corrupted copy of the valid checkpoint ``raw``, and what its error must say."""
    length, header, data = _split(raw)
    names = [k for k in header if k != "__metadata__"]
    first, second = names[0], names[1]
    begin, end = header[first]["data_offsets"]
    if case == "empty":
        return b"", ["the file is empty (0 bytes)"]
    if case == "truncated-length-prefix":
        return raw[:5], ["it has 5 bytes, but a checkpoint starts with an 8-byte header length"]
    if case == "truncated-header":
        return raw[: 8 + length // 2], [
            (
                f"its header length ({length} bytes) is larger than the rest of the file "
                f"({length // 2} bytes)"
            )
        ]
    if case == "truncated-data":
        cut = len(data) - 12
        victim = next(k for k in names if header[k]["data_offsets"][1] > cut)
        return raw[:-12], [
            f"tensor {victim!r} has data_offsets {header[victim]['data_offsets']} out of range",
            (
                f"would end at byte {header[victim]['data_offsets'][1]}, but the data "
                f"section holds {cut} bytes (the file is truncated or corrupt)"
            ),
        ]
    if case == "header-larger-than-file":
        return _join(raw[8 : 8 + length], data, length=len(raw)), [
            (
                f"its header length ({len(raw)} bytes) is larger than the rest of the file "
                f"({len(raw) - 8} bytes)"
            )
        ]
    if case == "header-over-the-size-limit":
        return _join(raw[8 : 8 + length], data, length=10 * 10**9), [
            (
                "its header length is 10000000000 bytes (9.3 GiB), over the limit of "
                "16777216 bytes (16 MiB)"
            )
        ]
    if case == "offsets-out-of-range":
        header[first]["data_offsets"] = [begin, len(data) + 4]
        return _join(header, data), [
            f"tensor {first!r} has data_offsets [{begin}, {len(data) + 4}] out of range",
            f"would end at byte {len(data) + 4}, but the data section holds {len(data)} bytes",
        ]
    if case == "offsets-reversed":
        header[first]["data_offsets"] = [end, begin]
        return _join(header, data), [
            (
                f"tensor {first!r} has data_offsets [{end}, {begin}] out of range: "
                "expected 0 <= begin <= end"
            )
        ]
    if case == "offsets-overlapping":
        size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
        header[second]["data_offsets"] = [begin, begin + size]
        # the reader goes through the tensors in the order of their offsets
        spans = sorted([([begin, end], first), ([begin, begin + size], second)])
        (a_span, a), (b_span, b) = spans
        return _join(header, data), [
            (
                f"the data of tensors {a!r} (up to byte {a_span[1]}) and {b!r} (data_offsets "
                f"{b_span}) overlap"
            )
        ]
    if case == "shape-does-not-match-the-bytes":
        rows, columns = header[first]["shape"]
        header[first]["shape"] = [rows, columns + 1]
        needed = rows * (columns + 1) * 4
        return _join(header, data), [
            (
                f"tensor {first!r} of dtype F32 and shape [{rows}, {columns + 1}] needs "
                f"{needed} bytes, but its data_offsets [{begin}, {end}] span {end - begin}"
            )
        ]
    if case == "unknown-dtype":
        header[first]["dtype"] = "BF16"
        return _join(header, data), [
            f"tensor {first!r} has unknown dtype 'BF16'; this reader knows F64, F32, F16, I64"
        ]
    if case == "extra-trailing-bytes":
        return raw + bytes(7), [
            (
                f"the data section holds {len(data) + 7} bytes, but the tensors cover "
                f"{len(data)}: 7 extra bytes follow the last tensor (trailing data)"
            )
        ]
    if case == "malformed-json-header":
        broken = b'{"model.0.weight": {"dtype": "F32", '
        return _join(broken + b" " * (length - len(broken)), data), [
            "the header is malformed JSON (Expecting property name"
        ]
    if case == "header-not-utf8":
        text = raw[8 : 8 + length].replace(b'"F32"', b'"F\xff2"', 1)
        return _join(text, data), ["the header is not UTF-8"]
    if case == "malformed-json-metadata":
        header["__metadata__"]["architecture"] = '[{"type": "Linear", "in_features": 2,'
        return _join(header, data), ["metadata 'architecture' is malformed JSON (Expecting"]
    if case == "data-changed":  # one bit of a weight flipped after writing
        patched = bytearray(data)
        patched[begin] ^= 0x01
        return _join(header, bytes(patched)), [
            "the SHA-256 of its header and data is ",
            "but its metadata records ",
            "the file changed after it was written (the file is corrupt, or was edited)",
        ]
    if case == "digest-malformed":
        header["__metadata__"]["portprop.sha256"] = "abc"
        return _join(header, data), [
            "metadata 'portprop.sha256' must be 64 lowercase hex digits, got 'abc'"
        ]
    if case == "nan-in-the-data":
        # as another safetensors writer would leave it: no digest, so the values are
        # what catches it
        del header["__metadata__"]["portprop.sha256"]
        patched = bytearray(data)
        patched[begin : begin + 4] = np.array([np.nan], dtype="<f4").tobytes()
        patched[begin + 4 : begin + 8] = np.array([-np.inf], dtype="<f4").tobytes()
        shape = tuple(header[first]["shape"])
        return _join(header, bytes(patched)), [
            (
                f"tensor {first!r} of shape {shape} holds 1 NaN and 1 infinite values; "
                "expected finite values only: the file is corrupt"
            )
        ]
    raise AssertionError(case)


CASE21 = [
    "empty",
    "truncated-length-prefix",
    "truncated-header",
    "truncated-data",
    "header-larger-than-file",
    "header-over-the-size-limit",
    "offsets-out-of-range",
    "offsets-reversed",
    "offsets-overlapping",
    "shape-does-not-match-the-bytes",
    "unknown-dtype",
    "extra-trailing-bytes",
    "malformed-json-header",
    "header-not-utf8",
    "malformed-json-metadata",
    "data-changed",
    "digest-malformed",
    "nan-in-the-data",
]


def _assert_refused_untouched(
    path: Path, backend: pp.Backend, fragments: list[str]
) -> pp.CheckpointError:
    """load_into a trained model and optimizer on ``backend``, and load: both refuse
    with the same message, holding every fragment; nothing changes, on disk neither."""
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    files = _listing(path.parent)
    with pytest.raises(pp.CheckpointError) as into:
        pp.load_into(path, model, optimizer)
    with pytest.raises(pp.CheckpointError) as loaded:
        pp.load(path, backend=backend)
    message = str(into.value)
    assert message.startswith(f"{str(path)!r} is not a valid portprop checkpoint: "), message
    for fragment in fragments:
        assert fragment in message
    assert str(loaded.value) == message
    snapshot.assert_unchanged()
    assert _listing(path.parent) == files
    return into.value


@pytest.mark.parametrize("case", CASE21)
def test_case21_crafted_file(tmp_path, backend, case):
    content, fragments = _craft(case, _saved_bytes(tmp_path))
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(content)
    error = _assert_refused_untouched(path, backend, fragments)
    assert isinstance(error, ValueError)
    assert error.__cause__ is None  # no half-explained chained exception


def test_case21_the_uncrafted_file_loads_and_changes_the_model(tmp_path, backend):
    """The control of the test above: the valid file itself loads into the same model
    and optimizer, and changes both (so "unchanged" there is the loader's doing)."""
    path = tmp_path / NAME
    path.write_bytes(_saved_bytes(tmp_path))
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    pp.load_into(path, model, optimizer)
    with pytest.raises(AssertionError, match="parameter 0 was replaced"):
        snapshot.assert_unchanged()
    expected = ckpt.read_safetensors(path)[0]["model.0.weight"]
    np.testing.assert_array_equal(to_numpy(model[0].weight.data), expected)
    assert _host_state(optimizer) != snapshot.optimizer_state


def test_case21_every_truncation_is_refused(tmp_path):
    """Every prefix of a checkpoint, cut at each region boundary and around it."""
    raw = _saved_bytes(tmp_path)
    length, header, _ = _split(raw)
    cuts = {0, 1, 7, 8, 9, 8 + length - 1, 8 + length, len(raw) - 1}
    cuts.update(8 + length + end + d for k, v in header.items() if k != "__metadata__"
                for end in v["data_offsets"] for d in (-1, 0, 1))  # fmt: skip
    path = tmp_path / "cut.safetensors"
    for size in sorted(c for c in cuts if 0 <= c < len(raw)):
        path.write_bytes(raw[:size])
        with pytest.raises(pp.CheckpointError) as info:
            pp.load(path)
        assert str(path) in str(info.value), size
        assert "truncated" in str(info.value) or "empty" in str(info.value), str(info.value)


def test_case21_a_missing_file_is_file_not_found(tmp_path, backend):
    path = tmp_path / "absent.safetensors"
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    for call in (lambda: pp.load_into(path, model, optimizer), lambda: pp.load(path)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert info.value.filename == str(path)
        assert "No such file or directory" in str(info.value)
    snapshot.assert_unchanged()
    assert _names(tmp_path) == []


@pytest.mark.parametrize(
    ("state", "cause"),
    [
        ({"state": {"state": 2**200, "inc": 1}}, OverflowError),
        ({"state": {"state": -1, "inc": 1}}, OverflowError),
        ({"has_uint32": 2**70}, OverflowError),
        ({"uinteger": -5}, OverflowError),
        ({"state": [1]}, TypeError),
    ],
)
def test_case21_a_crafted_random_state_restores_nothing(tmp_path, state, cause):
    """Integers out of range in the saved host generator state (OverflowError inside
    NumPy) are a CheckpointError, and no generator changes."""

    def change(tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        rng = json.loads(metadata["rng"])
        rng["host"].update(state)
        metadata["rng"] = json.dumps(rng)

    path = tmp_path / NAME
    _rewrite(_saved_bytes(tmp_path), path, change)
    model = _build(seed=1)
    loaded = pp.load_into(path, model)
    host = pp.host_generator().bit_generator.state
    dropout = model[2].generator.get_state()
    with pytest.raises(pp.CheckpointError) as info:
        pp.restore_rng(loaded)
    assert str(info.value) == (
        f"cannot restore the random state of {str(path)!r}: {info.value.__cause__}"
    )
    assert type(info.value.__cause__) is cause
    assert pp.host_generator().bit_generator.state == host
    assert model[2].generator.get_state() == dropout


# ---- case 22: missing, unexpected and wrongly shaped tensors -----------------------------


def test_case22_missing_unexpected_and_misshaped_tensors_in_one_error(tmp_path, backend):
    def change(tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        del tensors["model.0.bias"]
        tensors["model.3.extra"] = np.ones(2, np.float32)
        tensors["model.3.weight"] = np.ones((3, 5), np.float32)

    path = tmp_path / NAME
    _rewrite(_saved_bytes(tmp_path), path, change)
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    with pytest.raises(pp.CheckpointError) as info:
        pp.load_into(path, model, optimizer)
    message = str(info.value)
    assert message.startswith(f"checkpoint {str(path)!r} does not fit this model (nothing was ")
    for fragment in (
        "the model has parameters that the checkpoint lacks: ['0.bias']",
        "the checkpoint has parameters that the model lacks: ['3.extra']",
        "parameter '3.weight' has shape (3, 5) in the checkpoint, (3, 4) in the model",
    ):
        assert fragment in message
    snapshot.assert_unchanged()

    with pytest.raises(pp.CheckpointError) as rebuilt:
        pp.load(path, backend=backend)
    for fragment in (
        "its tensors do not match its architecture",
        "the architecture has parameters that the checkpoint lacks: ['0.bias']",
        "the checkpoint has parameters that the architecture lacks: ['3.extra']",
        "parameter '3.weight' has shape (3, 5) in the checkpoint, (3, 4) in the architecture",
    ):
        assert fragment in str(rebuilt.value)


def test_case22_an_optimizer_state_that_does_not_fit_changes_neither(tmp_path, backend):
    """The model's tensors fit, the optimizer's do not: the optimizer refuses after the
    model was loaded, and the model is put back as it was."""

    def change(tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        tensors["optimizer.state.0.exp_avg"] = np.zeros((5, 5), np.float32)

    path = tmp_path / NAME
    _rewrite(_saved_bytes(tmp_path), path, change)
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    with pytest.raises(pp.CheckpointError) as info:
        pp.load_into(path, model, optimizer)
    message = str(info.value)
    assert message.startswith(f"checkpoint {str(path)!r}: Adam refused the saved state")
    assert "(nothing was loaded)" in message
    assert "(5, 5)" in message
    assert "(4, 2)" in message
    assert isinstance(info.value.__cause__, pp.StateDictError)
    snapshot.assert_unchanged()


def test_case22_an_interrupt_while_the_optimizer_loads_changes_nothing(
    tmp_path, backend, monkeypatch
):
    path = tmp_path / NAME
    path.write_bytes(_saved_bytes(tmp_path))
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)

    def interrupted(state: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(optimizer, "load_state_dict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pp.load_into(path, model, optimizer)
    monkeypatch.undo()
    snapshot.assert_unchanged()


# ---- case 23: another architecture, a newer format, another program ----------------------


def test_case23_another_architecture_is_described_layer_by_layer(tmp_path, backend):
    path = tmp_path / NAME
    path.write_bytes(_saved_bytes(tmp_path))
    kw = {"backend": backend}
    other = pp.Sequential(pp.Linear(3, 4, **kw), pp.Tanh(**kw), pp.Dropout(0.5, **kw),
                          pp.Linear(4, 3, bias=False, **kw))  # fmt: skip
    optimizer = pp.Adam(other.parameters())
    snapshot = _Snapshot(other, optimizer)
    with pytest.raises(pp.CheckpointError) as info:
        pp.load_into(path, other, optimizer)
    message = str(info.value)
    assert str(path) in message
    for fragment in (
        "layer 0 (Linear): in_features is 2 in the checkpoint, 3 in the model",
        "layer 1 is ReLU() in the checkpoint but Tanh() in the model",
        "layer 2 (Dropout): p is 0.25 in the checkpoint, 0.5 in the model",
        "layer 3 (Linear): bias is True in the checkpoint, False in the model",
        "parameter '0.weight' has shape (4, 2) in the checkpoint, (4, 3) in the model",
        "the checkpoint has parameters that the model lacks: ['3.bias']",
        "the checkpoint holds state for 4 parameters, the optimizer has 3",
    ):
        assert fragment in message
    snapshot.assert_unchanged()

    shorter = pp.Sequential(pp.Linear(2, 4, **kw), pp.ReLU(**kw))
    expected = (
        "the checkpoint has 4 layers, the model 2: checkpoint [Linear(in_features=2, "
        "out_features=4, bias=True), ReLU(), Dropout(p=0.25), Linear(in_features=4, "
        "out_features=3, bias=True)], model [Linear(in_features=2, out_features=4, "
        "bias=True), ReLU()]"
    )
    with pytest.raises(pp.CheckpointError, match=re.escape(expected)):
        pp.load_into(path, shorter)


NEWER = (
    "has checkpoint format version 2 (written by portprop 9.1), but this portprop "
    f"({pp.__version__}) reads format version 1; upgrade portprop to load it"
)


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        ("2", NEWER),
        ("0", "unknown checkpoint format version '0'"),
        ("1.1", "unknown checkpoint format version '1.1'"),
        ("\u0662", "unknown checkpoint format version '\u0662'"),  # an Arabic-Indic 2
        ("9" * 5000, "unknown checkpoint format version '" + "9" * 39),  # cut at 40
    ],
    ids=["newer", "zero", "decimal", "arabic-indic-digit", "5000-digits"],
)
def test_case23_another_format_version(tmp_path, backend, version, fragment):
    def change(tensors: dict[str, Any], metadata: dict[str, str]) -> None:
        metadata["portprop.checkpoint"] = version
        metadata["portprop.version"] = "9.1"

    path = tmp_path / NAME
    _rewrite(_saved_bytes(tmp_path), path, change)
    model, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(model, optimizer)
    for call in (lambda: pp.load_into(path, model, optimizer), lambda: pp.load(path)):
        with pytest.raises(pp.CheckpointError) as info:
            call()
        assert str(path) in str(info.value)
        assert fragment in str(info.value)
    snapshot.assert_unchanged()


def test_case23_a_safetensors_file_of_another_program(tmp_path):
    path = tmp_path / "other.safetensors"
    weights = {"0.weight": np.ones((4, 2), np.float32), "0.bias": np.zeros(4, np.float32)}
    ckpt.write_safetensors(path, weights, {"format": "pt"})
    with pytest.raises(pp.CheckpointError) as info:
        pp.load(path)
    assert str(info.value) == (
        f"{str(path)!r} is not a valid portprop checkpoint: its metadata has no "
        "'portprop.checkpoint' entry (not a portprop checkpoint)"
    )


def test_case23_an_architecture_whose_layers_do_not_fit(tmp_path, backend):
    """Each tensor fits its layer, but the layers do not fit together: a model that
    portprop would not build (Sequential refuses it) is a CheckpointError."""
    specs = [
        {"type": "Linear", "in_features": 2, "out_features": 3, "bias": False},
        {"type": "Linear", "in_features": 4, "out_features": 1, "bias": False},
    ]
    tensors = {"model.0.weight": np.ones((3, 2), np.float32), "model.1.weight": np.ones((1, 4))}
    metadata = {"portprop.checkpoint": "1", "architecture": json.dumps(specs)}
    path = tmp_path / NAME
    ckpt.write_safetensors(path, tensors, {**metadata, "dtype": "float32"})
    with pytest.raises(pp.CheckpointError) as info:
        pp.load(path, backend=backend)
    assert str(info.value) == (
        f"{str(path)!r} is not a valid portprop checkpoint: its architecture does not make "
        "a model: layer 1 (Linear) expects 4 input features, but layer 0 (Linear) gives 3 "
        "outputs"
    )


def test_case23_float16_parameters_of_another_program_load_everywhere(tmp_path, backend):
    """F16 tensors (which array-api-strict cannot hold) load as the model's dtype."""
    weight = np.array([[0.5, -1.25]], np.float16)
    specs = [{"type": "Linear", "in_features": 2, "out_features": 1, "bias": False}]
    metadata = {"portprop.checkpoint": "1", "architecture": json.dumps(specs), "dtype": "float32"}
    path = tmp_path / NAME
    ckpt.write_safetensors(path, {"model.0.weight": weight}, metadata)
    loaded = pp.load(path, backend=backend)
    model = pp.Sequential(pp.Linear(2, 1, bias=False, backend=backend))
    pp.load_into(path, model)
    for result in (loaded.model, model):
        assert result.backend == backend
        host = np.asarray(to_numpy(result[0].weight.data))
        assert host.dtype == np.float32
        np.testing.assert_array_equal(host, weight.astype(np.float32))


# ---- case 24: pickles are refused, never unpickled -------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _pickle_file(path: Path, marker: Path) -> str:
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return "a Python pickle"


def _pickle_protocol_2(path: Path, marker: Path) -> str:
    path.write_bytes(pickle.dumps([_Payload(marker)], protocol=2))
    return "a Python pickle"


def _torch_file(path: Path, marker: Path) -> str:
    torch = pytest.importorskip("torch")
    torch.save({"weight": torch.ones(2), "payload": _Payload(marker)}, path)
    return "a ZIP archive (such as a torch .pt/.pth file or a NumPy .npz)"


def _legacy_torch_file(path: Path, marker: Path) -> str:
    torch = pytest.importorskip("torch")
    torch.save({"payload": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    return "a Python pickle"


def _npz_file(path: Path, marker: Path) -> str:
    with path.open("wb") as f:
        np.savez(f, X=np.array([_Payload(marker)], dtype=object), y=np.zeros(1))
    return "a ZIP archive (such as a torch .pt/.pth file or a NumPy .npz)"


def _npy_file(path: Path, marker: Path) -> str:
    with path.open("wb") as f:
        np.save(f, np.array([_Payload(marker)], dtype=object))
    return "a NumPy .npy file"


PICKLED = {
    "raw-pickle": _pickle_file,
    "pickle-protocol-2": _pickle_protocol_2,
    "torch-pt": _torch_file,
    "legacy-torch-pt": _legacy_torch_file,
    "npz-object-array": _npz_file,
    "npy-object-array": _npy_file,
}


@pytest.mark.parametrize("kind", list(PICKLED))
def test_case24_pickled_files_are_refused_and_never_unpickled(tmp_path, kind):
    path = tmp_path / "model.pt"
    marker = tmp_path / "unpickled"
    described = PICKLED[kind](path, marker)
    model, optimizer = _trained(seed=1)
    snapshot = _Snapshot(model, optimizer)
    for call in (lambda: pp.load(path), lambda: pp.load_into(path, model, optimizer)):
        with pytest.raises(pp.CheckpointError) as info:
            call()
        assert str(info.value) == (
            f"{str(path)!r} is not a valid portprop checkpoint: it is {described}, not a "
            "safetensors checkpoint; portprop reads safetensors files only, and never "
            "unpickles a file"
        )
    assert not marker.exists()
    snapshot.assert_unchanged()


@pytest.mark.parametrize("kind", ["raw-pickle", "npz-object-array"])
def test_case24_the_payload_runs_when_unpickled(tmp_path, kind):
    """The control of the test above: the same files do create the marker when they
    are unpickled, so its absence there means that nothing was unpickled."""
    path = tmp_path / "model.pt"
    marker = tmp_path / "unpickled"
    PICKLED[kind](path, marker)
    if kind == "raw-pickle":
        pickle.loads(path.read_bytes())  # the point of the test
    else:
        with np.load(path, allow_pickle=True) as archive:
            archive["X"]
    assert marker.exists()


def test_case24_load_npz_refuses_object_arrays_unopened(tmp_path):
    path = tmp_path / "data.npz"
    marker = tmp_path / "unpickled"
    _npz_file(path, marker)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        pp.datasets.load_npz(path)
    assert "array 'X' cannot be read without unpickling" in str(info.value)
    assert "allow_pickle=False" in str(info.value)
    assert not marker.exists()


def test_case24_the_command_line_refuses_pickles(tmp_path, capsys):
    from portprop.cli import main

    marker = tmp_path / "unpickled"
    model = tmp_path / "model.pt"
    _pickle_file(model, marker)
    assert main(["evaluate", str(model), "--dataset", "disk"]) == 2
    error = capsys.readouterr().err
    assert str(model) in error
    assert "not a safetensors checkpoint" in error

    checkpoint = tmp_path / NAME
    pp.save(checkpoint, pp.Sequential(pp.Linear(2, 1)))
    samples = tmp_path / "samples.npz"
    _npz_file(samples, marker)
    assert main(["predict", str(checkpoint), str(samples)]) == 2
    assert "allow_pickle=False" in capsys.readouterr().err
    assert not marker.exists()


# What counts as loading a pickle: using any of these names of these modules (by any
# alias, or imported by name; None: any name); np.load without a literal
# allow_pickle=False; an allow_pickle that is not literally False; importing these
# modules by a string; an Unpickler subclass; a find_class method.  A regular
# expression also looks for the usual spellings, in case the code hides them.
_UNPICKLE = frozenset({"load", "loads", "Unpickler", "_Unpickler", "_load", "_loads"})
_LOADERS: dict[str, frozenset[str] | None] = {
    **dict.fromkeys(("pickle", "_pickle", "cPickle", "pickle5", "dill", "cloudpickle"), _UNPICKLE),
    "joblib": frozenset({"load"}),
    "marshal": frozenset({"load", "loads"}),
    "shelve": None,  # a shelf unpickles its values
    "jsonpickle": frozenset({"decode", "loads", "Unpickler"}),
    "torch": frozenset({"load"}),
    "pandas": frozenset({"read_pickle"}),
    "copyreg": None,
}
_SPELLINGS = re.compile(
    r"\bpickle\.(?:load|loads|Unpickler)\b|\btorch\.load\b|\bjoblib\.load\b"
    r"|\bmarshal\.loads?\b|\bdill\.loads?\b|\bcloudpickle\b|\bshelve\b|\bread_pickle\b"
    r"|allow_pickle\s*=\s*True"
)


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _pickle_loaders(source: str, filename: str = "<sample>") -> list[str]:
    """Every place in ``source`` that loads, or may load, a pickle."""
    found = [f"{filename}: {m.group(0)!r}" for m in _SPELLINGS.finditer(source)]
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> module, or "numpy.load"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[(alias.asname or alias.name).split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module.split(".")[0]
            loaders = _LOADERS.get(module, frozenset())
            for alias in node.names:
                if loaders is None or alias.name in loaders or alias.name == "*":
                    found.append(f"{filename}:{node.lineno}: from {module} import {alias.name}")
                if module == "numpy" and alias.name == "load":
                    aliases[alias.asname or alias.name] = "numpy.load"
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id, "")
            if module in _LOADERS and node.attr in (_LOADERS[module] or {node.attr}):
                found.append(f"{where}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call):
            found.extend(_pickling_call(node, aliases, where))
        elif isinstance(node, ast.ClassDef):
            if any(ast.unparse(base).endswith("Unpickler") for base in node.bases):
                found.append(f"{where}: class {node.name} derives from an Unpickler")
        elif isinstance(node, ast.FunctionDef) and node.name == "find_class":
            found.append(f"{where}: def find_class (a custom unpickler)")
    return found


def _pickling_call(node: ast.Call, aliases: dict[str, str], where: str) -> list[str]:
    found = []
    func = node.func
    np_load = (
        isinstance(func, ast.Attribute)
        and func.attr == "load"
        and isinstance(func.value, ast.Name)
        and aliases.get(func.value.id) == "numpy"
    ) or (isinstance(func, ast.Name) and aliases.get(func.id) == "numpy.load")
    safe = any(k.arg == "allow_pickle" and _is_false(k.value) for k in node.keywords)
    if np_load and not safe:
        found.append(f"{where}: np.load without allow_pickle=False")
    found.extend(
        f"{where}: allow_pickle={ast.unparse(k.value)}"
        for k in node.keywords
        if k.arg == "allow_pickle" and not _is_false(k.value)
    )
    importing = ast.unparse(func) in ("__import__", "importlib.import_module", "import_module")
    if importing and any(
        isinstance(a, ast.Constant) and str(a.value).split(".")[0] in _LOADERS for a in node.args
    ):
        found.append(f"{where}: {ast.unparse(node)}")
    return found


PLANTED = {
    "pickle.load": "import pickle\nwith open(p, 'rb') as f:\n    pickle.load(f)\n",
    "pickle.loads": "import pickle\nx = pickle.loads(b)\n",
    "aliased pickle": "import pickle as pk\nx = pk.loads(b)\n",
    "from pickle import": "from pickle import loads as l\nx = l(b)\n",
    "_pickle": "import _pickle\nx = _pickle.loads(b)\n",
    "Unpickler": "import pickle\nu = pickle.Unpickler(f).load()\n",
    "np.load default": "import numpy as np\nx = np.load(p)\n",
    "np.load True": "import numpy as np\nx = np.load(p, allow_pickle=True)\n",
    "np.load variable": "import numpy as np\nx = np.load(p, allow_pickle=flag)\n",
    "from numpy import load": "from numpy import load\nx = load(p)\n",
    "allow_pickle elsewhere": "from numpy.lib import format\nformat.read_array(f, allow_pickle=True)\n",
    "torch.load": "import torch\nstate = torch.load(p, weights_only=True)\n",
    "lazy torch.load": "def f(p):\n    import torch\n    return torch.load(p)\n",
    "joblib.load": "import joblib\nx = joblib.load(p)\n",
    "shelve": "import shelve\nwith shelve.open(p) as db:\n    x = db['k']\n",
    "dill": "import dill\nx = dill.loads(b)\n",
    "cloudpickle": "import cloudpickle\nx = cloudpickle.loads(b)\n",
    "marshal": "import marshal\ncode = marshal.loads(b)\n",
    "pandas": "import pandas as pd\nx = pd.read_pickle(p)\n",
    "import_module": "import importlib\nm = importlib.import_module('pickle')\n",
    "__import__": "m = __import__('pickle')\n",
    "Unpickler subclass": "import pickle\nclass Safe(pickle.Unpickler):\n    pass\n",
    "find_class": "class R:\n    def find_class(self, module, name):\n        return None\n",
    "copyreg": "import copyreg\ncopyreg.constructor(f)\n",
}
CLEAN = {
    "np.load allow_pickle=False": "import numpy as np\nx = np.load(p, allow_pickle=False)\n",
    "json.loads": "import json\nx = json.loads(s)\n",
    "pickling out": "import pickle\nb = pickle.dumps(x)\n",
    "__reduce__": "class E(Exception):\n    def __reduce__(self):\n        return (E, ())\n",
    "own load": "def load(path):\n    return open(path).read()\nx = load(p)\n",
    "torch, not load": "import torch\nx = torch.ones(2)\n",
}


@pytest.mark.parametrize("sample", list(PLANTED))
def test_case24_the_pickle_check_finds_a_planted_loader(sample):
    assert _pickle_loaders(PLANTED[sample]) != []


@pytest.mark.parametrize("sample", list(CLEAN))
def test_case24_the_pickle_check_passes_code_that_loads_no_pickle(sample):
    assert _pickle_loaders(CLEAN[sample]) == []


def test_case24_no_pickle_loader_in_the_package():
    sources = sorted(SRC.rglob("*.py"))
    assert SRC / "io" / "checkpoint.py" in sources
    assert SRC / "datasets.py" in sources
    found = []
    for source in sources:
        found += _pickle_loaders(source.read_text(encoding="utf-8"), source.name)
    assert found == []


# ---- case 25: a writer killed in the middle of a save ----------------------------------


def _anonymous_files_supported(directory: Path) -> bool:
    fd = atomic._open_anonymous(directory)
    if fd is None:
        return False
    os.close(fd)
    return True


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import portprop as pp
    from portprop.io import atomic, safetensors

    if sys.argv[2] == "named":  # as where O_TMPFILE is unsupported
        atomic._open_anonymous = lambda directory: None
    written = []

    def half_then_wait(f, array):
        data = array.reshape(-1).view(np.uint8)
        if written:  # the second array: half of it, then wait to be killed
            f.write(data[: data.size // 2].data)
            f.flush()
            os.fsync(f.fileno())
            print("half-written", flush=True)
            sys.stdin.read()
            raise SystemExit("the test did not kill this writer")
        f.write(data.data)
        written.append(array.nbytes)

    safetensors._write_array = half_then_wait
    model = pp.Sequential(pp.Linear(2, 64, seed=1), pp.ReLU(), pp.Linear(64, 2, seed=2))
    pp.save(sys.argv[1], model, epoch=99)
    """
)


def _kill_mid_write(path: Path, mode: str) -> dict[str, Any]:
    """Run a writer of ``path`` in a child process, and SIGKILL it once it has written
    half its data; returns what was seen while it was writing."""
    seen: dict[str, Any] = {}
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != "half-written":
                child.kill()
                pytest.fail(f"the writer did not start: {line!r} {child.communicate()[1]}")
            seen["listing"] = _names(path.parent)
            fds = Path(f"/proc/{child.pid}/fd")
            seen["open"] = [str(fd.readlink()) for fd in fds.iterdir()] if fds.is_dir() else []
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == -signal.SIGKILL
    return seen


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_case25_kill_during_save_leaves_no_file(tmp_path):
    if not _anonymous_files_supported(tmp_path):
        pytest.skip(f"no O_TMPFILE here ({sys.platform}, or the file system of {tmp_path})")
    path = tmp_path / NAME
    first = _build(seed=0)
    pp.save(path, first, epoch=1)
    before = _listing(tmp_path)

    seen = _kill_mid_write(path, "anonymous")

    # while it wrote, the new bytes had no name: the directory held the old file alone,
    # and the writer had a deleted (unnamed) file of that directory open
    assert seen["listing"] == [NAME]
    if seen["open"]:
        assert any(
            target.startswith(f"{tmp_path}/#") and target.endswith("(deleted)")
            for target in seen["open"]
        ), seen["open"]
    assert _listing(tmp_path) == before  # the same bytes, and nothing else
    loaded = pp.load(path)
    assert loaded.epoch == 1
    for a, b in zip(loaded.model.parameters(), first.parameters(), strict=True):
        assert _bits(a.data) == _bits(b.data)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_case25_kill_during_save_without_o_tmpfile(tmp_path):
    """Where O_TMPFILE is missing, a killed writer leaves its hidden temporary; it is
    never read as the checkpoint, and the next save removes it once it is stale."""
    path = tmp_path / NAME
    first = _build(seed=0)
    pp.save(path, first, epoch=1)
    old = path.read_bytes()

    seen = _kill_mid_write(path, "named")

    [temporary] = [name for name in seen["listing"] if name != NAME]
    assert re.fullmatch(rf"\.{re.escape(NAME)}\.[0-9a-f]{{12}}\.tmp", temporary)
    assert _names(tmp_path) == sorted([NAME, temporary])
    assert (tmp_path / temporary).stat().st_size > 0
    assert path.read_bytes() == old
    assert pp.load(path).epoch == 1
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [NAME]

    pp.save(path, first, epoch=2)  # the temporary is young: it may be a live writer's
    assert _names(tmp_path) == sorted([NAME, temporary])
    _age(tmp_path / temporary, atomic.STALE_TEMPORARY_SECONDS + 60)
    pp.save(path, first, epoch=3)
    assert _names(tmp_path) == [NAME]
    assert pp.load(path).epoch == 3


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_case25_a_stale_temporary_is_never_read_as_the_checkpoint(tmp_path):
    path = tmp_path / NAME
    pp.save(path, _build(seed=0), epoch=1)
    real = pp.load(path)
    # a complete, newer checkpoint and a half one, both left under temporary names
    newer = tmp_path / "newer.safetensors"
    pp.save(newer, _build(seed=5), epoch=9)
    (tmp_path / f".{NAME}.0123456789ab.tmp").write_bytes(newer.read_bytes())
    (tmp_path / f".{NAME}.ba9876543210.tmp").write_bytes(newer.read_bytes()[:100])
    newer.unlink()
    loaded = pp.load(path)
    assert loaded.epoch == 1
    for a, b in zip(loaded.model.parameters(), real.model.parameters(), strict=True):
        assert _bits(a.data) == _bits(b.data)
    model = _build(seed=3)
    assert pp.load_into(path, model).epoch == 1
    assert _bits(model[0].weight.data) == _bits(real.model[0].weight.data)


@pytest.mark.parametrize("mode", ["anonymous", "named"])
def test_case25_a_save_removes_only_stale_temporaries_of_its_own_file(tmp_path, monkeypatch, mode):
    if mode == "named":
        monkeypatch.setattr(atomic, "_open_anonymous", lambda directory: None)
    elif not _anonymous_files_supported(tmp_path):
        pytest.skip("no O_TMPFILE here")
    stale = atomic.STALE_TEMPORARY_SECONDS + 60
    kept = {
        f".{NAME}.0123456789ab.tmp": 10,  # young: a writer may be at work
        ".other.safetensors.0123456789ab.tmp": stale,  # another file's
        f".{NAME}.notahexname!.tmp": stale,  # not a name write_atomically makes
        f"{NAME}.0123456789ab.tmp": stale,  # not hidden
        f".{NAME}.0123456789ab.tmp.bak": stale,
    }
    removed = [f".{NAME}.fedcba987654.tmp", f".{NAME}.000000000000.tmp"]
    for name in [*kept, *removed]:
        (tmp_path / name).write_bytes(b"left by a killed writer")
        _age(tmp_path / name, kept.get(name, stale))
    (tmp_path / f".{NAME}.aaaaaaaaaaaa.tmp").mkdir()  # only files are removed
    _age(tmp_path / f".{NAME}.aaaaaaaaaaaa.tmp", stale)

    pp.save(tmp_path / NAME, _build())
    assert _names(tmp_path) == sorted([NAME, *kept, f".{NAME}.aaaaaaaaaaaa.tmp"])


def test_case25_without_o_tmpfile_a_named_temporary_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_open_anonymous", lambda directory: None)
    seen = []
    real_replace = Path.replace

    def spy(self: Path, target: Any) -> Path:
        seen.append((self, Path(target), _listing(self.parent)))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=4)
    [(temporary, target, listing)] = seen
    assert target == path
    assert temporary.parent == tmp_path
    assert re.fullmatch(rf"\.{re.escape(NAME)}\.[0-9a-f]{{12}}\.tmp", temporary.name)
    assert list(listing) == [temporary.name]
    assert listing[temporary.name] == path.read_bytes()  # complete before it is renamed
    assert _names(tmp_path) == [NAME]


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
def test_case25_a_file_system_without_o_tmpfile_falls_back(tmp_path, monkeypatch, code):
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system")
    real_open = os.open
    calls = []

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            calls.append(path)
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=5)
    assert pp.load(path).epoch == 5
    assert _names(tmp_path) == [NAME]
    assert calls == [tmp_path]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOENT, errno.EPERM])
def test_case25_a_system_that_cannot_link_the_file_copies_it(tmp_path, monkeypatch, code):
    if not _anonymous_files_supported(tmp_path):
        pytest.skip("no O_TMPFILE here")

    def cannot_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", cannot_link)
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=1)
    model = _build(seed=4)
    pp.save(path, model, epoch=6)  # over an existing file, too
    loaded = pp.load(path)
    assert loaded.epoch == 6
    assert _bits(loaded.model[3].weight.data) == _bits(model[3].weight.data)
    assert _names(tmp_path) == [NAME]


def test_case25_a_new_file_is_linked_in_directly(tmp_path, monkeypatch):
    """With O_TMPFILE and no file at the path, the complete file gets its final name
    in one link: no temporary name ever exists."""
    if not _anonymous_files_supported(tmp_path):
        pytest.skip("no O_TMPFILE here")
    names = []
    real_link = os.link

    def spy(source: Any, name: Any, **kwargs: Any) -> None:
        names.append(name)
        real_link(source, name, **kwargs)

    monkeypatch.setattr(os, "link", spy)
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=1)
    assert names == [NAME]
    pp.save(path, _build(), epoch=2)  # replacing one: linked as a temporary, renamed
    assert names[:2] == [NAME, NAME]  # the second link found the file there
    assert len(names) == 3
    assert re.fullmatch(rf"\.{re.escape(NAME)}\.[0-9a-f]{{12}}\.tmp", names[2])
    assert _names(tmp_path) == [NAME]
    assert pp.load(path).epoch == 2


# ---- case 26: a read-only directory, a full disk ---------------------------------------


@pytest.fixture(params=["anonymous", "named"])
def writer(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way write_atomically writes: to an O_TMPFILE file, or to a named temporary."""
    if request.param == "named":
        monkeypatch.setattr(atomic, "_open_anonymous", lambda directory: None)
    elif not _anonymous_files_supported(tmp_path):
        pytest.skip("no O_TMPFILE here")
    return str(request.param)


def _assert_save_fails_and_keeps(
    tmp_path: Path, backend: pp.Backend, reason: str, patches: dict[tuple[Any, str], Any]
) -> str:
    """Save a model of ``backend``; then, with ``patches`` in place, save another over
    it: that raises CheckpointError naming the file and ``reason``, and changes nothing
    (the directory holds the same files with the same bytes).  Returns the message."""
    path = tmp_path / NAME
    first = _build(backend, seed=0)
    pp.save(path, first, epoch=1)
    before = _listing(tmp_path)
    second, optimizer = _trained(backend, seed=1)
    snapshot = _Snapshot(second, optimizer)
    with pytest.MonkeyPatch.context() as m:
        for (owner, name), value in patches.items():
            m.setattr(owner, name, value)
        with pytest.raises(pp.CheckpointError) as info:
            pp.save(path, second, optimizer, epoch=2)
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint {str(path)!r}: {reason} (")
    assert message.endswith("); an earlier file at that path is unchanged")
    assert isinstance(info.value.__cause__, OSError)
    assert _listing(tmp_path) == before
    snapshot.assert_unchanged()
    loaded = pp.load(path, backend=backend)
    assert loaded.epoch == 1
    for a, b in zip(loaded.model.parameters(), first.parameters(), strict=True):
        assert _bits(a.data) == _bits(b.data)
    return message


def _refuse(code: int) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str | os.PathLike):
            raise OSError(code, os.strerror(code), os.fspath(args[0]))
        raise OSError(code, os.strerror(code))

    return refused


def _refuse_creating(code: int) -> Callable[..., int]:
    """os.open refusing to create a file, as in a read-only directory (which can still
    be opened, to be synced)."""
    real_open = os.open
    tmpfile = getattr(os, "O_TMPFILE", 0)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    return open_


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EACCES, "permission denied: the directory is not writable by this user"),
        (errno.EROFS, "the file system is read-only"),
    ],
    ids=["EACCES", "EROFS"],
)
def test_case26_read_only_directory(tmp_path, backend, writer, code, reason):
    message = _assert_save_fails_and_keeps(
        tmp_path, backend, reason, {(os, "open"): _refuse_creating(code)}
    )
    assert f"[Errno {code}] {os.strerror(code)}: '{tmp_path}" in message


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs a user other than root: chmod 0o555 does not stop root from writing",
)
def test_case26_read_only_directory_for_real(tmp_path, writer):
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=1)
    before = _listing(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(pp.CheckpointError) as info:
            pp.save(path, _build(seed=1), epoch=2)
    finally:
        tmp_path.chmod(0o755)
    assert str(path) in str(info.value)
    assert "permission denied" in str(info.value)
    assert _listing(tmp_path) == before


def _partial_write_then(code: int) -> Callable[..., None]:
    def write_array(f: Any, array: np.ndarray) -> None:
        data = array.reshape(-1).view(np.uint8)
        f.write(data[: data.size // 2].data)
        raise OSError(code, os.strerror(code))

    return write_array


@pytest.mark.parametrize("stage", ["write", "fsync", "link", "replace"])
def test_case26_full_disk(tmp_path, backend, writer, stage):
    if stage == "link" and writer == "named":
        pytest.skip("a named temporary is renamed, never linked")
    failure = {
        "write": (safetensors, "_write_array", _partial_write_then(errno.ENOSPC)),
        "fsync": (os, "fsync", _refuse(errno.ENOSPC)),
        "link": (os, "link", _refuse(errno.ENOSPC)),
        "replace": (os, "replace", _refuse(errno.ENOSPC)),
    }[stage]
    message = _assert_save_fails_and_keeps(
        tmp_path, backend, "no space left on the device", {failure[:2]: failure[2]}
    )
    assert "[Errno 28] No space left on device" in message


def test_case26_disk_quota_exceeded(tmp_path, writer):
    message = _assert_save_fails_and_keeps(
        tmp_path,
        pp.get_backend(backend="numpy"),
        "no space left: the disk quota is exceeded",
        {(safetensors, "_write_array"): _partial_write_then(errno.EDQUOT)},
    )
    assert os.strerror(errno.EDQUOT) in message


_SIZE_LIMITED_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    import portprop as pp
    from portprop.io import atomic

    if sys.argv[2] == "named":
        atomic._open_anonymous = lambda directory: None
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
    model = pp.Sequential(pp.Linear(2, 64, seed=1), pp.ReLU(), pp.Linear(64, 64, seed=2))
    try:
        pp.save(sys.argv[1], model, epoch=2)
    except pp.CheckpointError as error:
        print(error)
        sys.exit(3)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_case26_a_real_write_failure_past_the_file_size_limit(tmp_path, writer):
    """No monkeypatching: the kernel refuses the write (EFBIG) past RLIMIT_FSIZE."""
    path = tmp_path / NAME
    pp.save(path, _build(), epoch=1)
    before = _listing(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", _SIZE_LIMITED_WRITER, str(path), writer],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith(
        f"could not write checkpoint {str(path)!r}: the file would be larger than this "
        "process or the file system allows ([Errno 27] File too large"
    ), result.stdout
    assert _listing(tmp_path) == before
    assert pp.load(path).epoch == 1


def test_case26_a_model_with_nan_is_not_saved_over_a_good_checkpoint(tmp_path, backend):
    path = tmp_path / NAME
    pp.save(path, _build(backend), epoch=1)
    before = _listing(tmp_path)
    model = _build(backend, seed=2)
    host = to_numpy(model[3].bias.data).copy()
    host[1] = np.nan
    model[3].bias.data = backend.from_host(host, "float32")
    with pytest.raises(pp.CheckpointError) as info:
        pp.save(path, model, epoch=2)
    assert str(info.value) == (
        f"cannot save checkpoint {str(path)!r}: tensor 'model.3.bias' of shape (3,) holds "
        "1 NaN and 0 infinite values; expected finite values only, as a checkpoint must "
        "(the model diverged?); nothing was written"
    )
    assert _listing(tmp_path) == before


# ---- fuzzing -----------------------------------------------------------------------------
#
# The inputs are mostly valid checkpoints taken apart: bytes flipped (in the length, the
# header or the data), the header JSON edited (offsets, shapes, dtypes, tensors added,
# removed, renamed or overlapping, metadata values replaced by other JSON, by junk or by
# pathological text), lengths and data cut or extended; and checkpoints of random small
# architectures, written here apart from portprop's writer, whose values may be NaN.
# Random bytes alone would rarely get past the first 8.


def _fuzz_model_a() -> tuple[pp.Module, Any]:
    pp.manual_seed(11)
    inner = pp.Sequential(pp.Linear(3, 2), pp.Tanh())
    model = pp.Sequential(
        pp.Linear(2, 3), pp.LeakyReLU(0.1), pp.Dropout(0.2), inner, pp.Linear(2, 1, bias=False)
    )
    optimizer = pp.Adam(model.parameters(), lr=0.05)
    for p in model.parameters():
        p.grad = model.backend.from_host(np.full(p.shape, 0.5), "float32")
    optimizer.step()
    return model, optimizer


def _fuzz_model_b() -> tuple[pp.Module, Any]:
    layer = pp.Linear(3, 2, seed=12)
    optimizer = pp.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    for p in layer.parameters():
        p.grad = layer.backend.from_host(np.ones(p.shape), "float32")
    optimizer.step()
    return layer, optimizer


def _fuzz_model_c() -> tuple[pp.Module, Any]:
    kw = {"dtype": "float64"}
    return pp.Sequential(pp.Linear(1, 2, seed=13, **kw), pp.Sigmoid(**kw), pp.Identity(**kw)), None


BUILDERS = [_fuzz_model_a, _fuzz_model_b, _fuzz_model_c]


def _fuzz_bases() -> list[bytes]:
    import tempfile

    state = pp.host_generator().bit_generator.state
    files = []
    with tempfile.TemporaryDirectory() as directory:
        for i, build in enumerate(BUILDERS):
            model, optimizer = build()
            path = Path(directory) / f"base{i}.safetensors"
            extra = {"i": [i, "x"]} if i else None
            pp.save(path, model, optimizer, epoch=i or None, extra=extra)
            files.append(path.read_bytes())
    pp.host_generator().bit_generator.state = state
    return files


BASES = _fuzz_bases()
BASE = st.integers(0, len(BASES) - 1)
DTYPE_CODES = [
    *("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8"),
    *("BOOL", "F8_E4M3", "F8_E5M2", "C64", "", "f32", "F32 "),
]
BIG = [0, 1, -1, 2, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-8, 8)
    | st.sampled_from(BIG)
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(DTYPE_CODES)
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
LAYER_TYPES = [
    *("Linear", "ReLU", "Tanh", "Sigmoid", "LeakyReLU", "Identity", "Dropout", "Sequential"),
    *("Mystery", "linear", ""),
]
PATHOLOGICAL_TEXT = [
    *("", "[", "{}", "[]", "null", "NaN", "Infinity", "1e999", "-0", "1", "2", "\ud800"),
    *("9" * 5000, "[" * 5000, '{"a": 1, "a": 2}', "Sequential", "layer", "float16"),
]
HEADER_EDITS = [
    *("field", "field", "field", "swap", "overlap", "delete", "add", "rename"),
    *("metadata", "metadata", "metadata", "metadata", "drop metadata key", "metadata junk"),
]
ADDED_NAMES = [
    *("model.9.weight", "model.0.weight2", "model.", "junk", "optimizer.state.0.extra"),
    *("optimizer.state.99.m", "optimizer.state.x.y", "optimizer.state.0.", "model.0.weight"),
    "optimizer.state.0.step",
]
NEW_NAMES = [
    *("model.0.weight", "model.0.bias", "model.3.0.weight", "weight", "bias"),
    *("optimizer.state.1.momentum_buffer", "model.0.weight "),
]


def _mutate_json(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one random change somewhere inside it."""
    if isinstance(value, dict) and value and depth < 8 and draw(st.integers(0, 9)) < 7:
        key = draw(st.sampled_from(sorted(value)))
        action = draw(st.sampled_from(["into", "into", "into", "delete", "add", "type"]))
        value = dict(value)
        if action == "delete":
            del value[key]
        elif action == "add":
            value[draw(st.sampled_from([*value, "extra", "layers", "type"]))] = draw(JUNK)
        elif action == "type":
            value["type"] = draw(st.sampled_from(LAYER_TYPES))
        else:
            value[key] = _mutate_json(draw, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and depth < 8 and draw(st.integers(0, 9)) < 7:
        i = draw(st.integers(0, len(value) - 1))
        action = draw(st.sampled_from(["into", "into", "delete", "duplicate", "nest"]))
        value = list(value)
        if action == "delete":
            del value[i]
        elif action == "duplicate":
            value.insert(i, value[i])
        elif action == "nest":
            value[i] = {"type": "Sequential", "layers": [value[i]] * draw(st.integers(0, 2))}
        else:
            value[i] = _mutate_json(draw, value[i], depth + 1)
        return value
    if isinstance(value, bool) or value is None:
        return draw(JUNK)
    if isinstance(value, int) and draw(st.booleans()):
        return value + draw(st.sampled_from([-2, -1, 1, 2, 2**32, -value, 2**63]))
    if isinstance(value, float) and draw(st.booleans()):
        return draw(st.sampled_from([0.0, -0.5, 1.0, 1e308, -1e-320, 0.999999]))
    return draw(JUNK)


def _edit_json_text(draw: st.DrawFn, text: str) -> str:
    """A changed metadata value: JSON with a change inside, other JSON, or odd text."""
    kind = draw(st.sampled_from(["structure", "structure", "structure", "junk", "text"]))
    if kind == "text":
        return draw(st.sampled_from(PATHOLOGICAL_TEXT))
    if kind == "junk":
        return json.dumps(draw(JUNK))
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # an earlier edit left odd text, perhaps "[" * 5000
        return text + draw(st.text(max_size=4))
    return json.dumps(_mutate_json(draw, value))


def _edit_tensor_field(draw: st.DrawFn, entry: dict[str, Any]) -> None:
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    if field == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPE_CODES) | JUNK)
    elif field == "shape":
        dimension = st.integers(-1, 6) | st.sampled_from(BIG)
        entry["shape"] = draw(st.lists(dimension, max_size=5) | JUNK)
    else:
        offsets = entry.get("data_offsets")
        valid = isinstance(offsets, list) and len(offsets) == 2
        begin, end = offsets if valid and all(isinstance(n, int) for n in offsets) else (0, 0)
        near = st.tuples(
            st.integers(-4, 4).map(lambda d: begin + d) | st.sampled_from(BIG),
            st.integers(-4, 4).map(lambda d: end + d) | st.sampled_from(BIG),
        )
        entry["data_offsets"] = draw(near.map(list) | JUNK)


def _edit_header(draw: st.DrawFn, header: dict[str, Any], end: int) -> None:
    """One change to ``header``; ``end`` is where the data ends."""
    names = [k for k in header if k != "__metadata__" and isinstance(header[k], dict)]
    metadata = header.get("__metadata__")
    edit = draw(st.sampled_from(HEADER_EDITS))
    if edit in ("field", "swap", "overlap", "delete", "rename") and not names:
        return
    if edit == "field":
        _edit_tensor_field(draw, header[draw(st.sampled_from(names))])
    elif edit == "swap":
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        header[a]["data_offsets"], header[b]["data_offsets"] = (
            header[b].get("data_offsets", [0, 0]),
            header[a].get("data_offsets", [0, 0]),
        )
    elif edit == "overlap":
        header[draw(st.sampled_from(names))] = dict(header[draw(st.sampled_from(names))])
    elif edit == "delete":
        del header[draw(st.sampled_from(names))]
    elif edit == "add":
        entries = [
            {"dtype": "F32", "shape": [0, 3], "data_offsets": [end, end]},  # empty: valid
            {"dtype": "U8", "shape": [], "data_offsets": [end, end + 1]},
            *(dict(header[k]) for k in names[:1]),
        ]
        header[draw(st.sampled_from(ADDED_NAMES))] = draw(st.sampled_from(entries))
    elif edit == "rename":
        header[draw(st.sampled_from(NEW_NAMES))] = header.pop(draw(st.sampled_from(names)))
    elif edit == "metadata junk":
        header["__metadata__"] = draw(JUNK)
    elif not isinstance(metadata, dict):
        return
    elif edit == "drop metadata key" and metadata:
        del metadata[draw(st.sampled_from(sorted(metadata)))]
    else:
        key = draw(st.sampled_from([*sorted(metadata), "portprop.checkpoint", "junk"]))
        if draw(st.integers(0, 9)) == 0:
            metadata[key] = draw(JUNK)  # not a string at all
        else:
            metadata[key] = _edit_json_text(draw, str(metadata.get(key, "")))


def _flip_bytes(draw: st.DrawFn, content: bytes, start: int = 0) -> bytes:
    if len(content) <= start:
        return content
    mutable = bytearray(content)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(start, len(mutable) - 1))
        if draw(st.booleans()):
            mutable[position] ^= 1 << draw(st.integers(0, 7))
        else:
            mutable[position] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
    return bytes(mutable)


@st.composite
def _edited(draw: st.DrawFn) -> tuple[bytes, int]:
    """A base checkpoint with its header edited, and perhaps its length and data."""
    base = draw(BASE)
    _, header, data = _split(BASES[base])
    for _ in range(draw(st.integers(1, 4))):
        _edit_header(draw, header, len(data))
    text = json.dumps(header).encode()
    if draw(st.integers(0, 9)) == 0:  # a duplicated key, in the raw text
        text = text.replace(b'{"', b'{"model.0.weight": {}, "', 1)
    if draw(st.integers(0, 9)) == 0:
        text += b" " * draw(st.integers(1, 9))
    length = len(text)
    if draw(st.integers(0, 9)) == 0:
        near = st.integers(-8, 8).map(lambda d: max(0, len(text) + d))
        length = draw(near | st.sampled_from([n for n in BIG if 0 <= n < 2**64]))
    change = draw(st.sampled_from(["same", "same", "same", "flip", "cut", "extend"]))
    if change == "flip":
        data = _flip_bytes(draw, data)
    elif change == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif change == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    return _join(text, data, length=length), base


@st.composite
def _flipped(draw: st.DrawFn) -> tuple[bytes, int]:
    """A base checkpoint with a few bytes changed (in the length, the header or the
    data), and perhaps truncated."""
    base = draw(BASE)
    content = BASES[base]
    (length,) = struct.unpack("<Q", content[:8])
    content = _flip_bytes(draw, content, draw(st.sampled_from([0, 8, 8 + length])))
    if draw(st.integers(0, 3)) == 0:
        content = content[: draw(st.integers(0, len(content)))]
    return content, base


@st.composite
def _layer_spec(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kind = draw(st.sampled_from([*LAYER_TYPES[:8], "Linear"]))
    if kind == "Linear":
        sizes = st.integers(1, 3)
        return {
            "type": kind,
            "in_features": draw(sizes),
            "out_features": draw(sizes),
            "bias": draw(st.booleans()),
        }
    if kind == "LeakyReLU":
        return {"type": kind, "negative_slope": draw(st.floats(-2, 2))}
    if kind == "Dropout":
        return {"type": kind, "p": draw(st.floats(0, 0.99))}
    if kind == "Sequential" and depth < 2:
        layers = st.lists(_layer_spec(depth + 1), min_size=1, max_size=3)
        return {"type": kind, "layers": draw(layers)}
    return {"type": "ReLU" if kind == "Sequential" else kind}


def _chain(specs: list[dict[str, Any]], width: int | None = None) -> int | None:
    """Make each Linear take the width that the one before it gives (in place)."""
    for spec in specs:
        if spec["type"] == "Linear":
            spec["in_features"] = width or spec["in_features"]
            width = spec["out_features"]
        elif spec["type"] == "Sequential":
            width = _chain(spec["layers"], width)
    return width


def _shapes(specs: list[Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """The parameter shapes that layer specs describe (worked out apart from portprop)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(specs):
        if spec["type"] == "Linear":
            shapes[f"{prefix}{i}.weight"] = (spec["out_features"], spec["in_features"])
            if spec["bias"]:
                shapes[f"{prefix}{i}.bias"] = (spec["out_features"],)
        elif spec["type"] == "Sequential":
            shapes.update(_shapes(spec["layers"], f"{prefix}{i}."))
    return shapes


def _safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file, written here without portprop."""
    codes = {"float64": "F64", "float32": "F32", "float16": "F16"}
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name, array in tensors.items():
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        span = [offset, offset + len(raw)]
        header[name] = {"dtype": codes[array.dtype.name], "shape": list(array.shape)}
        header[name]["data_offsets"] = span
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    return _join(header, b"".join(chunks))


SGD_STATE = {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
ADAM_STATE = {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
VALUES = st.floats(width=32) | st.sampled_from([0.0, -0.0, 1e-40, 3e38, -1.5])


@st.composite
def _generated(draw: st.DrawFn) -> tuple[bytes, int]:
    """A checkpoint of a random small architecture, its values possibly NaN, with its
    optimizer's state and random state perhaps, and perhaps a few bytes changed."""
    specs = draw(st.lists(_layer_spec(), min_size=1, max_size=4))
    if draw(st.integers(0, 4)):  # else, most likely, Linear layers that do not fit
        _chain(specs)
    lone = len(specs) == 1 and draw(st.booleans())
    shapes = _shapes(specs)
    if lone:
        shapes = {k.partition(".")[2]: v for k, v in shapes.items()}
    dtype = draw(st.sampled_from(["float32", "float64", "float16"]))
    tensors = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        values = draw(st.lists(VALUES, min_size=size, max_size=size))
        with np.errstate(over="ignore"):  # to infinity, in float16
            tensors[f"model.{name}"] = np.array(values, dtype=dtype).reshape(shape)
    metadata = {
        "portprop.checkpoint": "1",
        "architecture": json.dumps(specs),
        "container": "layer" if lone else "Sequential",
        "dtype": draw(st.sampled_from(["float32", "float64"])),
    }
    if draw(st.booleans()):
        metadata["epoch"] = str(draw(st.integers(0, 10**6)))
    if draw(st.booleans()):
        kind, hyperparameters = draw(st.sampled_from([("SGD", SGD_STATE), ("Adam", ADAM_STATE)]))
        state: list[dict[str, Any]] = []
        for i, shape in enumerate(shapes.values()):
            state.append({"step": draw(st.integers(0, 3))})
            if draw(st.booleans()):
                buffer = "momentum_buffer" if kind == "SGD" else "exp_avg"
                tensors[f"optimizer.state.{i}.{buffer}"] = np.zeros(shape, dtype)
        optimizer = {"type": kind, "hyperparameters": hyperparameters, "state": state}
        metadata["optimizer"] = json.dumps(optimizer)
    if draw(st.booleans()):
        metadata["rng"] = json.dumps({"host": draw(JUNK), "layers": {}})
    content = _safetensors(tensors, metadata)
    if draw(st.integers(0, 3)) == 0:
        content = _flip_bytes(draw, content)
    return content, draw(BASE)


FUZZ_EXAMPLES = int(os.environ.get("PORTPROP_FUZZ_EXAMPLES", "100"))
_EXAMPLE = itertools.count()
FUZZ_INPUTS = (
    st.tuples(st.binary(max_size=64), BASE) | _flipped() | _edited() | _edited() | _generated()
)


def _assert_valid(checkpoint: pp.Checkpoint, path: Path) -> None:
    """What a loaded model must be: parameters of the shapes its architecture gives, of
    the saved dtype, with finite values."""
    model = checkpoint.model
    assert isinstance(model, pp.Module)
    _, metadata = ckpt.read_safetensors(path)
    expected = _shapes(checkpoint.architecture)
    if metadata.get("container") == "layer":
        expected = {k.partition(".")[2]: v for k, v in expected.items()}
    assert {k: p.shape for k, p in model.named_parameters()} == expected
    assert checkpoint.dtype in ("float32", "float64")
    for p in model.parameters():
        host = np.asarray(to_numpy(p.data))
        assert host.dtype == np.dtype(checkpoint.dtype)
        assert np.isfinite(host).all()
    state = checkpoint.optimizer_state
    assert state is None or isinstance(state.get("state"), list)


def _refused(call: Callable[[], Any], path: Path) -> tuple[Any, bool]:
    """``call()``'s result and False, or None and True if it raised CheckpointError
    naming ``path``; any other exception fails the test."""
    try:
        return call(), False
    except pp.CheckpointError as exc:
        if str(path) not in str(exc):
            msg = f"the message does not name {path}: {exc}"
            raise AssertionError(msg) from exc
        return None, True


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(case=FUZZ_INPUTS)
def test_fuzz_the_loader_loads_a_valid_model_or_raises_checkpoint_error(tmp_path, case):
    """Any file: load gives a valid model or raises CheckpointError naming the file;
    load_into loads, or raises it and changes nothing; so does restore_rng."""
    content, base = case
    # a new file each time: rewriting one file makes ext4 flush it to disk, every time
    path = tmp_path / f"fuzz-{next(_EXAMPLE)}.safetensors"
    path.write_bytes(content)
    try:
        _check_any_file(path, base)
    finally:
        path.unlink()


def _check_any_file(path: Path, base: int) -> None:
    loaded, refused = _refused(lambda: pp.load(path), path)
    event(f"load: {'refused' if refused else 'loaded'}")  # --hypothesis-show-statistics
    if not refused:
        _assert_valid(loaded, path)

    model, optimizer = BUILDERS[base]()
    snapshot = _Snapshot(model, optimizer)
    restored, refused = _refused(lambda: pp.load_into(path, model, optimizer), path)
    event(f"load_into: {'refused' if refused else 'loaded'}")
    if refused:
        snapshot.assert_unchanged()
        return
    for p in model.parameters():
        assert np.isfinite(np.asarray(to_numpy(p.data))).all()
    host = pp.host_generator().bit_generator.state
    dropout = [(m, m.generator.get_state()) for m in model.modules() if hasattr(m, "generator")]
    _, refused = _refused(lambda: pp.restore_rng(restored), path)
    event(f"restore_rng: {'refused' if refused else 'restored'}")
    if refused:
        assert pp.host_generator().bit_generator.state == host
        assert all(m.generator.get_state() == state for m, state in dropout)
