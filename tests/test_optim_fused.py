"""Multi-tensor optimizer updates (``Backend.multi_update``): the same results as the
update of one parameter at a time, agreement with torch.optim's ``foreach=True`` path,
and, on NumPy, updates in place that keep no parameter-sized buffer between steps."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import to_numpy

import portprop as pp

CASES = [
    ("SGD", {}),
    ("SGD", {"weight_decay": 0.1}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    ("SGD", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"weight_decay": 0.3}),
    ("AdamW", {"amsgrad": True, "betas": (0.5, 0.8), "eps": 1e-3}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.8}),
]

KIND = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "RMSprop": "rmsprop"}

# A parameter larger than the NumPy kernels' chunk (made 1024 elements here; it is
# 2**18), and not a multiple of it, a matrix and a vector.
SHAPES = [(60, 50), (3, 4), (7,)]
CHUNK = 1024


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """NumPy's kernels update large parameters a chunk at a time: make small ones large."""
    from portprop.backend import numpy as numpy_backend

    monkeypatch.setattr(numpy_backend, "_CHUNK", CHUNK)


def _case_id(case):
    name, options = case
    return name + "".join(f",{k}={v}" for k, v in options.items())


def _one_at_a_time(name):
    """The optimizer ``name`` with its multi-tensor kernel turned off."""
    return type(f"{name}OneAtATime", (getattr(pp, name),), {"_MULTI_UPDATE": None})


def _params(backend, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [pp.Parameter(backend.from_host(rng.normal(size=s), dtype)) for s in SHAPES]


def _grads(steps, seed=1):
    """Per step, a gradient for each parameter; the vector has none at step 2."""
    rng = np.random.default_rng(seed)
    return [
        [None if (k == 2 and len(s) == 1) else rng.normal(size=s) for s in SHAPES]
        for k in range(steps)
    ]


def _run(opt, backend, dtype, grads):
    for step in grads:
        for p, g in zip(opt.params, step, strict=True):
            p.grad = None if g is None else backend.from_host(g, dtype)
        opt.step()


def _has_kernel(backend, name):
    if backend.multi_update(KIND[name]) is None:
        pytest.skip(f"{backend.name} has no multi-tensor kernels: it updates one at a time")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_multi_tensor_equals_one_at_a_time(backend, case, dtype):
    name, options = case
    _has_kernel(backend, name)
    if not backend.supports(dtype):
        pytest.skip(f"{backend.name} has no {dtype} here")
    fused = getattr(pp, name)(_params(backend, dtype), lr=0.05, **options)
    single = _one_at_a_time(name)(_params(backend, dtype), lr=0.05, **options)
    grads = _grads(5)
    _run(fused, backend, dtype, grads)
    _run(single, backend, dtype, grads)
    assert fused._kernel is not None
    assert single._kernel is None
    # On the CPU the kernels run the same operations in the same order: the same bits.
    # On a GPU a fused kernel may contract a multiply and an add (one rounding less).
    exact = backend.library in ("numpy", "torch") and "cuda" not in backend.name
    for p, q in zip(fused.params, single.params, strict=True):
        assert backend.owns(p.data)
        assert pp.get_backend(p.data).float_dtype(dtype) == p.data.dtype
        if exact:
            np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data))
        else:
            tol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(to_numpy(p.data), to_numpy(q.data), rtol=tol, atol=tol)
    a, b = fused.state_dict()["state"], single.state_dict()["state"]
    for s, t in zip(a, b, strict=True):
        assert s.keys() == t.keys()
        assert s["step"] == t["step"]
        for key in s.keys() - {"step"}:
            if exact:
                np.testing.assert_array_equal(to_numpy(s[key]), to_numpy(t[key]))
            else:
                np.testing.assert_allclose(to_numpy(s[key]), to_numpy(t[key]), rtol=1e-5)


def _ulps(a, b):
    """The largest distance between ``a`` and ``b`` in units in the last place of the
    largest ``|b|`` (near-zero elements, left by cancellation, differ in more of their
    own last places)."""
    scale = np.spacing(np.abs(b).max())
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / scale)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_torch_multi_tensor_matches_torch_optim_foreach(case):
    torch = pytest.importorskip("torch")
    name, options = case
    backend = pp.get_backend(backend="torch:cpu")
    params = _params(backend, "float32")
    opt = getattr(pp, name)(params, lr=0.05, **options)
    tparams = [torch.nn.Parameter(p.data.clone()) for p in params]
    topt = getattr(torch.optim, name)(tparams, lr=0.05, foreach=True, **options)
    for step in _grads(5):
        for p, t, g in zip(params, tparams, step, strict=True):
            p.grad = None if g is None else backend.from_host(g, "float32")
            t.grad = None if g is None else p.grad.clone()
        opt.step()
        topt.step()
    assert opt._kernel is not None
    for p, t in zip(params, tparams, strict=True):
        assert p.data.dtype == torch.float32
        # torch.optim writes w - lr (g + wd w) where portprop writes (1 - lr wd) w - lr g,
        # and uses addcmul/addcdiv (one rounding less): after 5 steps, measured at most
        # 12 units in the last place of the largest weight (0 for SGD without decay)
        distance = _ulps(p.data.numpy(), t.detach().numpy())
        assert distance <= 16, distance
        if name == "SGD" and not options.get("weight_decay"):
            assert distance == 0


