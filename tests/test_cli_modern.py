"""``portprop train --activation gelu|silu|elu|softplus --norm layer|batch``: the modern layers
on the command line, saved and evaluated back."""

from __future__ import annotations

import pytest
from test_cli import run, table

import portprop as pp

NEW_ACTIVATIONS = {"gelu": pp.GELU, "silu": pp.SiLU, "elu": pp.ELU, "softplus": pp.Softplus}


@pytest.mark.parametrize("activation", sorted(NEW_ACTIVATIONS))
def test_new_activations_with_layer_norm_train_save_and_evaluate(backend, activation, tmp_path):
    path = tmp_path / "m.safetensors"
    status, out, err = run(
        "train", "--dataset", "disk", "--samples", "200", "--epochs", "3", "--hidden", "8,8",
        "--activation", activation, "--norm", "layer", "--backend", backend.name,
        "--save", str(path), "--verbose",
    )  # fmt: skip
    assert status == 0, err
    assert f"2 -> 8 -> 8 -> 2 ({activation}, layer norm), loss cross_entropy" in err
    model = pp.load(path).model
    kinds = [type(layer) for layer in model]
    cls = NEW_ACTIVATIONS[activation]
    assert kinds == [pp.Linear, pp.LayerNorm, cls, pp.Linear, pp.LayerNorm, cls, pp.Linear]
    assert pp.load(path).extra["training"]["norm"] == "layer"
    trained = table(out)["test"]
    status, out, err = run(
        "evaluate", str(path), "--dataset", "disk", "--samples", "200", "--backend", backend.name
    )
    assert status == 0, err
    assert table(out)["test"] == trained


def test_without_norm_the_model_has_no_layer_norm():
    status, _out, err = run(
        "train", "--dataset", "disk", "--samples", "100", "--epochs", "1", "--hidden", "4",
        "--activation", "gelu", "--verbose",
    )  # fmt: skip
    assert status == 0, err
    assert "LayerNorm" not in err
    assert "(gelu), loss" in err


def test_an_unknown_norm_is_refused_with_the_choices():
    status, _, err = run("train", "--dataset", "disk", "--norm", "batch2")
    assert status == 2
    assert "--norm" in err
    assert "'none', 'layer', 'batch'" in err


def test_batch_norm_trains_saves_and_evaluates_with_running_statistics(backend, tmp_path):
    path = tmp_path / "bn.safetensors"
    status, out, err = run(
        "train", "--dataset", "disk", "--samples", "200", "--epochs", "3", "--hidden", "8",
        "--norm", "batch", "--backend", backend.name, "--save", str(path), "--verbose",
    )  # fmt: skip
    assert status == 0, err
    assert "2 -> 8 -> 2 (relu, batch norm), loss cross_entropy" in err
    checkpoint = pp.load(path)
    kinds = [type(layer) for layer in checkpoint.model]
    assert kinds == [pp.Linear, pp.BatchNorm1d, pp.ReLU, pp.Linear]
    assert checkpoint.extra["training"]["norm"] == "batch"
    assert int(checkpoint.model[1].num_batches_tracked) > 0  # the running statistics came
    trained = table(out)["test"]
    status, out, err = run(
        "evaluate", str(path), "--dataset", "disk", "--samples", "200", "--backend", backend.name
    )
    assert status == 0, err
    assert table(out)["test"] == trained


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_trains_float32_master_weights(backend, precision, tmp_path):
    name = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    try:
        backend.float_dtype(name)
    except pp.DtypeUnsupportedError:
        pytest.skip(f"{backend.name} has no {name}")
    path = tmp_path / "m.safetensors"
    status, _out, err = run(
        "train", "--dataset", "disk", "--samples", "200", "--epochs", "3", "--hidden", "8",
        "--precision", precision, "--backend", backend.name, "--save", str(path), "--verbose",
    )  # fmt: skip
    assert status == 0, err
    assert f"computing in {name}" in err
    loaded = pp.load(path)
    assert loaded.extra["training"]["precision"] == precision
    assert {str(p.data.dtype).rsplit(".", 1)[-1] for p in loaded.model.parameters()} == {"float32"}
    assert len(loaded.extra["history"]["loss_scale"]) == 3


def test_precision_refused_where_the_backend_lacks_the_dtype(tmp_path):
    path = tmp_path / "m.safetensors"
    status, _out, err = run(
        "train", "--dataset", "disk", "--precision", "bf16", "--backend", "numpy",
        "--save", str(path),
    )  # fmt: skip
    assert status == 2
    assert "bfloat16" in err
    assert "float16" in err.replace("bfloat16", "")  # what NumPy has
    assert len(err.strip().splitlines()) == 1
    assert not path.exists()


def test_precision_needs_float32_master_weights():
    status, _, err = run("train", "--dataset", "disk", "--precision", "fp16", "--dtype", "float64")
    assert status == 2
    assert "--precision fp16 needs --dtype float32" in err
