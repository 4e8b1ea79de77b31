"""A model's architecture: the layer specs a checkpoint records, and models built from them.

A spec is a JSON object per layer (``{"type": "Linear", "in_features": 2,
"out_features": 25, "bias": true}``, ``{"type": "ReLU"}``, ``{"type": "Sequential",
"layers": [...]}``).  This module describes a model as specs, checks specs read from a
file, computes the parameter shapes they imply and whether their layers fit together
(before anything is allocated), rebuilds layers from them, lists how two architectures
differ and names a model's layers (``"0"``, ``"2.1"``); :mod:`portprop.io.checkpoint`
is its only user, and it has no public names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any, TypeGuard

from portprop import layers as _layers
from portprop.backend import Backend, use_backend
from portprop.io.safetensors import _LISTED, _is_int, _json_type, _quoted, _shown
from portprop.module import Module, Sequential

__all__: list[str] = []

_MAX_NESTING = 32  # Sequential within Sequential
_NAME = 40  # characters of a layer type or field shown in a message


def _layer_spec(layer: Module, depth: int = 0) -> dict[str, Any]:
    kind = type(layer).__name__
    if isinstance(layer, Sequential):
        if depth >= _MAX_NESTING:
            msg = (
                f"the model nests Sequential layers more than {_MAX_NESTING} deep, which a "
                "checkpoint cannot hold"
            )
            raise ValueError(msg)
        return {
            "type": "Sequential",
            "layers": [_layer_spec(child, depth + 1) for child in layer],
        }
    spec: dict[str, Any] = {"type": kind}
    if type(layer) is _layers.Linear:
        spec.update(
            in_features=layer.in_features,
            out_features=layer.out_features,
            bias=layer.bias is not None,
        )
    elif type(layer) is _layers.LeakyReLU:
        spec["negative_slope"] = layer.negative_slope
    elif type(layer) is _layers.Dropout:
        spec["p"] = layer.p
    elif type(layer) is _layers.GELU:
        spec["approximate"] = layer.approximate
    elif type(layer) is _layers.ELU:
        spec["alpha"] = layer.alpha
    elif type(layer) is _layers.Softplus:
        spec.update(beta=layer.beta, threshold=layer.threshold)
    elif type(layer) is _layers.LayerNorm:
        spec.update(
            normalized_shape=layer.normalized_shape[0],
            eps=layer.eps,
            elementwise_affine=layer.elementwise_affine,
            bias=layer.bias is not None,
        )
    elif type(layer) is _layers.BatchNorm1d:
        spec.update(
            num_features=layer.num_features,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )
    elif type(layer) not in _BUILT_IN:
        spec["custom"] = True  # described by name only: load_into(), not load()
    return spec


def _architecture(model: Module) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(model, Sequential):
        return "Sequential", [_layer_spec(layer) for layer in model]
    return "layer", [_layer_spec(model)]


_BUILT_IN: dict[type[Module], str] = {
    _layers.Linear: "Linear",
    _layers.Tanh: "Tanh",
    _layers.ReLU: "ReLU",
    _layers.Sigmoid: "Sigmoid",
    _layers.LeakyReLU: "LeakyReLU",
    _layers.Identity: "Identity",
    _layers.Dropout: "Dropout",
    _layers.GELU: "GELU",
    _layers.SiLU: "SiLU",
    _layers.ELU: "ELU",
    _layers.Softplus: "Softplus",
    _layers.LogSoftmax: "LogSoftmax",
    _layers.LayerNorm: "LayerNorm",
    _layers.BatchNorm1d: "BatchNorm1d",
    Sequential: "Sequential",
}


def _spec_problem(spec: Any, where: str, depth: int = 0) -> str | None:
    """Why ``spec`` cannot describe a layer, or ``None``."""
    if depth > _MAX_NESTING:
        return f"{where} nests Sequential layers more than {_MAX_NESTING} deep"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        return f"{where} must be an object with a string 'type', got {_json_type(spec)}"
    kind = spec["type"]
    if kind == "Linear":
        for key in ("in_features", "out_features"):
            if not (_is_int(spec.get(key)) and spec[key] >= 1):
                return f"{where} (Linear) needs a positive int {key!r}, got {spec.get(key)!r:.80}"
        if not isinstance(spec.get("bias"), bool):
            return f"{where} (Linear) needs a boolean 'bias', got {spec.get('bias')!r:.80}"
    elif kind == "LeakyReLU":
        slope = spec.get("negative_slope")
        if not _is_finite_number(slope):
            return f"{where} (LeakyReLU) needs a number 'negative_slope', got {slope!r:.80}"
    elif kind == "Dropout":
        p = spec.get("p")
        if not (_is_finite_number(p) and 0 <= p < 1):
            return f"{where} (Dropout) needs a number 'p' in [0, 1), got {p!r:.80}"
    elif kind == "GELU":
        if spec.get("approximate") not in ("none", "tanh"):
            return (
                f"{where} (GELU) needs 'approximate' 'none' or 'tanh', got "
                f"{spec.get('approximate')!r:.80}"
            )
    elif kind in _NUMBER_FIELDS:
        for key, positive in _NUMBER_FIELDS[kind]:
            value = spec.get(key)
            if not (_is_finite_number(value) and (value > 0 or not positive)):
                wanted = "a number > 0" if positive else "a number"
                return f"{where} ({kind}) needs {wanted} {key!r}, got {value!r:.80}"
        if kind == "LayerNorm":
            return _layer_norm_problem(spec, where)
        if kind == "BatchNorm1d":
            return _batch_norm_problem(spec, where)
    elif kind == "Sequential":
        children = spec.get("layers")
        if not isinstance(children, list) or not children:
            return f"{where} (Sequential) needs a non-empty list 'layers'"
        for i, child in enumerate(children):
            problem = _spec_problem(child, f"{where}.{i}", depth + 1)
            if problem:
                return problem
    return None


# The number fields of a layer's spec, and whether each must be > 0.
_NUMBER_FIELDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "ELU": (("alpha", False),),
    "Softplus": (("beta", True), ("threshold", False)),
    "LayerNorm": (("eps", True),),
    "BatchNorm1d": (("eps", True),),
}


def _layer_norm_problem(spec: dict[str, Any], where: str) -> str | None:
    """Why ``spec`` (a LayerNorm with a valid ``eps``) cannot describe one, or ``None``."""
    size = spec.get("normalized_shape")
    if not (_is_int(size) and spec["normalized_shape"] >= 1):
        return f"{where} (LayerNorm) needs a positive int 'normalized_shape', got {size!r:.80}"
    for key in ("elementwise_affine", "bias"):
        if not isinstance(spec.get(key), bool):
            return f"{where} (LayerNorm) needs a boolean {key!r}, got {spec.get(key)!r:.80}"
    return None


def _batch_norm_problem(spec: dict[str, Any], where: str) -> str | None:
    """Why ``spec`` (a BatchNorm1d with a valid ``eps``) cannot describe one, or ``None``."""
    size = spec.get("num_features")
    if not (_is_int(size) and spec["num_features"] >= 1):
        return f"{where} (BatchNorm1d) needs a positive int 'num_features', got {size!r:.80}"
    momentum = spec.get("momentum")
    if momentum is not None and not (_is_finite_number(momentum) and 0 <= momentum <= 1):
        return (
            f"{where} (BatchNorm1d) needs 'momentum' a number in [0, 1] or null, "
            f"got {momentum!r:.80}"
        )
    for key in ("affine", "track_running_stats"):
        if not isinstance(spec.get(key), bool):
            return f"{where} (BatchNorm1d) needs a boolean {key!r}, got {spec.get(key)!r:.80}"
    return None


def _is_finite_number(value: Any) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _expected_shapes(specs: list[Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """The parameter shapes that the specs describe.

    Raises ``_Unbuildable`` for a layer that portprop cannot rebuild, before anything is
    allocated.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(specs):
        name = f"{prefix}{i}."
        kind = spec["type"]
        if kind == "Linear":
            shapes[name + "weight"] = (spec["out_features"], spec["in_features"])
            if spec["bias"]:
                shapes[name + "bias"] = (spec["out_features"],)
        elif kind == "LayerNorm":
            if spec["elementwise_affine"]:
                shapes[name + "weight"] = (spec["normalized_shape"],)
                if spec["bias"]:
                    shapes[name + "bias"] = (spec["normalized_shape"],)
        elif kind == "BatchNorm1d":
            width = (spec["num_features"],)
            if spec["affine"]:
                shapes[name + "weight"] = shapes[name + "bias"] = width
            if spec["track_running_stats"]:
                shapes[name + "running_mean"] = shapes[name + "running_var"] = width
                shapes[name + "num_batches_tracked"] = ()
        elif kind == "Sequential":
            shapes.update(_expected_shapes(spec["layers"], name))
        elif kind not in _REBUILDABLE:
            msg = (
                f"it holds a layer of type {_quoted(kind)}, which portprop cannot rebuild; "
                "build the model yourself and restore it with portprop.load_into(path, model)"
            )
            raise _Unbuildable(msg)
    return shapes


