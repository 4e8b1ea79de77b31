"""The CuPy backend (NVIDIA GPUs): array-api-compat's CuPy namespace, run inside the
device's context (its creation functions ignore ``device=``), and a Philox generator
seeded from the host for random draws."""

from __future__ import annotations

import functools  # fused optimizer steps (issue 13)
import math  # fused optimizer steps (issue 13)
from collections.abc import Callable  # fused optimizer steps (issue 13)
from typing import Any

import array_api_compat
import numpy as np

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import SEED_BOUND, BackendGenerator
from portprop.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["LIBRARY", "CupyGenerator", "add_scaled", "build", "devices", "from_device"]


def add_scaled(y: Array, alpha: float, x: Array, scratch: Array | None = None) -> Array:
    """``y += alpha * x`` in place, through ``scratch`` without allocating when given."""
    import cupy  # noqa: PLC0415

    if alpha == 1.0:
        y += x
        return y
    if scratch is None:
        y += alpha * x
        return y
    cupy.multiply(x, alpha, out=scratch)
    cupy.add(y, scratch, out=y)
    return y


# ---- fused optimizer steps (issue 13) --------------------------------------------------
# One elementwise kernel per optimizer (compiled once per set of options, then cached):
# each parameter is updated, with its buffers, in one pass over its elements.  The
# arithmetic is the optimizer's (portprop.optim), in the parameter's dtype T; the CUDA
# compiler may contract a multiply and an add into one rounding.


@functools.cache
def _kernel(name: str, params: str, outputs: str, body: str) -> Any:
    import cupy  # noqa: PLC0415

    return cupy.ElementwiseKernel(params, outputs, body, f"portprop_{name}")


def sgd_update(
    ws: list[Array],
    gs: list[Array],
    bufs: list[Array | None],
    work: dict[Any, Any],  # noqa: ARG001 - the kernels need no scratch buffer
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    dampening: float,
    nesterov: bool,
) -> list[Array | None]:
    """SGD's update of every parameter of ``ws``, in place; returns the momentum buffers
    (a new one where ``bufs`` has ``None``: the first step)."""
    import cupy  # noqa: PLC0415

    mu, wd, keep = momentum, weight_decay, 1.0 - dampening
    decay = 1.0 - lr * wd
    shrink = "ww = ww * decay;" if wd != 0.0 else ""
    if mu == 0.0:
        plain = _kernel(
            "sgd", "T g, T decay, T lr", "T w", f"T ww = w; {shrink} w = ww + (-lr) * g;"
        )
        for w, g in zip(ws, gs, strict=True):
            plain(g, decay, lr, w)
        return bufs
    decayed = "vv = vv + kwd * w;" if wd != 0.0 else ""
    step = (
        f"T ww = w; {shrink} ww = ww + (-lr) * g; w = ww + (-lrmu) * vv;"
        if nesterov
        else "w = w + (-lr) * vv;"
    )
    first = _kernel(
        f"sgd_first_{wd != 0.0}_{nesterov}",
        "T g, T mu, T kwd, T wd, T decay, T lr, T lrmu",
        "T w, T v",
        f"T vv = g; {decayed.replace('kwd', 'wd')} v = vv; {step}",
    )
    later = _kernel(
        f"sgd_later_{wd != 0.0}_{nesterov}",
        "T g, T mu, T keep, T kwd, T decay, T lr, T lrmu",
        "T w, T v",
        f"T vv = v * mu + keep * g; {decayed} v = vv; {step}",
    )
    out: list[Array | None] = []
    for w, g, v in zip(ws, gs, bufs, strict=True):
        if v is None:
            fresh = cupy.empty_like(g)
            first(g, mu, keep * wd, wd, decay, lr, lr * mu, w, fresh)
            out.append(fresh)
        else:
            later(g, mu, keep, keep * wd, decay, lr, lr * mu, w, v)
            out.append(v)
    return out


def adam_update(
    ws: list[Array],
    gs: list[Array],
    ms: list[Array],
    vs: list[Array],
    maxs: list[Array] | None,
    work: dict[Any, Any],  # noqa: ARG001 - the kernels need no scratch buffer
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step: int,
) -> None:
    """Adam's (AdamW's where ``decoupled``) update of every parameter of ``ws`` at step
    ``step``, in place, with the moments ``ms``, ``vs`` (and ``maxs`` for amsgrad)."""
    wd = weight_decay
    if wd == 0.0:
        penalty = ""
    elif decoupled:
        penalty = "ww = ww * decay;"
    else:
        penalty = "gg = gg + wd * ww;"
    amsgrad = maxs is not None
    kernel = _kernel(
        f"adam_{bool(penalty)}_{decoupled}_{amsgrad}",
        "T g, T decay, T wd, T beta1, T beta2, T c1, T c2, T root2, T eps, T scale",
        "T w, T m, T v" + (", T vmax" if amsgrad else ""),
        f"T ww = w; T gg = g; {penalty}"
        " T mm = m * beta1 + c1 * gg; m = mm;"
        " T vv = v * beta2 + c2 * (gg * gg); v = vv;"
        + (" if (vmax > vv) { vv = vmax; } vmax = vv;" if amsgrad else "")
        + " T den = sqrt(vv) / root2 + eps; w = ww + scale * (mm / den);",
    )
    scalars = (
        1.0 - lr * wd,
        wd,
        beta1,
        beta2,
        1.0 - beta1,
        1.0 - beta2,
        math.sqrt(1.0 - beta2**step),
        eps,
        -lr / (1.0 - beta1**step),
    )
    for i, (w, g, m, v) in enumerate(zip(ws, gs, ms, vs, strict=True)):
        extra = () if maxs is None else (maxs[i],)
        kernel(g, *scalars, w, m, v, *extra)


