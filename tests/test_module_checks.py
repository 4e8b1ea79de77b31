"""load_state_dict checks every value before it loads any (issue 8).

A value must be an array (or a :class:`~portprop.Parameter`) of a real dtype, integer
or floating, of its parameter's shape; anything else is a :class:`~portprop.StateDictError`
that names the key, what was expected and what came, and nothing is loaded.  Values
come in through ``Backend.asarray``: a parameter never carries autograd history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import load_backend, to_numpy

import portprop as pp
from portprop.io import from_torch_state_dict


def _net(backend: Any, seed: int = 0) -> pp.Sequential:
    pp.manual_seed(seed)
    return pp.Sequential(
        pp.Linear(3, 4, backend=backend), pp.ReLU(), pp.Linear(4, 2, backend=backend)
    )


def _snapshot(model: pp.Module) -> dict[str, np.ndarray]:
    return {k: to_numpy(v).copy() for k, v in model.state_dict().items()}


def _assert_unchanged(model: pp.Module, before: dict[str, np.ndarray]) -> None:
    after = _snapshot(model)
    for k, value in before.items():
        np.testing.assert_array_equal(after[k], value, err_msg=k)


def _donor(backend: pp.Backend) -> dict[str, Any]:
    """A valid state dict on ``backend``, different from ``_net(backend)``'s."""
    return dict(_net(backend, seed=1).state_dict())


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ([[0.0] * 3] * 4, "an object of type list"),
        (None, "an object of type NoneType"),
        ("weights", "an object of type str"),
    ],
)
def test_non_arrays_are_refused_and_nothing_loads(backend, value, got):
    model = _net(backend)
    before = _snapshot(model)
    state = _donor(backend)
    state["2.weight"] = value  # the entries before it are valid
    with pytest.raises(pp.StateDictError) as info:
        model.load_state_dict(state)
    text = str(info.value)
    assert f"2.weight: expected an array of shape (2, 4), got {got}" in text
    assert "nothing was loaded" in text
    _assert_unchanged(model, before)


@pytest.mark.parametrize("dtype", ["complex64", "bool"])
def test_arrays_of_no_real_dtype_are_refused(backend, dtype):
    model = _net(backend)
    before = _snapshot(model)
    state = _donor(backend)
    state["0.bias"] = backend.asarray(np.ones(4, dtype=dtype))
    with pytest.raises(
        pp.StateDictError,
        match=rf"0.bias: expected a real \(floating or integer\) array, got dtype {dtype}",
    ):
        model.load_state_dict(state)
    _assert_unchanged(model, before)


def test_integer_arrays_and_parameters_load(backend):
    model = _net(backend)
    state: dict[str, Any] = dict(_net(backend, seed=1).named_parameters())  # Parameters
    state["0.bias"] = np.arange(4, dtype=np.int32)
    model.load_state_dict(state)
    assert backend.owns(model[0].bias.data)
    np.testing.assert_array_equal(to_numpy(model[0].bias.data), [0, 1, 2, 3])
    np.testing.assert_array_equal(to_numpy(model[0].weight.data), to_numpy(state["0.weight"].data))
    assert model[0].weight.data is not state["0.weight"].data  # a copy


def test_a_state_dict_must_be_a_mapping():
    with pytest.raises(
        TypeError, match="state_dict must be a mapping of parameter names to arrays, got list"
    ):
        _net("numpy").load_state_dict([("0.weight", np.zeros((4, 3)))])  # type: ignore[arg-type]


def test_the_message_is_bounded():
    model = _net("numpy")
    state: dict[str, Any] = {f"extra.{i}": np.zeros(1) for i in range(100)}
    state.update(dict.fromkeys(model.state_dict()))
    with pytest.raises(pp.StateDictError) as info:
        model.load_state_dict(state)
    text = str(info.value)
    assert (
        "unexpected keys ['extra.0', 'extra.1', 'extra.2', 'extra.3', 'extra.4'] and 95 more"
        in text
    )
    assert "extra.5'" not in text
    assert len(text) < 1000


def test_from_torch_state_dict_refuses_non_tensors(backend):
    pytest.importorskip("torch")
    model = _net(backend)
    before = _snapshot(model)
    state = {k: pp.asarray(v, backend="torch:cpu") for k, v in _donor(backend).items()}
    state["0.weight"] = None
    with pytest.raises(pp.StateDictError, match=r"0\.weight: expected an array of shape"):
        from_torch_state_dict(model, state)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tensors_that_require_grad_load_without_history(dtype):
    torch = pytest.importorskip("torch")
    model = _net(load_backend("torch:cpu"))
    state = {
        k: (torch.ones(tuple(v.shape), dtype=getattr(torch, dtype), requires_grad=True) * 2)
        for k, v in model.state_dict().items()
    }
    assert all(v.grad_fn is not None for v in state.values())
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        assert p.data.grad_fn is None, name
        assert not p.data.requires_grad, name
        assert p.data.dtype == torch.float32
        np.testing.assert_array_equal(to_numpy(p.data), 2.0)
