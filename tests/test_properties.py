"""Properties of random networks, on every backend, drawn by Hypothesis.

Hypothesis draws the architecture (depth, widths, biases, activations, an optional
activation before the first layer and after the last), the batch size (1 included),
the dtype, the loss and its reduction, and a seed for the data and the weights.  Each
property runs once per backend through the ``backend`` / ``backend64`` fixtures of
``conftest.py``, which skip a backend that cannot run here with its reason.

The properties:

1. every output, loss and gradient has the expected shape, dtype and device, and is
   finite; optimizer steps keep every parameter's shape, dtype and device;
2. :func:`portprop.gradcheck` passes in float64;
3. forward and backward are deterministic, and parameter gradients accumulate;
4. a row's output and input gradient do not depend on the other rows of its batch, and
   the parameter gradients of a summed loss are the sum of the per-sample gradients;
5. ``reduction="sum"`` is ``count * reduction="mean"``, where ``count`` is what
   :mod:`portprop.losses` documents: every element for MSE and BCE, samples for
   cross-entropy.

How the tests are laid out: each test takes the fixture and runs a property that
Hypothesis drives, ``@given`` inside the test, because what is worth drawing depends
on the backend.  JAX compiles every operation anew for every new shape (about 1.7 s for
the forward and backward pass of a new 3-layer network here, against 2 ms once
compiled), so random widths from 1 to 12 would spend minutes compiling.  On JAX the
widths and batch sizes are therefore drawn from a small pool (1 included), and the
compiled kernels are reused from one example to the next; every other backend draws
every size.  The dtypes drawn are those the backend has.

Settings, shared by every property here:

- ``derandomize=True``: the examples are a function of the property and its
  strategies alone, so every run (and every CI job) checks the same examples (the same
  on every backend that draws every size), and a failure reproduces anywhere.  It implies no example database, so nothing is written to
  ``.hypothesis/``.  Variety comes from more examples instead: set
  ``PORTPROP_HYPOTHESIS_EXAMPLES`` (read once, when this module is imported) for a
  longer run.
- ``deadline=None``: the first call of a shape may compile, so the time of one example
  says nothing.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import portprop as pp

# ---- settings --------------------------------------------------------------------------

EXAMPLES_ENV_VAR = "PORTPROP_HYPOTHESIS_EXAMPLES"
_DEFAULT_EXAMPLES = 20


def _examples_from_env() -> int:
    raw = os.environ.get(EXAMPLES_ENV_VAR, "").strip()
    if not raw:
        return _DEFAULT_EXAMPLES
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        msg = f"{EXAMPLES_ENV_VAR} must be a positive integer (examples per test), got {raw!r}"
        raise ValueError(msg)
    return count


EXAMPLES = _examples_from_env()


def _settings(share: float = 1.0) -> settings:
    """The settings of a property: ``share`` of :data:`EXAMPLES` (at least one)."""
    return settings(max_examples=max(1, round(EXAMPLES * share)), deadline=None, derandomize=True)


# ---- what Hypothesis draws -------------------------------------------------------------

KINKED = (pp.ReLU, pp.LeakyReLU)  # not differentiable at 0
MAX_WIDTH, MAX_BATCH = 12, 9

# Libraries that compile each operation for each new shape, and the sizes drawn there.
_SIZE_POOLS: dict[str, tuple[int, ...]] = {"jax": (1, 4)}


@dataclass(frozen=True)
class Sizes:
    """The widths and batch sizes drawn on one backend: every size, or a pool."""

    pool: tuple[int, ...] | None = None

    def between(self, low: int, high: int) -> st.SearchStrategy[int]:
        if self.pool is None:
            return st.integers(low, high)
        inside = [n for n in self.pool if low <= n <= high]
        assert inside, f"no size of the pool {self.pool} lies in [{low}, {high}]"
        return st.sampled_from(inside)


def _sizes(backend: pp.Backend) -> Sizes:
    return Sizes(_SIZE_POOLS.get(backend.library))


def _dtypes(backend: pp.Backend) -> st.SearchStrategy[str]:
    return st.sampled_from([d for d in ("float32", "float64") if backend.supports(d)])


@dataclass(frozen=True)
class Act:
    """An activation: its name and, for ``leaky_relu`` and ``dropout``, its parameter
    (the negative slope, or the probability of zeroing)."""

    name: str
    param: float = 0.0

    def make(self, backend: pp.Backend, dtype: str, seed: int) -> pp.Module:
        kw: dict[str, Any] = {"backend": backend, "dtype": dtype}
        if self.name == "leaky_relu":
            return pp.LeakyReLU(self.param, **kw)
        if self.name == "dropout":
            return pp.Dropout(self.param, seed=seed, **kw)
        simple: dict[str, Callable[..., pp.Module]] = {
            "identity": pp.Identity,
            "tanh": pp.Tanh,
            "sigmoid": pp.Sigmoid,
            "relu": pp.ReLU,
        }
        return simple[self.name](**kw)


@dataclass(frozen=True)
class Arch:
    """A multilayer perceptron: ``Linear(widths[i], widths[i + 1], bias=biases[i])``
    followed by ``activations[i]`` (``None``: nothing) for each layer, after an optional
    ``leading`` activation.  Weights and dropout masks are seeded from ``seed``."""

    widths: tuple[int, ...]
    activations: tuple[Act | None, ...]
    biases: tuple[bool, ...]
    leading: Act | None = None
    seed: int = 0

    @property
    def in_features(self) -> int:
        return self.widths[0]

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    @property
    def has_dropout(self) -> bool:
        acts = (self.leading, *self.activations)
        return any(a is not None and a.name == "dropout" for a in acts)

    def build(self, backend: pp.Backend, dtype: str) -> pp.Sequential:
        layers: list[pp.Module] = []
        if self.leading is not None:
            layers.append(self.leading.make(backend, dtype, self.seed))
        for i, act in enumerate(self.activations):
            layers.append(
                pp.Linear(
                    self.widths[i],
                    self.widths[i + 1],
                    bias=self.biases[i],
                    seed=self.seed + i,
                    backend=backend,
                    dtype=dtype,
                )
            )
            if act is not None:
                layers.append(act.make(backend, dtype, self.seed + 1 + i))
        return pp.Sequential(*layers)


def activations() -> st.SearchStrategy[Act]:
    """Any activation, each as likely; LeakyReLU's slope in [0, 1], Dropout's p in
    [0, 0.9]."""
    return st.one_of(
        *(st.just(Act(name)) for name in ("identity", "tanh", "sigmoid", "relu")),
        st.builds(Act, st.just("leaky_relu"), st.floats(0.0, 1.0)),
        st.builds(Act, st.just("dropout"), st.floats(0.0, 0.9)),
    )


@st.composite
def architectures(
    draw: st.DrawFn, sizes: Sizes, *, max_depth: int = 4, max_width: int = MAX_WIDTH
) -> Arch:
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(sizes.between(1, max_width), min_size=depth + 1, max_size=depth + 1))
    act = activations()
    hidden = [draw(act) for _ in range(depth - 1)]
    last = draw(st.none() | act)
    leading = draw(st.none() | act)
    biases = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    seed = draw(st.integers(0, 2**32 - 1))
    return Arch(tuple(widths), (*hidden, last), tuple(biases), leading, seed)


@dataclass(frozen=True)
class LossSpec:
    """A loss type and reduction; :meth:`make` builds a fresh (stateful) loss."""

    kind: type[pp.Loss]
    reduction: str

    def make(self) -> pp.Loss:
        return self.kind(reduction=self.reduction)

    def count(self, batch: int, outputs: int) -> int:
        """What ``"mean"`` divides by, as losses.py documents it."""
        return batch if self.kind is pp.CrossEntropyLoss else batch * outputs


LOSS_TYPES = (pp.MSELoss, pp.CrossEntropyLoss, pp.BCEWithLogitsLoss)
losses = st.builds(LossSpec, st.sampled_from(LOSS_TYPES), st.sampled_from(("mean", "sum")))
seeds = st.integers(0, 2**32 - 1)

# Batch 1 is among the sizes drawn; this network makes sure it runs on every run, with
# one feature in and out (the smallest network there is).
_ONE_BY_ONE = Arch(widths=(1, 1), activations=(None,), biases=(True,))

# ---- helpers ---------------------------------------------------------------------------


def _data(
    backend: pp.Backend,
    dtype: str,
    loss: LossSpec,
    batch: int,
    in_features: int,
    out_features: int,
    seed: int,
    scale: float = 1.0,
) -> tuple[Any, Any]:
    """A standard normal input ``(batch, in_features)`` times ``scale`` and a target
    that suits ``loss``, drawn on the host and moved to ``backend``."""
    rng = np.random.default_rng(seed)
    X = backend.from_host(scale * rng.standard_normal((batch, in_features)), dtype)
    if loss.kind is pp.CrossEntropyLoss:
        target = backend.asarray(rng.integers(0, out_features, size=batch))
    elif loss.kind is pp.BCEWithLogitsLoss:
        target = backend.from_host(rng.uniform(0.0, 1.0, size=(batch, out_features)), dtype)
    else:
        target = backend.from_host(rng.standard_normal((batch, out_features)), dtype)
    return X, target


def _assert_array(
    x: Any, backend: pp.Backend, shape: tuple[int, ...], dtype: Any, what: str
) -> None:
    """``x`` is a finite array of ``backend`` (its library and device), ``shape`` and
    ``dtype``."""
    assert backend.owns(x), f"{what} is not an array of {backend.name}: {type(x)}"
    assert tuple(x.shape) == shape, f"{what} has shape {tuple(x.shape)}, expected {shape}"
    assert x.dtype == dtype, f"{what} has dtype {x.dtype}, expected {dtype}"
    assert np.all(np.isfinite(to_numpy(x))), f"{what} is not finite"


def _tolerance(dtype: str) -> float:
    """Relative tolerance for results that may be summed in another order."""
    return 1e-5 if dtype == "float32" else 1e-12


def _deterministic_mode(model: pp.Module, arch: Arch) -> None:
    """Training mode, unless the model has dropout, whose masks are random: then
    evaluation mode (in which dropout is the identity)."""
    model.train(not arch.has_dropout)


def _forward_backward(model: pp.Module, crit: pp.Loss, X: Any, target: Any) -> Any:
    """One forward and backward pass; returns the input gradient."""
    crit.forward(model.forward(X), target)
    return model.backward(crit.backward())


def _grads(model: pp.Module) -> dict[str, np.ndarray]:
    """Host copies of every parameter gradient, by name."""
    out = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        out[name] = to_numpy(p.grad)
    return out


# ---- 1. shapes, dtypes and devices -----------------------------------------------------


def test_shapes_dtypes_and_devices(backend: pp.Backend) -> None:
    sizes = _sizes(backend)

    @_settings()
    @given(
        arch=architectures(sizes),
        batch=sizes.between(1, MAX_BATCH),
        dtype=_dtypes(backend),
        loss=losses,
        seed=seeds,
    )
    @example(arch=_ONE_BY_ONE, batch=1, dtype="float32", loss=LossSpec(pp.MSELoss, "mean"), seed=0)
    @example(
        arch=Arch((4, 1, 4), (Act("dropout", 0.5), Act("relu")), (True, False), Act("tanh")),
        batch=1,
        dtype="float32",
        loss=LossSpec(pp.CrossEntropyLoss, "sum"),
        seed=1,
    )
    def check(arch: Arch, batch: int, dtype: str, loss: LossSpec, seed: int) -> None:
        model = arch.build(backend, dtype)
        expected = backend.float_dtype(dtype)
        assert model.dtype == expected
        crit = loss.make()
        X, target = _data(backend, dtype, loss, batch, arch.in_features, arch.out_features, seed)

        out = model.forward(X)
        _assert_array(out, backend, (batch, arch.out_features), expected, "output")
        value = crit.forward(out, target)
        _assert_array(value, backend, (), expected, "loss")
        grad_out = crit.backward()
        _assert_array(grad_out, backend, (batch, arch.out_features), expected, "loss gradient")
        dX = model.backward(grad_out)
        _assert_array(dX, backend, (batch, arch.in_features), X.dtype, "input gradient")

        assert len(model.parameters()) == len(arch.activations) + sum(arch.biases)
        for name, p in model.named_parameters():
            _assert_array(p.data, backend, p.shape, expected, name)
            assert p.grad is not None, f"{name} has no gradient"
            _assert_array(p.grad, backend, p.shape, p.data.dtype, f"gradient of {name}")

    check()


@st.composite
def optimizer_configs(draw: st.DrawFn) -> tuple[tuple[str, dict[str, Any]], ...]:
    """One configuration of each optimizer: (name, keyword arguments).

    The learning rates are small: a summed loss behind dropout can have large
    gradients, and a plain SGD step of 0.1 then overflows float32 within two steps,
    which is divergence, not a dtype problem.
    """
    decay = st.sampled_from((0.0, 0.01))
    sgd_momentum = draw(st.sampled_from((0.0, 0.9)))
    sgd = {
        "lr": 1e-3,
        "momentum": sgd_momentum,
        "nesterov": sgd_momentum > 0 and draw(st.booleans()),
        "weight_decay": draw(decay),
    }
    adam = {"lr": 1e-3, "weight_decay": draw(decay), "amsgrad": draw(st.booleans())}
    adamw = {"lr": 1e-3, "weight_decay": draw(decay), "amsgrad": draw(st.booleans())}
    rmsprop = {
        "lr": 1e-3,
        "momentum": draw(st.sampled_from((0.0, 0.5))),
        "centered": draw(st.booleans()),
        "weight_decay": draw(decay),
    }
    return (("SGD", sgd), ("Adam", adam), ("AdamW", adamw), ("RMSprop", rmsprop))


def test_optimizer_steps_keep_shape_dtype_and_device(backend: pp.Backend) -> None:
    sizes = _sizes(backend)

    @_settings()
    @given(
        arch=architectures(sizes),
        batch=sizes.between(1, MAX_BATCH),
        dtype=_dtypes(backend),
        loss=losses,
        seed=seeds,
        optimizers=optimizer_configs(),
    )
    def check(
        arch: Arch,
        batch: int,
        dtype: str,
        loss: LossSpec,
        seed: int,
        optimizers: tuple[tuple[str, dict[str, Any]], ...],
    ) -> None:
        expected = backend.float_dtype(dtype)
        crit = loss.make()
        X, target = _data(backend, dtype, loss, batch, arch.in_features, arch.out_features, seed)

        for name, kwargs in optimizers:
            model = arch.build(backend, dtype)  # each optimizer starts from the same weights
            shapes = {pname: p.shape for pname, p in model.named_parameters()}
            opt = getattr(pp, name)(model.parameters(), **kwargs)
            for step in (1, 2):  # the second step also updates the buffers of the first
                opt.zero_grad()
                _forward_backward(model, crit, X, target)
                opt.step()
                where = f"after {name}({kwargs}) step {step}"
                for (pname, p), state in zip(model.named_parameters(), opt.state, strict=True):
                    _assert_array(p.data, backend, shapes[pname], expected, f"{pname} {where}")
                    # The buffers (exp_avg, momentum_buffer, ...) must not drift either:
                    # an in-place update would hide a float64 buffer in a float32 weight.
                    for key in type(opt)._BUFFERS:
                        if state.get(key) is not None:
                            what = f"{key} of {pname} {where}"
                            _assert_array(state[key], backend, shapes[pname], expected, what)
            assert model.dtype == expected
            out = model.forward(X)
            _assert_array(out, backend, (batch, arch.out_features), expected, f"output {where}")

    check()


# ---- 2. gradcheck in float64 -----------------------------------------------------------

# Finite differences step by 1e-6 (gradcheck's eps).  In these small networks (inputs
# of a few units, weights below 1, widths up to 5) that moves a pre-activation by about
# 1e-5 at most.  A draw with a pre-activation closer than KINK_MARGIN to the kink of
# ReLU or LeakyReLU, where a finite difference legitimately disagrees with the
# one-sided derivative, is rejected with assume().
KINK_MARGIN = 1e-3


def _distance_to_kinks(model: pp.Sequential, X: Any) -> float:
    """The smallest ``|s|`` over every input ``s`` of a ReLU or LeakyReLU, in evaluation
    mode (as gradcheck runs), or ``inf`` when there is none."""
    probe = copy.deepcopy(model).eval()
    closest = math.inf
    h = X
    for layer in probe:
        if isinstance(layer, KINKED):
            closest = min(closest, float(np.min(np.abs(to_numpy(h)))))
        h = layer.forward(h)
    return closest


def test_gradcheck_passes_in_float64(backend64: pp.Backend) -> None:
    sizes = _sizes(backend64)

    @_settings(share=0.75)
    @given(
        arch=architectures(sizes, max_depth=3, max_width=5),
        batch=sizes.between(1, 4),
        loss=losses,
        seed=seeds,
        mode=st.sampled_from(("full", "random")),
    )
    @example(
        arch=_ONE_BY_ONE, batch=1, loss=LossSpec(pp.BCEWithLogitsLoss, "mean"), seed=0, mode="full"
    )
    def check(arch: Arch, batch: int, loss: LossSpec, seed: int, mode: str) -> None:
        # The model stays in training mode: gradcheck must switch its copy to evaluation
        # mode, where dropout is the identity.
        model = arch.build(backend64, "float64")
        X, target = _data(
            backend64, "float64", loss, batch, arch.in_features, arch.out_features, seed
        )
        assume(_distance_to_kinks(model, X) > KINK_MARGIN)

        result = pp.gradcheck(model, loss.make(), X, target, mode=mode, directions=4)

        assert result.passed, str(result)
        names = [name for name, _ in model.named_parameters()]
        assert [row.name for row in result.rows] == [*names, "input"]

    check()


# ---- 3. determinism and accumulation ---------------------------------------------------


def test_forward_and_backward_are_deterministic(backend: pp.Backend) -> None:
    sizes = _sizes(backend)

    @_settings()
    @given(
        arch=architectures(sizes),
        batch=sizes.between(1, MAX_BATCH),
        dtype=_dtypes(backend),
        loss=losses,
        seed=seeds,
    )
    @example(arch=_ONE_BY_ONE, batch=1, dtype="float32", loss=LossSpec(pp.MSELoss, "sum"), seed=0)
    def check(arch: Arch, batch: int, dtype: str, loss: LossSpec, seed: int) -> None:
        model = arch.build(backend, dtype)
        _deterministic_mode(model, arch)
        crit = loss.make()
        X, target = _data(backend, dtype, loss, batch, arch.in_features, arch.out_features, seed)
        X_before, target_before = to_numpy(X), to_numpy(target)

        first = to_numpy(model.forward(X))
        np.testing.assert_array_equal(to_numpy(model.forward(X)), first, err_msg="output")

        model.zero_grad()
        dX = to_numpy(_forward_backward(model, crit, X, target))
        grads = _grads(model)
        model.zero_grad()
        again = to_numpy(_forward_backward(model, crit, X, target))
        np.testing.assert_array_equal(again, dX, err_msg="input gradient")
        for name, g in _grads(model).items():
            np.testing.assert_array_equal(g, grads[name], err_msg=f"gradient of {name}")

        # Without zero_grad the parameter gradients add up.  The pass is deterministic
        # (as just checked), so the sum is g + g, which is exactly 2 g in floating
        # point.  The input gradient is returned, never accumulated.
        again = to_numpy(_forward_backward(model, crit, X, target))
        np.testing.assert_array_equal(again, dX, err_msg="input gradient")
        for name, g in _grads(model).items():
            np.testing.assert_array_equal(g, 2 * grads[name], err_msg=f"accumulated {name}")

        # Nothing was written into the caller's arrays.
        np.testing.assert_array_equal(to_numpy(X), X_before, err_msg="X changed")
        np.testing.assert_array_equal(to_numpy(target), target_before, err_msg="target changed")

    check()


# ---- 4. batch independence -------------------------------------------------------------


def test_rows_do_not_depend_on_their_batch(backend: pp.Backend) -> None:
    sizes = _sizes(backend)

    @_settings()
    @given(
        arch=architectures(sizes),
        batch=sizes.between(2, MAX_BATCH),
        dtype=_dtypes(backend),
        kind=st.sampled_from(LOSS_TYPES),
        seed=seeds,
    )
    def check(arch: Arch, batch: int, dtype: str, kind: type[pp.Loss], seed: int) -> None:
        model = arch.build(backend, dtype)
        _deterministic_mode(model, arch)
        loss = LossSpec(kind, "sum")  # the lecture's sum over samples: additive over rows
        crit = loss.make()
        X, target = _data(backend, dtype, loss, batch, arch.in_features, arch.out_features, seed)
        rtol = _tolerance(dtype)

        out = to_numpy(model.forward(X))
        model.zero_grad()
        dX = to_numpy(_forward_backward(model, crit, X, target))
        batch_grads = _grads(model)
        out_atol = rtol * (1 + np.max(np.abs(out)))
        dX_atol = rtol * (1 + np.max(np.abs(dX)))

        total = {name: np.zeros(g.shape) for name, g in batch_grads.items()}
        magnitude = {name: np.zeros(g.shape) for name, g in batch_grads.items()}
        for i in range(batch):
            row, row_target = X[i : i + 1, :], target[i : i + 1, ...]
            alone = to_numpy(model.forward(row))
            np.testing.assert_allclose(
                alone[0], out[i], rtol=rtol, atol=out_atol, err_msg=f"output of row {i}"
            )
            model.zero_grad()
            dx = to_numpy(_forward_backward(model, crit, row, row_target))
            np.testing.assert_allclose(
                dx[0], dX[i], rtol=rtol, atol=dX_atol, err_msg=f"input gradient of row {i}"
            )
            for name, g in _grads(model).items():
                total[name] += g
                magnitude[name] += np.abs(g)

        # The gradient of a sum over samples is the sum of the per-sample gradients; the
        # tolerance scales with the terms summed, which may cancel.
        for name, g in batch_grads.items():
            np.testing.assert_allclose(
                g,
                total[name],
                rtol=rtol,
                atol=rtol * (1 + np.max(magnitude[name])),
                err_msg=f"gradient of {name}",
            )

    check()


# ---- 5. reductions ---------------------------------------------------------------------


def test_sum_is_count_times_mean(backend: pp.Backend) -> None:
    sizes = _sizes(backend)

    @_settings()
    @given(
        kind=st.sampled_from(LOSS_TYPES),
        batch=sizes.between(1, MAX_BATCH),
        outputs=sizes.between(1, MAX_WIDTH),
        dtype=_dtypes(backend),
        seed=seeds,
        scale=st.floats(0.01, 10.0),
    )
    @example(kind=pp.MSELoss, batch=1, outputs=4, dtype="float32", seed=0, scale=1.0)
    def check(
        kind: type[pp.Loss], batch: int, outputs: int, dtype: str, seed: int, scale: float
    ) -> None:
        mean, total = LossSpec(kind, "mean"), LossSpec(kind, "sum")
        # pred plays a model's output (batch, outputs); the scale gives the
        # cross-entropy and BCE confident and unsure logits alike.
        pred, target = _data(backend, dtype, mean, batch, outputs, outputs, seed, scale)
        count = mean.count(batch, outputs)
        rtol = _tolerance(dtype)

        by_mean, by_sum = mean.make(), total.make()
        mean_value = float(to_numpy(by_mean.forward(pred, target)))
        sum_value = float(to_numpy(by_sum.forward(pred, target)))
        assert sum_value == pytest.approx(count * mean_value, rel=rtol, abs=0.0)

        mean_grad = to_numpy(by_mean.backward()).astype(np.float64)
        sum_grad = to_numpy(by_sum.backward())
        np.testing.assert_allclose(
            sum_grad, count * mean_grad, rtol=rtol, atol=rtol * np.max(np.abs(sum_grad))
        )

    check()