def rmsprop_update(
    ws: list[Array],
    gs: list[Array],
    squares: list[Array],
    averages: list[Array] | None,
    bufs: list[Array] | None,
    work: dict[Any, Any],  # noqa: ARG001 - the kernels need no scratch buffer
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
) -> None:
    """RMSprop's update of every parameter of ``ws``, in place: centred where
    ``averages`` is given, with momentum where ``bufs`` is."""
    centered, heavy = averages is not None, bufs is not None
    body = "T gg = g;" + (" gg = gg + wd * w;" if weight_decay != 0.0 else "")
    body += " T ss = s * alpha + c * (gg * gg); s = ss;"
    if centered:
        body += " T aa = a * alpha + c * gg; a = aa; T den = sqrt(ss - aa * aa) + eps;"
    else:
        body += " T den = sqrt(ss) + eps;"
    if heavy:
        body += " T bb = b * mu + gg / den; b = bb; w = w + (-lr) * bb;"
    else:
        body += " w = w + (-lr) * (gg / den);"
    outputs = "T w, T s" + (", T a" if centered else "") + (", T b" if heavy else "")
    kernel = _kernel(
        f"rmsprop_{weight_decay != 0.0}_{centered}_{heavy}",
        "T g, T wd, T alpha, T c, T eps, T mu, T lr",
        outputs,
        body,
    )
    scalars = (weight_decay, alpha, 1.0 - alpha, eps, momentum, lr)
    for i, (w, g, s) in enumerate(zip(ws, gs, squares, strict=True)):
        extra = [] if averages is None else [averages[i]]
        extra += [] if bufs is None else [bufs[i]]
        kernel(g, *scalars, w, s, *extra)


MULTI_UPDATE: dict[str, Callable[..., Any]] = {
    "sgd": sgd_update,
    "adam": adam_update,
    "rmsprop": rmsprop_update,
}


def build(spec: str | None) -> Backend:
    """The CuPy backend of CUDA device ``spec`` (an index), or of the current device."""
    cupy = import_library("cupy", "cupy", "pip install 'portprop[cupy]' (needs an NVIDIA GPU)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError and driver errors alike
        msg = f"backend 'cupy' is not usable: no CUDA device ({exc})"
        raise BackendUnavailableError(msg) from None
    try:
        index = cupy.cuda.runtime.getDevice() if spec is None else int(spec)
    except ValueError:
        msg = f"'cupy:{spec}' does not name a CUDA device: expected 'cupy:<index>'"
        raise UnknownBackendError(msg) from None
    if not 0 <= index < count:
        msg = f"backend 'cupy:{index}' is not usable: CuPy sees {count} CUDA device(s)"
        raise BackendUnavailableError(msg)
    return from_device(cupy.cuda.Device(index))


def from_device(device: Any) -> Backend:
    """The CuPy backend of ``device`` (a ``cupy.cuda.Device``)."""
    import array_api_compat.cupy as xp  # noqa: PLC0415
    import cupy  # noqa: PLC0415

    return Backend(
        name=f"cupy:{device.id}",
        library="cupy",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(cupy.ndarray,),
        _float_dtypes=float_dtypes(xp, device),
        _low_float_dtypes={"float16": np.dtype("float16")},  # no bfloat16
        _narrow_ints=narrow_ints(xp, device),
        _add_scaled=add_scaled,
        _numpy_warnings=False,
        _needs_scratch=True,
        # array-api-compat's CuPy creation functions ignore ``device=`` and use the
        # current device, so every call of a model runs inside the device's context.
        _scope=lambda: cupy.cuda.Device(device.id),
        _generator=CupyGenerator,
        _multi_update=MULTI_UPDATE,  # fused optimizer steps (issue 13)
        # workspaces (issue 13)
        _matmul_into=lambda a, b, out: cupy.matmul(a, b, out=out),
        _multiply_into=lambda a, b, out: cupy.multiply(a, b, out=out),
    )


def devices() -> list[str]:
    """The indices of the CUDA devices CuPy sees."""
    import cupy  # noqa: PLC0415

    return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]


class CupyGenerator(BackendGenerator):
    """Draws on the GPU with a Philox generator seeded afresh from a host PCG64 at every
    draw, so that the whole state is the host generator's (cuRAND's is not readable)."""

    kind = "cupy"

    def __init__(self, backend: Backend, seed: int) -> None:
        super().__init__(backend, seed)
        self._seeds = np.random.Generator(np.random.PCG64(seed))

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import cupy  # noqa: PLC0415
        from cupy.cuda import curand  # noqa: PLC0415

        draw_seed = self._seeds.integers(SEED_BOUND, dtype=np.uint64)
        philox = cupy.random.RandomState(draw_seed, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
        return philox.random_sample(shape, dtype=dtype)

    def _get_state(self) -> Any:
        return self._seeds.bit_generator.state

    def _set_state(self, state: Any) -> None:
        self._seeds.bit_generator.state = dict(state)


LIBRARY = Library(
    name="cupy",
    install="pip install 'portprop[cupy]'",
    build=build,
    matches=array_api_compat.is_cupy_namespace,
    from_device=from_device,
    list_devices=devices,
)