_REBUILDABLE = frozenset(
    (
        "Tanh",
        "ReLU",
        "Sigmoid",
        "LeakyReLU",
        "Identity",
        "Dropout",
        "GELU",
        "SiLU",
        "ELU",
        "Softplus",
        "LogSoftmax",
    )
)


def _width_problem(specs: list[dict[str, Any]]) -> str | None:
    """Why a :class:`Sequential` of these (checked) specs would not build, as it would say
    (a layer that expects another number of features than the layer before it gives),
    or ``None``; from the specs alone, before any parameter is allocated."""
    return _widths(specs)[1]


def _widths(specs: list[dict[str, Any]]) -> tuple[tuple[int, int] | None, str | None]:
    """The input and output widths that a Sequential of ``specs`` fixes (``None`` if all
    of its layers are elementwise), and why it would not build (``None`` if it would).

    Mirrors :class:`Sequential`, which checks its children as each is built, then each
    pair of consecutive layers that are not elementwise.
    """
    shaped: list[tuple[int, str, int, int]] = []  # index, type, input and output width
    for i, spec in enumerate(specs):
        kind = spec["type"]
        if kind == "Linear":
            shaped.append((i, kind, spec["in_features"], spec["out_features"]))
        elif kind == "LayerNorm":
            shaped.append((i, kind, spec["normalized_shape"], spec["normalized_shape"]))
        elif kind == "BatchNorm1d":
            shaped.append((i, kind, spec["num_features"], spec["num_features"]))
        elif kind == "Sequential":
            widths, problem = _widths(spec["layers"])
            if problem:
                return None, problem
            if widths is not None:
                shaped.append((i, kind, *widths))
    for (i, before, _, n_out), (j, after, n_in, _) in itertools.pairwise(shaped):
        if n_out != n_in:
            problem = (
                f"layer {j} ({after}) expects {n_in} input features, but layer {i} ({before}) "
                f"gives {n_out} outputs"
            )
            return None, problem
    if not shaped:
        return None, None
    return (shaped[0][2], shaped[-1][3]), None


