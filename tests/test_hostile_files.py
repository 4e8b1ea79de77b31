"""Files and checkpoints against hostile or mistaken input (issue 8).

- 1: values that overflow the dtype they are loaded in (float64's 1e39 in float32);
- 2: reading a FIFO, a device, a link to one: refused, never blocking;
- 3: what refusing a file costs: its header, never its data (tracemalloc peaks);
- 4: messages of bounded size, whatever the file holds;
- 5: ``extra`` with a reference cycle or nested too deep, models nested too deep;
- 6: files of other formats (text, CSV, PNG, ...) say what they are;
- 7: writing onto a FIFO, a device, a symbolic link, a socket;
- 8: the digest covers the header: swapped offsets, another slope, another shape.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import re
import socket
import stat
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy
from test_reliability_checkpoints import _bits, _Snapshot

import portprop as pp
from portprop import io as ckpt
from portprop.io import atomic, safetensors

MiB = 2**20
F32_MAX = float(np.finfo(np.float32).max)


# ---- helpers ---------------------------------------------------------------------------


def _model(backend: Any = "numpy", dtype: str = "float32", seed: int = 0) -> pp.Sequential:
    kw = {"backend": backend, "dtype": dtype}
    return pp.Sequential(
        pp.Linear(2, 3, seed=seed, **kw),
        pp.LeakyReLU(0.1, **kw),
        pp.Linear(3, 1, seed=seed + 1, **kw),
    )


def _trained(backend: Any = "numpy", dtype: str = "float32", seed: int = 0) -> tuple[Any, Any]:
    model = _model(backend, dtype, seed)
    optimizer = pp.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad = model.backend.from_host(rng.normal(size=p.shape), dtype)
    optimizer.step()
    return model, optimizer


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _join(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _write_sparse(path: Path, header: dict[str, Any] | bytes, data_size: int) -> int:
    """A file of ``header`` and ``data_size`` bytes of zeros that take no disk space;
    returns the header's length."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + data_size)
    return len(text)


def _metadata(tmp_path: Path, model: pp.Module | None = None) -> dict[str, str]:
    """The metadata of a valid checkpoint of ``model`` (without its digest)."""
    path = tmp_path / "metadata-source.safetensors"
    pp.save(path, _model() if model is None else model)
    _, metadata = ckpt.read_safetensors(path)
    path.unlink()
    return metadata


