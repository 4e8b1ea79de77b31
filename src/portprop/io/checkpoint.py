"""portprop's checkpoints: a model, its optimizer's state, the epoch and the random state.

:func:`save` writes them to one safetensors file (:mod:`portprop.io.safetensors` reads
and writes the format); :func:`load` rebuilds the model, :func:`load_into` restores an
existing model and optimizer, :func:`restore_rng` the random state, and
:class:`Checkpoint` holds what was read.

What a portprop checkpoint holds:

=================================  ===================================================
tensor or ``__metadata__`` key     content
=================================  ===================================================
``model.<name>``                   each parameter, by torch name (``model.0.weight``)
``optimizer.state.<i>.<name>``     each array of the optimizer's state of parameter i
``"portprop.checkpoint"``          the format version, ``"1"``
``"architecture"``                 JSON list of layer specs (``{"type": "Linear",
                                   "in_features": 2, "out_features": 25, "bias":
                                   true}``, ``{"type": "ReLU"}``, ...)
``"container"``                    ``"Sequential"``, or ``"layer"`` for a lone layer
``"dtype"``                        the model's dtype, ``"float32"`` or ``"float64"``
``"optimizer"``                    JSON: type, hyperparameters and the non-array state
``"epoch"``, ``"extra"``           JSON: the epoch and the caller's own data
``"rng"``                          JSON: the global host generator's state and each
                                   dropout layer's generator state
``"portprop.version"``             the portprop that wrote the file
``"portprop.sha256"``              the SHA-256 of the header (without this entry) and
                                   the data, 64 hex digits (written by
                                   :func:`.write_safetensors`; checked and removed
                                   from the metadata by :func:`.read_safetensors`;
                                   older files hold ``"portprop.data_sha256"``, of the
                                   data alone: see :mod:`portprop.io.safetensors`)
=================================  ===================================================

Guarantees (with those of :mod:`portprop.io.safetensors`: a strict reader of regular
files that never unpickles, a digest of the header and the data, atomic writes):

- Everything the header says is checked before any data is read: the metadata, the
  tensors' names, dtypes and shapes against the architecture (:func:`load`) or the
  model and the optimizer (:func:`load_into`), the layers fitting together; so a file
  that says one thing and holds another is refused for the price of its header.
- Every parameter and every floating array of the optimizer's state is finite, and
  stays finite in the dtype it is loaded in: a checkpoint with a NaN or an infinity is
  corrupt, so :func:`load` and :func:`load_into` refuse it, and :func:`save` refuses to
  write one (which would replace a good checkpoint with a useless one); a float64
  value beyond float32's range (1e39) is refused when loading in float32, where it
  would become infinite.
- :func:`save` refuses, before writing anything, ``extra`` (and the optimizer's
  state) holding a reference cycle or lists and dicts nested more than 100 deep, and
  models nesting ``Sequential`` more than 32 deep: data that a checkpoint cannot hold.
- Arrays pass through host memory, so a checkpoint written from any backend loads on
  any other with bit-identical values (for the same dtype).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from portprop.backend import (
    Backend,
    backend_of,
    dtype_name,
    host_generator,
    is_array,
    resolve,
)
from portprop.errors import CheckpointError, StateDictError
from portprop.io.architecture import (
    _architecture,
    _architecture_differences,
    _build_layer,
    _expected_shapes,
    _named_modules,
    _spec_problem,
    _Unbuildable,
    _width_problem,
)
from portprop.io.safetensors import (
    _LISTED,
    _NAME_CHARS,
    PathLike,
    _bad,
    _is_int,
    _joined,
    _listed,
    _open_safetensors,
    _quoted,
    _Reader,
    _shown,
    _Values,
    write_safetensors,
)
from portprop.module import Module, Sequential

__all__ = ["FORMAT_VERSION", "Checkpoint", "load", "load_into", "restore_rng", "save"]

#: The checkpoint format this portprop writes, and the newest it reads.
FORMAT_VERSION = 1

_FORMAT_KEY = "portprop.checkpoint"
_MODEL_PREFIX = "model."
_OPTIMIZER_PREFIX = "optimizer.state."


# --------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------


_MAX_DEPTH = 100  # lists and dicts within each other, in the JSON data a checkpoint holds


def _plain(value: Any, what: str) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists.

    Raises ``ValueError`` naming ``what`` (``"extra"``, ...) for a list or dict that
    contains itself, or for lists and dicts nested more than 100 deep, which JSON
    cannot hold (``json.dumps`` would loop, or raise ``RecursionError``).
    """
    inside: dict[int, int] = {}  # id of each list or dict being converted -> its depth
    keys: list[Any] = []  # the keys and indices that lead to the value being converted

    def where(depth: int) -> str:
        steps = "".join(f"[{_shown(key)}]" for key in keys[: min(depth, 8)])
        return what + steps + ("..." if depth > 8 else "")

    def convert(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return convert(value.tolist()) if value.dtype.hasobject else value.tolist()
        if not isinstance(value, Mapping | list | tuple):
            return value
        if id(value) in inside:
            msg = (
                f"{what} holds a reference cycle: {where(len(keys))} is {where(inside[id(value)])} "
                "itself, which contains it; JSON cannot hold a cycle"
            )
            raise ValueError(msg)
        if len(keys) >= _MAX_DEPTH:
            msg = (
                f"{what} is nested deeper than {_MAX_DEPTH} lists and dicts (at "
                f"{where(len(keys))}); a checkpoint holds JSON data nested at most "
                f"{_MAX_DEPTH} deep"
            )
            raise ValueError(msg)
        inside[id(value)] = len(keys)
        if isinstance(value, Mapping):
            result: Any = {str(key): step(key, item) for key, item in value.items()}
        else:
            result = [step(i, item) for i, item in enumerate(value)]
        del inside[id(value)]
        return result

    def step(key: Any, item: Any) -> Any:
        keys.append(key)
        converted = convert(item)
        keys.pop()
        return converted

    return convert(value)


def _dumps(value: Any, what: str) -> str:
    plain = _plain(value, what)
    try:
        return json.dumps(plain, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be JSON-serializable (numbers, strings, lists, dicts): {exc}"
        raise TypeError(msg) from None


def _loads(metadata: Mapping[str, str], key: str, path: PathLike, default: Any = None) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"metadata {key!r} is malformed JSON ({exc})") from None


# --------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------


def save(
    path: PathLike,
    model: Module,
    optimizer: Any = None,
    *,
    epoch: int | None = None,
    extra: Any = None,
) -> None:
    """Save a model (and optionally its optimizer) to a checkpoint file, atomically.

    The global host generator's state (:func:`portprop.manual_seed`) and the state of
    every dropout layer's generator are saved too; :func:`restore_rng` restores them.

    Parameters
    ----------
    path : str or path-like
        The file to write (``.safetensors`` is the usual suffix).  An existing file is
        replaced only once the new one is complete and on disk.
    model : Module
        A :class:`Sequential` or a single layer, on any backend.
    optimizer : optional
        An optimizer with ``state_dict()`` (``{"type", "hyperparameters", "state"}``).
    epoch : int, optional
        The number of completed epochs, returned by :func:`load` as ``epoch``.
    extra : optional
        Any JSON-serializable data of yours (a :class:`~portprop.datasets.Standardizer`'s
        ``to_dict()``, a training history, ...).

    Raises
    ------
    CheckpointError
        If the file cannot be written (the message says why: permission denied, a
        read-only file system, no space left, ...), or if a parameter or an array of
        the optimizer's state holds a NaN or an infinity; an earlier file at ``path``
        is left intact.
    TypeError, ValueError
        If ``extra`` (or the optimizer's state) is not JSON data, holds a reference
        cycle, nests lists and dicts more than 100 deep, or makes a header larger than
        readers accept (:data:`~portprop.io.MAX_HEADER_BYTES`), or if the model nests
        ``Sequential`` more than 32 deep; nothing is written.
    """
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    if epoch is not None and not (_is_int(epoch) or isinstance(epoch, np.integer)):
        msg = f"epoch must be an int or None, got {epoch!r}"
        raise TypeError(msg)
    container, specs = _architecture(model)
    tensors: dict[str, Any] = {
        _MODEL_PREFIX + name: model.backend.to_host(value)
        for name, value in model.state_dict().items()  # with the buffers (issue 12)
    }
    metadata = {
        _FORMAT_KEY: str(FORMAT_VERSION),
        "portprop.version": _portprop_version(),
        "container": container,
        "architecture": json.dumps(specs, separators=(",", ":")),
        "dtype": dtype_name(model.dtype),
        "rng": _dumps(_rng_state(model), "the random state"),
    }
    if epoch is not None:
        metadata["epoch"] = str(int(epoch))
    if extra is not None:
        metadata["extra"] = _dumps(extra, "extra")
    if optimizer is not None:
        scalars, arrays = _split_optimizer_state(optimizer)
        metadata["optimizer"] = _dumps(scalars, "the optimizer's state_dict()")
        tensors.update(arrays)
    for name, array in tensors.items():
        problem = _not_finite(name, np.asarray(array))
        if problem:
            msg = (
                f"cannot save checkpoint {os.fspath(path)!r}: {problem}, as a checkpoint "
                "must (the model diverged?); nothing was written"
            )
            raise CheckpointError(msg)
    write_safetensors(path, tensors, metadata)


def _portprop_version() -> str:
    import portprop  # noqa: PLC0415 - the package imports this module

    return str(portprop.__version__)


def _rng_state(model: Module) -> dict[str, Any]:
    layers = {}
    for name, module in _named_modules(model):
        generator = getattr(module, "generator", None)
        if generator is not None and callable(getattr(generator, "get_state", None)):
            layers[name] = generator.get_state()
    return {"host": host_generator().bit_generator.state, "layers": layers}


def _split_optimizer_state(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The optimizer's state dict, its arrays taken out as host tensors."""
    state_dict = getattr(optimizer, "state_dict", None)
    if not callable(state_dict):
        msg = (
            f"{type(optimizer).__name__} has no state_dict(), so its state cannot be saved; "
            "pass optimizer=None to save the model alone"
        )
        raise TypeError(msg)
    full = state_dict()
    if not isinstance(full, Mapping) or not isinstance(full.get("state"), list | tuple):
        msg = (
            f"{type(optimizer).__name__}.state_dict() must return a dict with a 'state' list, "
            f"got {full!r:.200}"
        )
        raise TypeError(msg)
    arrays: dict[str, Any] = {}
    per_param = []
    for i, entries in enumerate(full["state"]):
        scalars = {}
        for name, value in dict(entries).items():
            if is_array(value) and not isinstance(value, np.generic):
                arrays[f"{_OPTIMIZER_PREFIX}{i}.{name}"] = _to_host(value)
            else:
                scalars[name] = value
        per_param.append(scalars)
    rest = {k: v for k, v in full.items() if k != "state"}
    return {**rest, "state": per_param}, arrays


def _to_host(x: Any) -> np.ndarray[Any, Any]:
    return np.asarray(backend_of(x).to_host(x))


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What :func:`load` or :func:`load_into` read.

    Attributes
    ----------
    model : Module
        The model: rebuilt by :func:`load`, the caller's by :func:`load_into`.
    optimizer_state : dict or None
        The optimizer's state dict, its arrays on the model's backend and (for floating
        arrays) in its dtype: pass it to ``optimizer.load_state_dict``.
    epoch : int or None
    extra : object
        The ``extra`` passed to :func:`save` (JSON: tuples come back as lists).
    rng_state : dict or None
        ``{"host": ..., "layers": {name: ...}}``; :func:`restore_rng` applies it.
    architecture : list of dict
        The layer specs.
    dtype : str
        The dtype the model was saved in.
    format_version : int
    path : str
    """

    model: Module
    optimizer_state: dict[str, Any] | None
    epoch: int | None
    extra: Any
    rng_state: dict[str, Any] | None
    architecture: list[dict[str, Any]]
    dtype: str
    format_version: int
    path: str


@dataclass
class _Contents:
    """What a checkpoint's header says (checked), and then its arrays (``params``, and
    the optimizer's arrays in ``optimizer``) once :func:`_read_data` has read them."""

    version: int
    container: str
    architecture: list[dict[str, Any]]
    dtype: str
    shapes: dict[str, tuple[int, ...]]  # of the parameters, by their names in the model
    optimizer: dict[str, Any] | None  # its arrays are put in by _read_data
    optimizer_tensors: list[tuple[int, str, str]]  # (parameter index, state name, tensor)
    epoch: int | None
    extra: Any
    rng: dict[str, Any] | None
    params: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def checkpoint(
        self, model: Module, optimizer_state: dict[str, Any] | None, path: PathLike
    ) -> Checkpoint:
        """What :func:`load` and :func:`load_into` return, for ``model`` loaded from it."""
        return Checkpoint(
            model=model,
            optimizer_state=optimizer_state,
            epoch=self.epoch,
            extra=self.extra,
            rng_state=self.rng,
            architecture=self.architecture,
            dtype=self.dtype,
            format_version=self.version,
            path=os.fspath(path),
        )


@contextlib.contextmanager
def _checkpoint_file(path: PathLike) -> Iterator[tuple[_Reader, _Contents]]:
    """The checkpoint at ``path``, open, with what its header says, checked; no data has
    been read: the caller checks that it fits, then calls :func:`_read_data`."""
    with _open_safetensors(path) as reader:
        yield reader, _header_contents(reader, path)


def _header_contents(reader: _Reader, path: PathLike) -> _Contents:
    metadata = reader.metadata
    version = _check_version(metadata, path)
    container = metadata.get("container", "Sequential")
    if container not in ("Sequential", "layer"):
        raise _bad(
            path, f"metadata 'container' must be 'Sequential' or 'layer', got {_quoted(container)}"
        )
    if "architecture" not in metadata:
        raise _bad(path, "the metadata has no 'architecture'")
    specs = _loads(metadata, "architecture", path)
    if not isinstance(specs, list) or not specs:
        raise _bad(path, f"the architecture must be a non-empty JSON list, got {_shown(specs)}")
    if container == "layer" and len(specs) != 1:
        raise _bad(path, f"a lone layer's architecture must hold one spec, got {len(specs)}")
    for i, spec in enumerate(specs):
        problem = _spec_problem(spec, f"layer {i}")
        if problem:
            raise _bad(path, f"the architecture is malformed: {problem}")
    dtype = metadata.get("dtype", "")
    if dtype not in ("float32", "float64"):
        raise _bad(path, f"metadata 'dtype' must be 'float32' or 'float64', got {_quoted(dtype)}")

    shapes: dict[str, tuple[int, ...]] = {}
    optimizer_tensors: dict[str, str] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name.startswith(_MODEL_PREFIX):
            if tensor.dtype.kind != "f" and not _is_counter(name, tensor):
                problem = f"parameter {_quoted(name)} has dtype {tensor.dtype}, not a float"
                raise _bad(path, problem)
            shapes[name.removeprefix(_MODEL_PREFIX)] = tensor.shape
        elif name.startswith(_OPTIMIZER_PREFIX):
            optimizer_tensors[name.removeprefix(_OPTIMIZER_PREFIX)] = name
        else:
            problem = f"unexpected tensor {_quoted(name)} (neither 'model.' nor 'optimizer.')"
            raise _bad(path, problem)
    optimizer, slots = _read_optimizer(metadata, optimizer_tensors, path)

    epoch = _loads(metadata, "epoch", path)
    if epoch is not None and not _is_int(epoch):
        raise _bad(path, f"metadata 'epoch' must be an int, got {_shown(metadata['epoch'])}")
    rng = _loads(metadata, "rng", path)
    if rng is not None and not (isinstance(rng, dict) and isinstance(rng.get("layers", {}), dict)):
        raise _bad(path, "metadata 'rng' must be an object with a 'layers' object")
    return _Contents(
        version=version,
        container=container,
        architecture=specs,
        dtype=dtype,
        shapes=shapes,
        optimizer=optimizer,
        optimizer_tensors=slots,
        epoch=epoch,
        extra=_loads(metadata, "extra", path),
        rng=rng,
    )


def _is_counter(name: str, tensor: Any) -> bool:
    """Whether the model's tensor ``name`` is an integer buffer (BatchNorm1d's
    ``num_batches_tracked``, issue 12): a 0-d int64 array of that name."""
    counter = name.removeprefix(_MODEL_PREFIX).rpartition(".")[2] == "num_batches_tracked"
    return counter and tensor.dtype == np.dtype("<i8") and tuple(tensor.shape) == ()


def _read_data(reader: _Reader, contents: _Contents, dtype: Any, path: PathLike) -> None:
    """Read the checkpoint's arrays into ``contents``, once its data has been checked:
    its digest, finite values, and values within the range of ``dtype``, the floating
    dtype they will be loaded in."""
    values = reader.check(values=True)
    for name, summary in values.items():
        if summary.nan or summary.inf:
            shape = next(t.shape for t in reader.tensors if t.name == name)
            raise _bad(
                path, f"{_non_finite(name, shape, summary.nan, summary.inf)}: the file is corrupt"
            )
    _check_range(values, dtype, path)
    arrays = reader.arrays()
    contents.params = {
        name.removeprefix(_MODEL_PREFIX): array
        for name, array in arrays.items()
        if name.startswith(_MODEL_PREFIX)
    }
    for name, array in contents.params.items():
        problem = _buffer_problem(name, array)
        if problem is not None:
            raise _bad(path, f"{problem}: the file is corrupt")
    if contents.optimizer is not None:
        for i, key, tensor in contents.optimizer_tensors:
            contents.optimizer["state"][i][key] = arrays[tensor]


def _buffer_problem(name: str, array: Any) -> str | None:
    """What is wrong with the value of a buffer that no finite-value check covers (a
    negative batch count or running variance of BatchNorm1d), or ``None``."""
    kind = name.rpartition(".")[2]
    if kind == "num_batches_tracked" and int(array) < 0:
        return f"tensor {_quoted(name)} holds {int(array)}; expected a count >= 0"
    if kind == "running_var" and bool(np.any(np.asarray(array) < 0)):
        return f"tensor {_quoted(name)} holds a negative variance; expected values >= 0"
    return None


def _check_range(values: Mapping[str, _Values], dtype: Any, path: PathLike) -> None:
    """Raise unless every floating tensor's values stay finite in ``dtype``, the dtype
    they are loaded in (float64's 1e39 is infinity in float32)."""
    name = dtype_name(dtype)
    host = np.dtype(name)
    largest = np.array([summary.largest for summary in values.values()], dtype=np.float64)
    with np.errstate(over="ignore"):
        over = ~np.isfinite(largest.astype(host))
    if not over.any():
        return
    tensors = [tensor for tensor, bad in zip(values, over, strict=True) if bad]
    first = tensors[0]
    others = f" (and {len(tensors) - 1} more tensors)" if len(tensors) > 1 else ""
    msg = (
        f"cannot load checkpoint {os.fspath(path)!r} in {name} (nothing was loaded): tensor "
        f"{_quoted(first)} holds a value of magnitude {values[first].largest:.6g}{others}, "
        f"beyond the largest finite {name} ({float(np.finfo(host).max):.8g}): it would load "
        "as infinity; load it in float64 (load(..., dtype='float64'), or load_into a float64 "
        "model)"
    )
    raise CheckpointError(msg)


def _non_finite(name: str, shape: tuple[int, ...], nan: int, inf: int) -> str:
    return (
        f"tensor {_quoted(name)} of shape {shape} holds {nan} NaN and {inf} infinite values; "
        "expected finite values only"
    )


def _not_finite(name: str, array: np.ndarray[Any, Any]) -> str | None:
    """Says how many NaNs and infinities a floating array holds, if any."""
    if array.dtype.kind != "f":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = array[~finite]
    nan = int(np.isnan(bad).sum())
    return _non_finite(name, tuple(array.shape), nan, bad.size - nan)


def _index(text: str) -> int | None:
    """``text`` as a number of up to 18 ASCII digits (an index, a version), else None."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _check_version(metadata: Mapping[str, str], path: PathLike) -> int:
    if _FORMAT_KEY not in metadata:
        raise _bad(path, f"its metadata has no {_FORMAT_KEY!r} entry (not a portprop checkpoint)")
    text = metadata[_FORMAT_KEY]
    version = _index(text)
    if version is None or version < 1:
        raise _bad(path, f"unknown checkpoint format version {text!r:.40}")
    if version > FORMAT_VERSION:
        writer = metadata.get("portprop.version", "a newer portprop")
        msg = (
            f"{os.fspath(path)!r} has checkpoint format version {version} (written by portprop "
            f"{writer:.40}), but this portprop ({_portprop_version()}) reads format version "
            f"{FORMAT_VERSION}; upgrade portprop to load it"
        )
        raise CheckpointError(msg)
    return version


def _read_optimizer(
    metadata: Mapping[str, str], tensors: Mapping[str, str], path: PathLike
) -> tuple[dict[str, Any] | None, list[tuple[int, str, str]]]:
    """The optimizer's state that the metadata holds, and where each of its tensors
    (``tensors``: ``"<i>.<name>"`` -> tensor name) goes in it."""
    if "optimizer" not in metadata:
        if tensors:
            raise _bad(path, "it has optimizer tensors but no 'optimizer' metadata")
        return None, []
    state = _loads(metadata, "optimizer", path)
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("state"), list)
        or not all(isinstance(entry, dict) for entry in state["state"])
    ):
        raise _bad(path, "metadata 'optimizer' must be an object with a 'state' list of objects")
    per_param: list[dict[str, Any]] = state["state"]
    slots = []
    for key, tensor in tensors.items():
        index, _, name = key.partition(".")
        i = _index(index)
        if i is None or not name:
            raise _bad(path, f"tensor {_quoted(tensor)} is not 'optimizer.state.<i>.<name>'")
        if i >= len(per_param):
            raise _bad(
                path,
                f"tensor {_quoted(tensor)} is for parameter {i}, but the optimizer state has "
                f"{len(per_param)} entries",
            )
        if name in per_param[i]:
            problem = f"optimizer state {i} has {_quoted(name)} both as a tensor and in metadata"
            raise _bad(path, problem)
        per_param[i][name] = None  # the tensor's place, until its data is read
        slots.append((i, name, tensor))
    return state, slots


def _optimizer_on(state: dict[str, Any], backend: Backend, dtype: Any) -> dict[str, Any]:
    """The optimizer state with its host arrays moved to ``backend`` (floats in ``dtype``)."""
    converted = []
    for entries in state["state"]:
        moved = {}
        for name, value in entries.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                moved[name] = backend.from_host(value, dtype)
            elif isinstance(value, np.ndarray):
                moved[name] = backend.asarray(value, copy=True)
            else:
                moved[name] = value
        converted.append(moved)
    return {**state, "state": converted}


def load(
    path: PathLike, *, backend: Backend | str | None = None, device: Any = None, dtype: Any = None
) -> Checkpoint:
    """Read a checkpoint and rebuild its model.

    Everything the file's header says (the tensors' names, dtypes and shapes against
    the architecture, the layers fitting together) is checked before its data is read;
    the data is checked (its digest, finite values that ``dtype`` can hold) before the
    model is built.

    Parameters
    ----------
    path : str or path-like
        A regular file (a FIFO or a device is refused, unopened).
    backend, device : optional
        Where to rebuild the model: the current backend by default (not necessarily the
        one it was saved from: a checkpoint loads on every backend).
    dtype : optional
        The model's dtype; the saved one by default.

    Returns
    -------
    Checkpoint
        ``checkpoint.model`` is ready to use; pass ``checkpoint.optimizer_state`` to a
        new optimizer's ``load_state_dict``, and the checkpoint to :func:`restore_rng`
        to resume training exactly.  Loading leaves the random state as it was.

    Raises
    ------
    CheckpointError
        If the file is not a valid checkpoint, is of a newer format, holds a layer that
        portprop cannot rebuild, or holds values beyond the range of ``dtype`` (float64's
        1e39 in float32); the message names the file.
    """
    with _checkpoint_file(path) as (reader, contents):
        target, float_dtype = resolve(backend, device, contents.dtype if dtype is None else dtype)
        try:
            expected = _expected_shapes(contents.architecture)
        except _Unbuildable as exc:
            msg = f"cannot rebuild the model of checkpoint {os.fspath(path)!r}: {exc}"
            raise CheckpointError(msg) from None
        if contents.container == "layer":  # a lone layer's names have no "0." prefix
            expected = {k.partition(".")[2]: v for k, v in expected.items()}
        problems = _shape_problems(expected, contents.shapes, "the architecture")
        if problems:
            raise _bad(path, "its tensors do not match its architecture: " + _joined(problems))
        problem = _width_problem(contents.architecture)
        if problem:
            raise _bad(path, f"its architecture does not make a model: {problem}")
        _read_data(reader, contents, float_dtype, path)
    host = host_generator()
    saved = host.bit_generator.state
    try:
        layers = [_build_layer(spec, target, float_dtype) for spec in contents.architecture]
        model = layers[0] if contents.container == "layer" else Sequential(*layers)
    except _Unbuildable as exc:
        raise _bad(path, str(exc)) from None
    except (TypeError, ValueError) as exc:  # layers that do not fit together
        raise _bad(path, f"its architecture does not make a model: {_cut(exc)}") from None
    finally:
        host.bit_generator.state = saved  # building a dropout layer may draw a seed
    try:
        model.load_state_dict(_on_host_as(contents.params, float_dtype))
    except (StateDictError, TypeError, ValueError) as exc:
        raise _bad(path, f"its tensors do not match its architecture: {_cut(exc)}") from None
    optimizer_state = (
        None
        if contents.optimizer is None
        else _optimizer_on(contents.optimizer, target, float_dtype)
    )
    return contents.checkpoint(model, optimizer_state, path)


def _cut(exc: BaseException) -> str:
    """An exception's message, cut to 500 characters."""
    text = str(exc)
    return text if len(text) <= 500 else text[:500] + f"... ({len(text)} characters)"


def _shape_problems(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], expecting: str
) -> list[str]:
    """Differences between the parameter shapes ``expecting`` (the model, the
    architecture) has and those of the checkpoint's tensors."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        problems.append(f"{expecting} has parameters that the checkpoint lacks: {_listed(missing)}")
    if unexpected:
        problems.append(
            f"the checkpoint has parameters that {expecting} lacks: {_listed(unexpected)}"
        )
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems.extend(
        f"parameter {_quoted(k)} has shape {tuple(found[k])} in the checkpoint, "
        f"{tuple(expected[k])} in {expecting}"
        for k in wrong[:_LISTED]
    )
    if len(wrong) > _LISTED:
        problems.append(f"{len(wrong) - _LISTED} more parameters have other shapes")
    return problems


def _on_host_as(params: Mapping[str, np.ndarray[Any, Any]], dtype: Any) -> dict[str, Any]:
    """The parameters (and floating buffers) converted to ``dtype`` on the host, which
    every backend takes (array-api-strict, for one, takes no float16 array); integer
    buffers stay as they are."""
    host = np.dtype(dtype_name(dtype))
    return {
        name: array.astype(host, copy=False) if array.dtype.kind == "f" else array
        for name, array in params.items()
    }


def load_into(path: PathLike, model: Module, optimizer: Any = None) -> Checkpoint:
    """Restore a checkpoint into an existing model (and optimizer), in place.

    The model must have the checkpoint's architecture (its dtype and backend may
    differ: values are converted).  Every difference is checked first, from the file's
    header alone: on any, one :class:`CheckpointError` lists them (the first ten, and
    how many more) and nothing is changed, nor is the data read.

    Returns
    -------
    Checkpoint
        With ``model`` the given model; the random state is not restored (see
        :func:`restore_rng`).

    Raises
    ------
    CheckpointError
        If the file is not a valid checkpoint, or does not fit the model or the
        optimizer (one message lists the differences), holds values beyond the range
        of the model's dtype, or the optimizer refuses the saved state; the model and
        the optimizer are then exactly as they were.
    """
    if not isinstance(model, Module):
        msg = f"model must be a portprop Module, got {type(model).__name__}"
        raise TypeError(msg)
    container, specs = _architecture(model)
    with _checkpoint_file(path) as (reader, contents):
        problems = []
        if container != contents.container:
            problems.append(
                f"the checkpoint holds a {contents.container}, the model is a {container}"
            )
        problems.extend(_architecture_differences(contents.architecture, specs))
        own = {name: tuple(value.shape) for name, value in model.state_dict().items()}
        problems.extend(_shape_problems(own, contents.shapes, "the model"))
        if optimizer is not None:
            problems.extend(_optimizer_problems(contents, optimizer))
        if problems:
            msg = (
                f"checkpoint {os.fspath(path)!r} does not fit this model (nothing was loaded): "
                + _joined(problems)
            )
            raise CheckpointError(msg)
        _read_data(reader, contents, model.dtype, path)
    optimizer_state = None
    if optimizer is not None and contents.optimizer is not None:
        optimizer_state = _optimizer_on(contents.optimizer, model.backend, model.dtype)
    # The model first: its load_state_dict converts every array before it assigns any,
    # and the arrays it replaces are kept, to be put back if the optimizer refuses.
    before = [(p, p.data, p.grad) for p in model.parameters()]
    buffers_before = list(model.named_buffers())  # buffers (issue 12)
    try:
        model.load_state_dict(_on_host_as(contents.params, model.dtype))
    except (StateDictError, TypeError, ValueError) as exc:
        msg = (
            f"checkpoint {os.fspath(path)!r} does not fit this model (nothing was loaded): "
            f"{_cut(exc)}"
        )
        raise CheckpointError(msg) from exc
    if optimizer is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except BaseException as exc:
            for p, data, grad in before:
                p.data, p.grad = data, grad
            for name, value in buffers_before:
                model._set_buffer(name, value)
            if not isinstance(exc, LookupError | TypeError | ValueError | ArithmeticError):
                raise
            msg = (
                f"checkpoint {os.fspath(path)!r}: {type(optimizer).__name__} refused the saved "
                f"state (nothing was loaded): {_cut(exc)}"
            )
            raise CheckpointError(msg) from exc
    return contents.checkpoint(model, optimizer_state, path)


def _optimizer_problems(contents: _Contents, optimizer: Any) -> list[str]:
    if not callable(getattr(optimizer, "load_state_dict", None)):
        return [f"{type(optimizer).__name__} has no load_state_dict()"]
    if contents.optimizer is None:
        return ["the checkpoint holds no optimizer state"]
    problems = []
    saved_type = contents.optimizer.get("type")
    own_type = type(optimizer).__name__
    if saved_type is not None and saved_type != own_type:
        saved = str(saved_type)[:_NAME_CHARS]
        problems.append(f"the checkpoint holds {saved} state, the optimizer is {own_type}")
    params = getattr(optimizer, "params", None)
    if params is not None and len(params) != len(contents.optimizer["state"]):
        problems.append(
            f"the checkpoint holds state for {len(contents.optimizer['state'])} parameters, "
            f"the optimizer has {len(params)}"
        )
    return problems


# --------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------


def restore_rng(checkpoint: Checkpoint) -> None:
    """Restore the random state saved with a checkpoint, to resume training exactly.

    Sets the global host generator (the one :func:`portprop.manual_seed` seeds) and the
    generator of every dropout layer of ``checkpoint.model``.  Dropout generators are
    each library's own, so their states restore only on the library that saved them;
    on any mismatch a :class:`CheckpointError` says so and nothing is restored.
    """
    rng = checkpoint.rng_state
    if rng is None:
        msg = f"checkpoint {checkpoint.path!r} holds no random state"
        raise CheckpointError(msg)
    modules = dict(_named_modules(checkpoint.model))
    saved_layers = rng.get("layers", {})
    problems = []
    targets = []
    for name, state in saved_layers.items():
        generator = getattr(modules.get(name), "generator", None)
        if generator is None or not callable(getattr(generator, "set_state", None)):
            problems.append(f"the model has no layer {name!r} with a generator")
            continue
        kind = getattr(generator, "kind", None)
        saved_kind = state.get("generator") if isinstance(state, dict) else None
        if kind is not None and saved_kind != kind:
            problems.append(
                f"layer {name!r} was saved with a {saved_kind!r} generator, but now draws with "
                f"a {kind!r} one (a different backend)"
            )
            continue
        targets.append((name, generator, state))
    if problems:
        msg = f"cannot restore the random state of {checkpoint.path!r}: " + "; ".join(problems)
        raise CheckpointError(msg)
    host = host_generator()
    host_before = host.bit_generator.state
    layers_before = [(generator, generator.get_state()) for _, generator, _ in targets]
    try:
        if rng.get("host") is not None:
            host.bit_generator.state = rng["host"]
        for _, generator, state in targets:
            generator.set_state(state)
    except (LookupError, TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        # a state that a generator refuses (a corrupt file): put everything back
        host.bit_generator.state = host_before
        for generator, state in layers_before:
            generator.set_state(state)
        msg = f"cannot restore the random state of {checkpoint.path!r}: {exc}"
        raise CheckpointError(msg) from exc