def _build_layer(spec: dict[str, Any], backend: Backend, dtype: Any) -> Module:
    """The layer ``spec`` describes, on ``backend`` in ``dtype``.

    Only ``Linear`` is built with ``backend=`` and ``dtype=``: the layers without
    parameters are built as a user builds them, following their input (the model's
    parameters inside a Sequential), and then moved, so that a model loads as it was
    saved whether or not its activations were given a backend.
    """
    kind = spec["type"]
    if kind == "Linear":
        # seed=0: the weights are overwritten at once; the global generator stays as is
        return _layers.Linear(
            spec["in_features"],
            spec["out_features"],
            bias=spec["bias"],
            seed=0,
            backend=backend,
            dtype=dtype,
        )
    if kind == "LayerNorm" and spec["elementwise_affine"]:
        return _layers.LayerNorm(
            spec["normalized_shape"],
            float(spec["eps"]),
            bias=spec["bias"],
            backend=backend,
            dtype=dtype,
        )
    if kind == "BatchNorm1d":
        return _layers.BatchNorm1d(
            spec["num_features"],
            float(spec["eps"]),
            None if spec["momentum"] is None else float(spec["momentum"]),
            spec["affine"],
            spec["track_running_stats"],
            backend=backend,
            dtype=dtype,
        )
    if kind == "Sequential":
        return Sequential(*(_build_layer(child, backend, dtype) for child in spec["layers"]))
    layer: Module
    with use_backend(backend):  # built where the model goes, whatever the current backend
        if kind == "LeakyReLU":
            layer = _layers.LeakyReLU(float(spec["negative_slope"]))
        elif kind == "Dropout":
            layer = _layers.Dropout(float(spec["p"]))
        elif kind == "GELU":
            layer = _layers.GELU(spec["approximate"])
        elif kind == "ELU":
            layer = _layers.ELU(float(spec["alpha"]))
        elif kind == "Softplus":
            layer = _layers.Softplus(float(spec["beta"]), float(spec["threshold"]))
        elif kind == "LayerNorm":  # without parameters: it follows its input
            layer = _layers.LayerNorm(
                spec["normalized_shape"], float(spec["eps"]), elementwise_affine=False
            )
        elif kind in _PARAMETER_FREE:
            layer = _PARAMETER_FREE[kind]()
        else:
            msg = f"it holds a layer of type {kind!r}, which portprop cannot rebuild"
            raise _Unbuildable(msg)
    return layer.to(backend, dtype=dtype)