@contextlib.contextmanager
def _peak() -> Iterator[list[int]]:
    """The peak of traced memory (bytes) while the block runs, in ``[0]``."""
    result = [0]
    tracemalloc.start()
    try:
        yield result
    finally:
        result[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _refuse_cheaply(path: Path, header_bytes: int, call: Callable[[], Any]) -> str:
    """``call()`` raises CheckpointError naming ``path`` and costs less than the header
    plus 64 MiB of traced memory; a generous wall-clock bound is a safety net only."""
    start = time.perf_counter()
    with _peak() as peak, pytest.raises(pp.CheckpointError) as info:
        call()
    elapsed = time.perf_counter() - start
    assert str(path) in str(info.value)
    assert peak[0] < header_bytes + 64 * MiB, f"peak {peak[0] / MiB:.1f} MiB"
    assert elapsed < 60, f"{elapsed:.1f} s"  # tracemalloc slows it: a safety net only
    return str(info.value)


# ---- 1: values beyond the range of the dtype they are loaded in --------------------------


def _float64_checkpoint(tmp_path: Path, value: float, where: str = "model") -> Path:
    """A float64 checkpoint (with Adam's state) holding ``value`` in its first weight, or
    in the optimizer's first ``exp_avg_sq`` (``where="optimizer"``)."""
    model, optimizer = _trained("numpy", "float64")
    if where == "model":
        weight = np.asarray(model[0].weight.data).copy()
        weight[1, 0] = value
        model[0].weight.data = weight
    path = tmp_path / "float64.safetensors"
    pp.save(path, model, optimizer)
    if where == "optimizer":
        tensors, metadata = ckpt.read_safetensors(path)
        tensors["optimizer.state.0.exp_avg_sq"][0, 1] = value
        ckpt.write_safetensors(path, tensors, metadata)
    return path


@pytest.mark.parametrize("value", [1e39, -(2.0**128), 1e308])
def test_a_float64_value_beyond_float32_is_refused_in_float32(tmp_path, backend, value):
    path = _float64_checkpoint(tmp_path, value)
    with pytest.raises(pp.CheckpointError) as loaded:
        pp.load(path, backend=backend, dtype="float32")
    message = str(loaded.value)
    assert message.startswith(
        f"cannot load checkpoint {str(path)!r} in float32 (nothing was loaded): tensor "
        f"'model.0.weight' holds a value of magnitude {abs(value):.6g}, beyond the largest "
        "finite float32 (3.4028235e+38): it would load as infinity"
    ), message
    model, optimizer = _trained(backend, "float32", seed=3)
    snapshot = _Snapshot(model, optimizer)
    with pytest.raises(pp.CheckpointError) as into:
        pp.load_into(path, model, optimizer)
    assert str(into.value) == message
    snapshot.assert_unchanged()


def test_an_optimizer_array_beyond_float32_is_refused_in_float32(tmp_path, backend):
    path = _float64_checkpoint(tmp_path, 1e39, where="optimizer")
    model, optimizer = _trained(backend, "float32", seed=3)
    snapshot = _Snapshot(model, optimizer)
    with pytest.raises(
        pp.CheckpointError, match=re.escape("tensor 'optimizer.state.0.exp_avg_sq' holds")
    ):
        pp.load_into(path, model, optimizer)
    snapshot.assert_unchanged()
    with pytest.raises(pp.CheckpointError, match="magnitude 1e\\+39"):
        pp.load(path, backend=backend, dtype="float32")


@pytest.mark.parametrize(
    "value", [F32_MAX, -F32_MAX, float(np.nextafter(F32_MAX, np.inf)), 1e-50], ids=str
)
def test_values_that_round_into_float32_load(tmp_path, backend, value):
    """The control: float32's largest value, a float64 just above it that rounds down to
    it, and one that underflows to 0, load in float32 as NumPy casts them."""
    path = _float64_checkpoint(tmp_path, value)
    loaded = pp.load(path, backend=backend, dtype="float32")
    weight = np.asarray(to_numpy(loaded.model[0].weight.data))
    assert weight[1, 0] == np.float32(value)


def test_float64_values_load_in_float64(tmp_path, backend64):
    path = _float64_checkpoint(tmp_path, 1e39)
    loaded = pp.load(path, backend=backend64)
    assert np.asarray(to_numpy(loaded.model[0].weight.data))[1, 0] == 1e39


# ---- 2: reading what is not a regular file --------------------------------------------


def _readers(tmp_path: Path) -> dict[str, Callable[[Path], Any]]:
    return {
        "load": pp.load,
        "load_into": lambda path: pp.load_into(path, _model()),
        "read_safetensors": ckpt.read_safetensors,
    }


def _in_a_thread(call: Callable[[], Any], unblock: Callable[[], None]) -> BaseException | None:
    """Run ``call``; if it is still running after 20 s, ``unblock()`` it and fail."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        unblock()
        thread.join(20)
        pytest.fail("the call blocked")
    return outcome[0]


def _fifo(tmp_path: Path, through_a_link: bool) -> tuple[Path, Path]:
    """A FIFO, and the path to use: the FIFO, or a symbolic link to it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if not through_a_link:
        return fifo, fifo
    link = tmp_path / "link.safetensors"
    link.symlink_to(fifo)
    return fifo, link


def _open_then_close_for_writing(fifo: Path) -> None:
    """Release a reader blocked in opening ``fifo``."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("reader", ["load", "load_into", "read_safetensors"])
@pytest.mark.parametrize("through_a_link", [False, True], ids=["fifo", "link-to-fifo"])
def test_reading_a_fifo_is_refused_without_blocking(tmp_path, reader, through_a_link):
    fifo, path = _fifo(tmp_path, through_a_link)
    call = _readers(tmp_path)[reader]
    error = _in_a_thread(lambda: call(path), lambda: _open_then_close_for_writing(fifo))
    assert isinstance(error, pp.CheckpointError), repr(error)
    assert str(error) == (
        f"{str(path)!r} is not a valid portprop checkpoint: it is a FIFO (named pipe), not a "
        "regular file; portprop reads checkpoints from regular files only"
    )
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
@pytest.mark.parametrize("reader", ["load", "load_into", "read_safetensors"])
def test_reading_a_character_device_is_refused(tmp_path, device, reader):
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    link = tmp_path / "device.safetensors"
    link.symlink_to(device)
    for path in (Path(device), link):
        with pytest.raises(pp.CheckpointError) as info:
            _readers(tmp_path)[reader](path)
        assert str(info.value) == (
            f"{str(path)!r} is not a valid portprop checkpoint: it is a character device, "
            "not a regular file; portprop reads checkpoints from regular files only"
        )


def test_reading_a_directory_or_a_link_to_a_checkpoint(tmp_path):
    """The controls: a directory is an IsADirectoryError as before, a link to a
    checkpoint reads it."""
    with pytest.raises(IsADirectoryError):
        pp.load(tmp_path)
    path = tmp_path / "real.safetensors"
    pp.save(path, _model(), epoch=4)
    link = tmp_path / "link.safetensors"
    link.symlink_to(path)
    assert pp.load(link).epoch == 4


# ---- 3: what refusing a file costs -----------------------------------------------------


def test_a_sparse_gigabyte_that_contradicts_its_architecture_is_refused_unread(tmp_path, backend):
    """The header says 1 GiB of weights where the architecture has a (3, 2) weight: the
    file is refused from its header; its data is never read (which would take 1 GiB)."""
    n = 16384
    header = {
        "model.0.weight": {"dtype": "F32", "shape": [n, n], "data_offsets": [0, 4 * n * n]},
        "__metadata__": _metadata(tmp_path),
    }
    path = tmp_path / "sparse.safetensors"
    length = _write_sparse(path, header, 4 * n * n)
    message = _refuse_cheaply(path, length, lambda: pp.load(path, backend=backend))
    assert "parameter '0.weight' has shape (16384, 16384) in the checkpoint, (3, 2)" in message
    model = _model(backend)
    snapshot = _Snapshot(model)
    _refuse_cheaply(path, length, lambda: pp.load_into(path, model))
    snapshot.assert_unchanged()


def test_layers_that_do_not_fit_are_refused_before_the_data_is_read(tmp_path):
    """Each tensor fits its layer but the layers do not fit together: refused from the
    header, before 256 MiB of data are read (or parameters allocated)."""
    specs = [
        {"type": "Linear", "in_features": 8192, "out_features": 8192, "bias": False},
        {"type": "Linear", "in_features": 3, "out_features": 1, "bias": False},
    ]
    size = 8192 * 8192 * 4
    header = {
        "model.0.weight": {"dtype": "F32", "shape": [8192, 8192], "data_offsets": [0, size]},
        "model.1.weight": {"dtype": "F32", "shape": [1, 3], "data_offsets": [size, size + 12]},
        "__metadata__": {
            "portprop.checkpoint": "1",
            "architecture": json.dumps(specs),
            "dtype": "float32",
        },
    }
    path = tmp_path / "unfit.safetensors"
    length = _write_sparse(path, header, size + 12)
    message = _refuse_cheaply(path, length, lambda: pp.load(path))
    assert message.endswith(
        "its architecture does not make a model: layer 1 (Linear) expects 3 input features, "
        "but layer 0 (Linear) gives 8192 outputs"
    )


def _empty_tensors(count: int, name: bytes = b"t") -> bytes:
    entries = (
        b'"%s%07d":{"dtype":"F32","shape":[],"data_offsets":[0,0]}' % (name, i)
        for i in range(count)
    )
    return b"{" + b",".join(entries) + b"}"


def test_the_99_mib_header_of_1_6_million_tensors_is_refused_unparsed(tmp_path):
    """The case of the issue: over the header limit, refused before it is read."""
    path = tmp_path / "many.safetensors"
    header = _empty_tensors(1_600_000)
    assert len(header) > 90 * MiB
    _write_sparse(path, header, 0)
    del header
    message = _refuse_cheaply(path, 0, lambda: pp.load(path))  # not even the header
    assert f"over the limit of {ckpt.MAX_HEADER_BYTES} bytes (16 MiB)" in message


def _hostile_headers(tmp_path: Path) -> dict[str, tuple[bytes, int, str]]:
    """Headers under the size limit that cost a parser much: (header, data size, what
    the message says)."""
    metadata = _metadata(tmp_path)
    wrong = {"model.0.weight": {"dtype": "F32", "shape": [5, 2], "data_offsets": [0, 40]}}
    long_string = {**metadata, "extra": json.dumps("x" * (15 * MiB))}
    names = b",".join(
        b'"model.%s%06d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % (b"n" * 160, i)
        for i in range(65_000)
    )
    return {
        "100k-tensors": (_empty_tensors(100_000), 0, "more than 65536 tensors"),
        "1.2m-empty-lists": (
            b'{"t":{"dtype":"F32","shape":['
            + b",".join([b"[]"] * 1_200_000)
            + b'],"data_offsets":[0,0]}}',
            0,
            "commas and brackets, more than the 1048576 this reader accepts",
        ),
        "15-mib-string": (
            json.dumps({**wrong, "__metadata__": long_string}).encode(),
            40,
            "its tensors do not match its architecture",
        ),
        "15-mib-of-spaces": (
            json.dumps({**wrong, "__metadata__": metadata}).encode() + b" " * (15 * MiB),
            40,
            "its tensors do not match its architecture",
        ),
        "65k-long-names": (
            b"{" + names + b',"__metadata__":' + json.dumps(metadata).encode() + b"}",
            0,
            "the checkpoint has parameters that the architecture lacks: ['nnnn",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["100k-tensors", "1.2m-empty-lists", "15-mib-string", "15-mib-of-spaces", "65k-long-names"],
)
def test_refusing_a_hostile_header_costs_less_than_it_and_64_mib(tmp_path, case):
    header, data_size, fragment = _hostile_headers(tmp_path)[case]
    path = tmp_path / "hostile.safetensors"
    length = _write_sparse(path, header, data_size)
    del header
    message = _refuse_cheaply(path, length, lambda: pp.load(path))
    assert fragment in message
    assert len(message) < 1000


def test_a_large_file_whose_data_does_not_match_its_digest_is_refused_in_pieces(tmp_path):
    """64 MiB of data, one byte changed: checked in pieces of 16 MiB, not held."""
    path = tmp_path / "large.safetensors"
    pp.save(path, pp.Linear(4096, 4096, bias=False, seed=0))
    with path.open("r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\x7f")
    for call in (lambda: pp.load(path), lambda: ckpt.read_safetensors(path)):
        start = time.perf_counter()
        with _peak() as peak, pytest.raises(pp.CheckpointError, match="the file changed after"):
            call()
        assert peak[0] < 48 * MiB, f"peak {peak[0] / MiB:.1f} MiB"
        assert time.perf_counter() - start < 60  # a safety net only


def test_a_large_file_loads_bit_for_bit(tmp_path):
    """The control: the same file unchanged loads (checked in pieces, then read)."""
    layer = pp.Linear(4096, 4096, bias=False, seed=0)
    path = tmp_path / "large.safetensors"
    pp.save(path, layer)
    loaded = pp.load(path)
    assert _bits(loaded.model.weight.data) == _bits(layer.weight.data)


def test_a_large_file_that_changes_while_it_is_read_is_refused(tmp_path, monkeypatch):
    """Between the check of its data and the reading of its arrays, a byte changes (an
    other program writing to it): refused, not loaded as unchecked bytes."""
    path = tmp_path / "large.safetensors"
    pp.save(path, pp.Linear(4096, 4096, bias=False, seed=0))
    arrays = safetensors._Reader.arrays

    def changed_first(reader: Any) -> Any:
        with path.open("r+b") as f:
            f.seek(-3, os.SEEK_END)
            f.write(b"\x7f")
        return arrays(reader)

    monkeypatch.setattr(safetensors._Reader, "arrays", changed_first)
    with pytest.raises(pp.CheckpointError, match="the file changed while it was being read"):
        pp.load(path)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("x" * (17 * MiB), "the header would be 17"),
        (list(range(1_100_000)), "commas and brackets, more than the 1048576 that the reader"),
    ],
    ids=["17-mib", "1.1m-values"],
)
def test_save_refuses_a_header_that_the_reader_would_refuse(tmp_path, extra, fragment):
    path = tmp_path / "m.safetensors"
    pp.save(path, _model(), epoch=1)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=re.escape(fragment)):
        pp.save(path, _model(), epoch=2, extra=extra)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_write_safetensors_refuses_more_tensors_than_the_reader_takes(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {f"t{i}": np.zeros(0, np.float32) for i in range(ckpt.MAX_TENSORS + 1)}
    with pytest.raises(ValueError, match="a file holds at most 65536 tensors, got 65537"):
        ckpt.write_safetensors(path, tensors)
    assert not path.exists()
    del tensors["t0"]
    ckpt.write_safetensors(path, tensors)  # the control: as many as it reads
    assert len(ckpt.read_safetensors(path)[0]) == ckpt.MAX_TENSORS


# ---- 4: messages of bounded size --------------------------------------------------------


def _long_name_cases(tmp_path: Path) -> dict[str, tuple[bytes, Callable[[Path], Any]]]:
    """Files whose header makes a message name or list something huge."""
    metadata = _metadata(tmp_path)
    long = "x" * 1_000_000
    unexpected = {
        f"model.9.extra{i:06d}": {"dtype": "F32", "shape": [], "data_offsets": [4 * i, 4 * i + 4]}
        for i in range(20_000)
    }
    many_layers = json.dumps([{"type": "ReLU"}] * 200_000)
    bad = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    valid = _split((tmp_path / "valid.safetensors").read_bytes())[0]

    def into(path: Path) -> Any:
        return pp.load_into(path, _model())

    return {
        "20k-unexpected-params": (
            _join({**unexpected, "__metadata__": metadata}, bytes(80_000)),
            pp.load,
        ),
        "20k-unexpected-params-into": (
            _join({**unexpected, "__metadata__": metadata}, bytes(80_000)),
            into,
        ),
        "long-unexpected-name": (
            _join({"model." + long: bad, "__metadata__": metadata}, bytes(4)),
            pp.load,
        ),
        "long-name-bad-dtype": (_join({long: {**bad, "dtype": "X" * 100_000}}, bytes(4)), pp.load),
        "long-duplicate-key": (
            _join(b'{"%s": {}, "%s": {}}' % (long.encode(), long.encode())),
            pp.load,
        ),
        "long-metadata-key": (_join({"__metadata__": {long: 5}}), pp.load),
        "long-container": (_join({"__metadata__": {**metadata, "container": long}}), pp.load),
        "long-dtype": (_join({"__metadata__": {**metadata, "dtype": long}}), pp.load),
        "long-layer-type": (
            _join({"__metadata__": {**metadata, "architecture": json.dumps([{"type": long}])}}),
            pp.load,
        ),
        "200k-layers-into": (
            _join({"__metadata__": {**metadata, "architecture": many_layers}}),
            into,
        ),
        "long-optimizer-tensor": (
            _join(
                {
                    "optimizer.state.0." + long: bad,
                    "__metadata__": {**metadata, "optimizer": '{"state": []}'},
                },
                bytes(4),
            ),
            pp.load,
        ),
        "long-optimizer-type-into": (
            _join(
                {
                    **{k: v for k, v in valid.items() if k != "__metadata__"},
                    "__metadata__": {
                        **valid["__metadata__"],
                        "optimizer": json.dumps({"type": long, "state": []}),
                    },
                },
                _split((tmp_path / "valid.safetensors").read_bytes())[1],
            ),
            lambda path: pp.load_into(path, _model(), pp.Adam(_model().parameters())),
        ),
    }


LONG_NAME_CASES = [
    "20k-unexpected-params",
    "20k-unexpected-params-into",
    "long-unexpected-name",
    "long-name-bad-dtype",
    "long-duplicate-key",
    "long-metadata-key",
    "long-container",
    "long-dtype",
    "long-layer-type",
    "200k-layers-into",
    "long-optimizer-tensor",
    "long-optimizer-type-into",
]


@pytest.mark.parametrize("case", LONG_NAME_CASES)
def test_messages_are_bounded_whatever_the_file_holds(tmp_path, case):
    pp.save(tmp_path / "valid.safetensors", _model())
    content, call = _long_name_cases(tmp_path)[case]
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(content)
    with pytest.raises(pp.CheckpointError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message
    assert len(message) < 2000, f"{len(message)} characters: {message[:300]}..."


def test_a_long_list_of_names_shows_the_first_five_and_a_count(tmp_path):
    metadata = _metadata(tmp_path)
    unexpected = {
        f"model.9.extra{i:06d}": {"dtype": "F32", "shape": [], "data_offsets": [4 * i, 4 * i + 4]}
        for i in range(20_000)
    }
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(_join({**unexpected, "__metadata__": metadata}, bytes(80_000)))
    with pytest.raises(pp.CheckpointError) as info:
        pp.load(path)
    assert (
        "the checkpoint has parameters that the architecture lacks: ['9.extra000000', "
        "'9.extra000001', '9.extra000002', '9.extra000003', '9.extra000004'] and 19995 "
        "more"
    ) in str(info.value)


def test_a_long_name_is_cut_to_80_characters_and_its_length_said(tmp_path):
    metadata = _metadata(tmp_path)
    name = "model." + "y" * 500_000
    path = tmp_path / "crafted.safetensors"
    bad = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    path.write_bytes(_join({name: bad, "__metadata__": metadata}, bytes(4)))
    with pytest.raises(pp.CheckpointError) as info:
        pp.load(path)
    assert f"{'y' * 80!r}... (500000 characters)" in str(info.value)


# ---- 5: extra data that JSON cannot hold ------------------------------------------------


def _cyclic_dict() -> Any:
    extra: dict[str, Any] = {"history": [0.5, 0.25]}
    extra["history"].append(extra)
    return extra


def _cyclic_list() -> Any:
    extra: list[Any] = [1, 2]
    extra.append(extra)
    return extra


def _nested(depth: int) -> Any:
    extra: list[Any] = []
    for _ in range(depth - 1):
        extra = [extra]
    return extra


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_cyclic_dict, "extra holds a reference cycle: extra['history'][2] is extra itself"),
        (_cyclic_list, "extra holds a reference cycle: extra[2] is extra itself"),
        (lambda: _nested(101), "extra is nested deeper than 100 lists and dicts"),
        (lambda: _nested(100_000), "extra is nested deeper than 100 lists and dicts"),
    ],
    ids=["cyclic-dict", "cyclic-list", "101-deep", "100000-deep"],
)
def test_save_refuses_extra_with_a_cycle_or_nested_too_deep(tmp_path, make, fragment):
    path = tmp_path / "m.safetensors"
    pp.save(path, _model(), epoch=1)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pp.save(path, _model(), epoch=2, extra=make())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_extra_nested_100_deep_and_shared_values_are_saved(tmp_path):
    """The controls: 100 levels, and one list appearing twice (no cycle), round-trip."""
    shared = [1.5, 2.5]
    path = tmp_path / "m.safetensors"
    for extra in (_nested(100), {"deep": _nested(99), "a": shared, "b": shared}):
        pp.save(path, _model(), extra=extra)
        assert pp.load(path).extra == extra


def _nested_model(depth: int) -> pp.Module:
    model: pp.Module = pp.Sequential(pp.Linear(2, 2, seed=0))
    for _ in range(depth - 1):
        model = pp.Sequential(model)
    return model


def test_save_refuses_a_model_nested_deeper_than_a_checkpoint_holds(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="nests Sequential layers more than 32 deep"):
        pp.save(path, _nested_model(34))
    assert not path.exists()
    pp.save(path, _nested_model(33))  # the control: as deep as load reads
    loaded = pp.load(path)
    assert repr(loaded.model) == repr(_nested_model(33))


# ---- 6: files of other formats -----------------------------------------------------------


FOREIGN = {
    "csv": (
        b"x1,x2,y\n0.5,1.5,0\n",
        "it looks like a text file, such as CSV (its first line is 'x1,x2,y')",
    ),
    "tsv": (
        b"x1\tx2\n1\t2\n",
        "it looks like a text file, such as CSV (its first line is 'x1\\tx2')",
    ),
    "text": (
        b"hello, world\n" * 3,
        "it looks like a text file, such as CSV (its first line is 'hello, world')",
    ),
    "prose": (
        b"A model trained on digits.\n",
        "it looks like a text file (it starts with 'A model trained on digits.')",
    ),
    "json": (
        b'{"lr": 0.1}',
        "it looks like a text file, such as JSON (it starts with '{\"lr\": 0.1}')",
    ),
    "utf8-bom": (
        "\ufeffnäme;wert\n".encode(),
        "it looks like a text file, such as CSV (its first line is 'näme;wert')",
    ),
    "utf16": (
        "a,b\n1,2\n".encode("utf-16"),
        "it looks like a text file, such as CSV (its first line is 'a,b')",
    ),
    "long-line": (
        b"x" * 5000,
        "it looks like a text file (it starts with '" + "x" * 40 + "'...)",
    ),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "it is a PNG image, not a safetensors checkpoint"),
    "jpeg": (b"\xff\xd8\xff\xe0" + bytes(64), "it is a JPEG image, not a safetensors checkpoint"),
    "gif": (b"GIF89a" + bytes(64), "it is a GIF image"),
    "pdf": (b"%PDF-1.7\n" + bytes(64), "it is a PDF document"),
    "gzip": (gzip.compress(b"x1,x2\n"), "it is a gzip file"),
    "bzip2": (b"BZh91AY&SY" + bytes(64), "it is a bzip2 file"),
    "hdf5": (b"\x89HDF\r\n\x1a\n" + bytes(64), "it is an HDF5 file (such as a Keras .h5)"),
    "npy": (
        b"\x93NUMPY\x01\x00" + bytes(64),
        "it is a NumPy .npy file, not a safetensors checkpoint",
    ),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_file_of_another_format_says_what_it_looks_like(tmp_path, kind):
    content, fragment = FOREIGN[kind]
    path = tmp_path / f"data.{kind}"
    path.write_bytes(content)
    for call in (pp.load, ckpt.read_safetensors, lambda p: pp.load_into(p, _model())):
        with pytest.raises(pp.CheckpointError) as info:
            call(path)
        message = str(info.value)
        assert message.startswith(f"{str(path)!r} is not a valid portprop checkpoint: {fragment}")
        assert "not a safetensors checkpoint; portprop reads safetensors files only" in message
        assert "header length" not in message


def test_binary_junk_keeps_its_plain_message(tmp_path):
    """The control: bytes that are neither text nor a known format are described by
    what is wrong with them as a checkpoint."""
    path = tmp_path / "junk.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(pp.CheckpointError) as info:
        pp.load(path)
    assert "its header length is 506097522914230528 bytes (449.5 PiB), over the limit" in str(
        info.value
    )
    assert "looks like" not in str(info.value)


# ---- 7: writing onto what is not a regular file ----------------------------------------


def _saved_bytes(tmp_path: Path, model: pp.Module) -> bytes:
    path = tmp_path / "reference.safetensors"
    pp.save(path, model, epoch=2)
    content = path.read_bytes()
    path.unlink()
    return content


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("through_a_link", [False, True], ids=["fifo", "link-to-fifo"])
def test_save_onto_a_fifo_writes_through_it(tmp_path, through_a_link):
    model = _model()
    expected = _saved_bytes(tmp_path, model)
    fifo, path = _fifo(tmp_path, through_a_link)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    error = _in_a_thread(
        lambda: pp.save(path, model, epoch=2), lambda: _open_then_close_for_writing(fifo)
    )
    if reader.is_alive():  # a save that replaced the FIFO leaves the reader waiting
        _open_then_close_for_writing(fifo)
    reader.join(20)
    assert error is None, repr(error)
    assert stat.S_ISFIFO(fifo.stat().st_mode), "the FIFO was replaced"
    assert path.is_symlink() == through_a_link
    assert received == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"fifo", path.name})


def test_save_through_a_link_to_dev_null_keeps_the_link(tmp_path):
    if not Path("/dev/null").is_char_device():
        pytest.skip("no /dev/null here")
    link = tmp_path / "null.safetensors"
    link.symlink_to("/dev/null")
    pp.save(link, _model())
    assert link.is_symlink()
    assert str(link.readlink()) == "/dev/null"
    assert Path("/dev/null").is_char_device()
    assert [p.name for p in tmp_path.iterdir()] == ["null.safetensors"]


def test_a_link_to_an_open_pipe_like_proc_self_fd_1_is_written_through(tmp_path):
    """An output path that leads to this process's standard output (a pipe here)."""
    if not Path(f"/proc/self/fd/{0}").exists():
        pytest.skip("no /proc/self/fd here")
    model = _model()
    expected = _saved_bytes(tmp_path, model)
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout.safetensors"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    received: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_end, "rb") as f:
            received.append(f.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        atomic.write_atomically(link, lambda f: f.write(expected))
    finally:
        os.close(write_end)
    reader.join(20)
    assert link.is_symlink(), "the link was replaced by a file"
    assert received == [expected]


def test_a_link_to_a_deleted_file_is_written_through_truncated(tmp_path):
    """``/proc/self/fd/N`` of a file deleted meanwhile leads to no path: the open file
    itself is written, from its start, as ``open(path, "wb")`` would."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc/self/fd here")
    deleted = tmp_path / "deleted"
    with deleted.open("w+b") as f:
        f.write(b"an old and longer content")
        f.flush()
        deleted.unlink()
        link = tmp_path / "link"
        link.symlink_to(f"/proc/self/fd/{f.fileno()}")
        atomic.write_atomically(link, lambda out: out.write(b"new"))
        f.seek(0)
        assert f.read() == b"new"
    assert link.is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["link"]


def test_a_character_device_node_is_written_through(tmp_path):
    """A device node made in tmp_path (root only): the node stays, no file replaces it."""
    node = tmp_path / "null-device"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    pp.save(node, _model())
    assert node.is_char_device()
    assert [p.name for p in tmp_path.iterdir()] == ["null-device"]


@pytest.mark.parametrize("where", ["same-directory", "other-directory", "relative"])
def test_save_through_a_link_to_a_file_replaces_the_file_and_keeps_the_link(tmp_path, where):
    real_dir = tmp_path if where != "other-directory" else tmp_path / "real"
    real_dir.mkdir(exist_ok=True)
    real = real_dir / "real.safetensors"
    pp.save(real, _model(), epoch=1)
    link = tmp_path / "link.safetensors"
    link.symlink_to(real.name if where == "relative" else real)
    pp.save(link, _model(seed=5), epoch=2)
    assert link.is_symlink()
    assert link.resolve() == real.resolve()
    assert pp.load(real).epoch == 2
    names = sorted(p.name for d in {tmp_path, real_dir} for p in d.iterdir() if p.is_file())
    assert not [name for name in names if name.endswith(".tmp")]


def test_save_through_a_dangling_link_creates_its_target(tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "target.safetensors")
    pp.save(link, _model(), epoch=3)
    assert link.is_symlink()
    assert pp.load(tmp_path / "target.safetensors").epoch == 3


def test_save_onto_a_socket_or_a_block_device_is_refused(tmp_path):
    path = tmp_path / "socket"
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(path))
        except OSError as exc:  # a path too long for a socket address
            pytest.skip(f"cannot bind a socket here: {exc}")
        with pytest.raises(pp.CheckpointError) as info:
            pp.save(path, _model())
    assert str(info.value).startswith(
        f"could not write checkpoint {str(path)!r}: the path is neither a regular file nor a "
        "character device or a FIFO ([Errno 22] it is a socket, which portprop does not write to"
    )
    assert isinstance(info.value.__cause__, atomic.NotARegularFileError)
    assert stat.S_ISSOCK(path.stat().st_mode)
    block = tmp_path / "block-device"
    try:
        os.mknod(block, stat.S_IFBLK | 0o600, os.makedev(7, 255))
    except (PermissionError, AttributeError, OSError):
        return  # only root makes device nodes
    with pytest.raises(pp.CheckpointError, match="it is a block device"):
        pp.save(block, _model())
    assert block.is_block_device()


def test_save_onto_a_directory_is_refused_as_before(tmp_path):
    target = tmp_path / "directory"
    target.mkdir()
    with pytest.raises(pp.CheckpointError, match="the path is a directory") as info:
        pp.save(target, _model())
    assert isinstance(info.value.__cause__, IsADirectoryError)
    assert info.value.__cause__.errno == errno.EISDIR
    assert list(target.iterdir()) == []


# ---- 8: the digest covers the header -----------------------------------------------------


def _edited(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A valid checkpoint (float32, with Adam's state) with ``edit(header)`` made and its
    digest left as it was."""
    model, optimizer = _trained()
    path = tmp_path / "edited.safetensors"
    pp.save(path, model, optimizer, epoch=1)
    header, data = _split(path.read_bytes())
    edit(header)
    path.write_bytes(_join(header, data))
    return path


def _swap_offsets(header: dict[str, Any]) -> None:
    a, b = header["optimizer.state.0.exp_avg"], header["optimizer.state.0.exp_avg_sq"]
    a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]


def _change_slope(header: dict[str, Any]) -> None:
    metadata = header["__metadata__"]
    metadata["architecture"] = metadata["architecture"].replace(
        '"negative_slope":0.1', '"negative_slope":0.2'
    )
    assert "0.2" in metadata["architecture"]


def _change_shape(header: dict[str, Any]) -> None:
    header["optimizer.state.0.exp_avg"]["shape"] = [2, 3]  # the same 6 values, as (2, 3)


def _change_epoch(header: dict[str, Any]) -> None:
    header["__metadata__"]["epoch"] = "7"


EDITS = {
    "swapped-offsets": _swap_offsets,
    "another-slope": _change_slope,
    "another-shape": _change_shape,
    "another-epoch": _change_epoch,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_header_edited_after_writing_is_refused(tmp_path, backend, edit):
    path = _edited(tmp_path, EDITS[edit])
    digest_changed = "the file changed after it was written (the file is corrupt, or was edited)"
    with pytest.raises(pp.CheckpointError, match=re.escape(digest_changed)):
        ckpt.read_safetensors(path)
    with pytest.raises(pp.CheckpointError, match=re.escape(digest_changed)):
        pp.load(path, backend=backend)
    model, optimizer = _trained(backend, seed=4)
    snapshot = _Snapshot(model, optimizer)
    with pytest.raises(pp.CheckpointError) as info:  # another slope: "does not fit"
        pp.load_into(path, model, optimizer)
    assert digest_changed in str(info.value) or edit == "another-slope"
    snapshot.assert_unchanged()


def test_the_header_may_be_rewritten_without_changing_what_it_says(tmp_path):
    """The digest covers the header's canonical JSON: its key order, white space and
    escapes may change (another tool rewrote it), not its content."""

    def rewrite(header: dict[str, Any]) -> None:
        items = list(header.items())[::-1]
        header.clear()
        header.update(items)

    path = _edited(tmp_path, rewrite)
    header, data = _split(path.read_bytes())
    text = json.dumps(header, indent=2, ensure_ascii=True).encode() + b"    "
    path.write_bytes(_join(text, data))
    assert pp.load(path).epoch == 1


def _legacy_file(tmp_path: Path) -> tuple[Path, dict[str, Any], bytes]:
    """A checkpoint as portprop wrote it before: the SHA-256 of its data alone."""
    path = _edited(tmp_path, lambda header: None)
    header, data = _split(path.read_bytes())
    del header["__metadata__"]["portprop.sha256"]
    header["__metadata__"]["portprop.data_sha256"] = hashlib.sha256(data).hexdigest()
    path.write_bytes(_join(header, data))
    return path, header, data


def test_a_file_of_the_older_digest_still_loads_and_is_checked(tmp_path, backend):
    path, header, data = _legacy_file(tmp_path)
    loaded = pp.load(path, backend=backend)
    assert loaded.epoch == 1
    assert "portprop.data_sha256" not in ckpt.read_safetensors(path)[1]
    changed = bytearray(data)
    changed[0] ^= 1
    path.write_bytes(_join(header, bytes(changed)))
    with pytest.raises(pp.CheckpointError, match="the data section's SHA-256 is "):
        pp.load(path, backend=backend)
