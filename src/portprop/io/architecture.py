"""A model's architecture: the layer specs a checkpoint records, and models built from them.

A spec is a JSON object per layer (``{"type": "Linear", "in_features": 2,
"out_features": 25, "bias": true}``, ``{"type": "ReLU"}``, ``{"type": "Sequential",
"layers": [...]}``).  This module describes a model as specs, checks specs read from a
file, computes the parameter shapes they imply, rebuilds layers from them, lists how
two architectures differ and names a model's layers (``"0"``, ``"2.1"``);
:mod:`portprop.io.checkpoint` is its only user, and it has no public names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypeGuard

from portprop import layers as _layers
from portprop.backend import Backend
from portprop.io.safetensors import _is_int, _json_type
from portprop.module import Module, Sequential

__all__: list[str] = []

_MAX_NESTING = 32  # Sequential within Sequential


def _layer_spec(layer: Module) -> dict[str, Any]:
    kind = type(layer).__name__
    if isinstance(layer, Sequential):
        return {"type": "Sequential", "layers": [_layer_spec(child) for child in layer]}
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
    elif kind == "Sequential":
        children = spec.get("layers")
        if not isinstance(children, list) or not children:
            return f"{where} (Sequential) needs a non-empty list 'layers'"
        for i, child in enumerate(children):
            problem = _spec_problem(child, f"{where}.{i}", depth + 1)
            if problem:
                return problem
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
        elif kind == "Sequential":
            shapes.update(_expected_shapes(spec["layers"], name))
        elif kind not in _REBUILDABLE:
            msg = (
                f"it holds a layer of type {kind!r}, which portprop cannot rebuild; build the "
                "model yourself and restore it with portprop.load_into(path, model)"
            )
            raise _Unbuildable(msg)
    return shapes


_REBUILDABLE = frozenset(("Tanh", "ReLU", "Sigmoid", "LeakyReLU", "Identity", "Dropout"))


def _build_layer(spec: dict[str, Any], backend: Backend, dtype: Any) -> Module:
    kind = spec["type"]
    kw: dict[str, Any] = {"backend": backend, "dtype": dtype}
    if kind == "Linear":
        # seed=0: the weights are overwritten at once; the global generator stays as is
        return _layers.Linear(
            spec["in_features"], spec["out_features"], bias=spec["bias"], seed=0, **kw
        )
    if kind == "LeakyReLU":
        return _layers.LeakyReLU(float(spec["negative_slope"]), **kw)
    if kind == "Sequential":
        return Sequential(*(_build_layer(child, backend, dtype) for child in spec["layers"]))
    simple: dict[str, Any] = {
        "Tanh": _layers.Tanh,
        "ReLU": _layers.ReLU,
        "Sigmoid": _layers.Sigmoid,
        "Identity": _layers.Identity,
    }
    if kind in simple:
        layer: Module = simple[kind](**kw)
        return layer
    if kind == "Dropout":
        return _layers.Dropout(float(spec["p"]), **kw)
    msg = f"it holds a layer of type {kind!r}, which portprop cannot rebuild"
    raise _Unbuildable(msg)


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
        fields = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k not in ("type", "layers"))
        return f"{spec['type']}({fields})"

    if len(saved) != len(own):
        where = f" in layer {prefix[:-1]}" if prefix else ""
        return [
            (
                f"the checkpoint has {len(saved)} layers{where}, the model {len(own)}: "
                f"checkpoint [{', '.join(show(s) for s in saved)}], "
                f"model [{', '.join(show(s) for s in own)}]"
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
                f"{label} ({a['type']}): {key} is {a.get(key)!r} in the checkpoint, "
                f"{b.get(key)!r} in the model"
                for key in sorted(set(a) | set(b))
                if a.get(key) != b.get(key)
            )
    return problems