_PARAMETER_FREE: dict[str, type[Module]] = {
    "Tanh": _layers.Tanh,
    "ReLU": _layers.ReLU,
    "Sigmoid": _layers.Sigmoid,
    "Identity": _layers.Identity,
    "SiLU": _layers.SiLU,
    "LogSoftmax": _layers.LogSoftmax,
}


class _Unbuildable(Exception):  # noqa: N818 - internal signal, turned into CheckpointError
    pass


def _named_modules(module: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    yield prefix.rstrip("."), module
    for name, child in module.named_children():
        yield from _named_modules(child, f"{prefix}{name}.")


def _architecture_differences(
    saved: list[dict[str, Any]], own: list[dict[str, Any]], prefix: str = ""
) -> list[str]:
    """Every difference between two lists of layer specs (``prefix`` names nested ones)."""

    def show(spec: dict[str, Any]) -> str:
        fields = ", ".join(
            f"{k[:_NAME]}={_shown(v)}" for k, v in spec.items() if k not in ("type", "layers")
        )
        text = f"{spec['type'][:_NAME]}({fields})"
        return text if len(text) <= 2 * _NAME else f"{text[: 2 * _NAME]}...)"

    def listed(specs: list[dict[str, Any]]) -> str:
        more = f" and {len(specs) - _LISTED} more" if len(specs) > _LISTED else ""
        return f"[{', '.join(show(s) for s in specs[:_LISTED])}]{more}"

    if len(saved) != len(own):
        where = f" in layer {prefix[:-1]}" if prefix else ""
        return [
            (
                f"the checkpoint has {len(saved)} layers{where}, the model {len(own)}: "
                f"checkpoint {listed(saved)}, model {listed(own)}"
            )
        ]
    problems = []
    for i, (a, b) in enumerate(zip(saved, own, strict=True)):
        label = f"layer {prefix}{i}"
        if a["type"] != b["type"]:
            problems.append(f"{label} is {show(a)} in the checkpoint but {show(b)} in the model")
        elif a["type"] == "Sequential":
            problems.extend(_architecture_differences(a["layers"], b["layers"], f"{prefix}{i}."))
        else:
            problems.extend(
                f"{label} ({a['type'][:_NAME]}): {key[:_NAME]} is {_shown(a.get(key))} in the "
                f"checkpoint, {_shown(b.get(key))} in the model"
                for key in sorted(set(a) | set(b))
                if a.get(key) != b.get(key)
            )
    return problems