# ---- NumPy: in place, no parameter-sized buffer kept or made --------------------------


def _numpy_params():
    rng = np.random.default_rng(3)
    big = rng.normal(size=(400, 300))  # 120 000 elements: updated in 118 chunks
    return [
        pp.Parameter(big),
        pp.Parameter(np.asfortranarray(rng.normal(size=(40, 30)))),
        pp.Parameter(rng.normal(size=300)),
    ]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_numpy_updates_in_place_without_parameter_sized_buffers(case):
    name, options = case
    params = _numpy_params()
    opt = getattr(pp, name)(params, lr=0.01, **options)
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=p.shape) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()  # the first step makes the optimizer's buffers
    arrays = [p.data for p in params]
    pointers = [a.__array_interface__["data"][0] for a in arrays]
    buffers = {
        (i, key): v
        for i, s in enumerate(opt.state)
        for key, v in s.items()
        if isinstance(v, np.ndarray) and key != "data"
    }
    assert all(s["scratch"] is None for s in opt.state)
    before = [a.copy() for a in arrays]
    tracemalloc.start()
    try:
        opt.step()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    smallest_big = params[0].data.nbytes
    # Nothing parameter-sized is allocated during the step (it would show in the peak),
    # and nothing survives it; the kernels' chunk buffers were made at the first step.
    assert peak < smallest_big // 4, peak
    assert kept < 64 * 1024, kept
    for p, a, ptr, old in zip(params, arrays, pointers, before, strict=True):
        assert p.data is a
        assert a.__array_interface__["data"][0] == ptr
        assert not np.array_equal(a, old)  # it was updated
    for (i, key), v in buffers.items():
        assert opt.state[i][key] is v  # the optimizer's buffers are updated in place too
    # what the kernel keeps: flat chunk buffers (and views of them)
    work = sum(t.nbytes for v in opt._work.values() for t in v if t.base is None)
    assert work <= 2 * CHUNK * 8  # two chunk buffers of float64 at most


def test_one_at_a_time_kept_a_parameter_sized_scratch_buffer():
    # the reference of the test above: without the kernel, SGD keeps a scratch buffer
    # the size of each parameter between steps
    params = _numpy_params()
    opt = _one_at_a_time("SGD")(params, lr=0.01)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    assert all(s["scratch"].shape == p.shape for s, p in zip(opt.state, params, strict=True))


def test_apply_is_the_unchecked_update(backend):
    # portprop.compile_step calls Optimizer._apply(params, states) directly
    params = _params(backend, "float32")
    twin = _params(backend, "float32")
    opt, ref = pp.Adam(params, lr=0.1), pp.Adam(twin, lr=0.1)
    for step in _grads(3):
        for p, q, g in zip(params, twin, step, strict=True):
            p.grad = q.grad = None if g is None else backend.from_host(g, "float32")
        opt.step()
        if ref.state[0]:
            ref._apply(ref.params, ref.state)
        else:  # the first step checks the parameters and makes the buffers
            ref.step()
    for p, q in zip(params, twin, strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "RMSprop"], ids=_case_id)
def test_torch_fused_kernels_agree_with_multi_tensor(case, dtype, monkeypatch):
    # torch._fused_sgd_ / _fused_adam_ run on CUDA; here they are made to run on the CPU,
    # where torch has them too, to check the call and the math against the _foreach_ path
    pytest.importorskip("torch")
    from portprop.backend import torch as torch_backend

    name, options = case
    backend = pp.get_backend(backend="torch:cpu")
    results = []
    for devices in (("cuda",), ("cuda", "cpu")):
        monkeypatch.setattr(torch_backend, "FUSED_DEVICES", devices)
        params = _params(backend, dtype)
        opt = getattr(pp, name)(params, lr=0.05, **options)
        for step in _grads(5):
            for p, g in zip(params, step, strict=True):
                p.grad = None if g is None else backend.from_host(g, dtype)
            copies = [None if p.grad is None else p.grad.clone() for p in params]
            opt.step()
            for p, g in zip(params, copies, strict=True):
                assert g is None or bool((p.grad == g).all())  # gradients are left alone
        results.append([p.data.numpy() for p in params])
    tol = 1e-5 if dtype == "float32" else 1e-13
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
