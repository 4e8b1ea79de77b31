"""The torch backend (CPU, CUDA, MPS): array-api-compat's torch namespace, ``Tensor.add_``
for the in-place update, and a ``torch.Generator`` on the device for random draws.

portprop computes every gradient itself, so torch's autograd stays out of its way: tensors
are detached on the way in (:func:`adopt`), and portprop's computations run under
``torch.no_grad()`` (the backend's scope, and :func:`runner`).
"""

from __future__ import annotations

import math  # fused optimizer steps (issue 13)
import os
from collections.abc import Callable
from typing import Any, TypeVar

import array_api_compat

from portprop.backend._base import Array, Backend, array_to_host
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import BackendGenerator
from portprop.errors import BackendUnavailableError, DtypeUnsupportedError, UnknownBackendError

__all__ = [
    "LIBRARY",
    "TorchGenerator",
    "add_scaled",
    "adopt",
    "build",
    "compiler_for",
    "devices",
    "from_device",
    "read_only",
    "runner",
]

_T = TypeVar("_T")


def add_scaled(
    y: Array,
    alpha: float,
    x: Array,
    scratch: Array | None = None,  # noqa: ARG001
) -> Array:
    """``y += alpha * x`` in place (``Tensor.add_``); torch needs no scratch buffer."""
    return y.add_(x, alpha=alpha)


def runner(torch: Any) -> Callable[..., Any]:
    """The backend's ``run(fn, *args)``: ``fn(*args)`` without autograd recording, within
    ``torch.no_grad()`` where autograd is on and directly where it is off already (inside
    :func:`portprop.fit`: a ``with`` block costs about a microsecond, checking the mode
    a tenth of that)."""
    is_grad_enabled, no_grad = torch.is_grad_enabled, torch.no_grad

    def run(fn: Callable[..., _T], /, *args: Any) -> _T:
        if is_grad_enabled():
            with no_grad():
                return fn(*args)
        return fn(*args)

    return run


def adopt(x: Array, argname: str) -> Array:
    """``x`` as portprop computes with it: detached from autograd (portprop arrays never
    carry autograd history), and int64 where it holds unsigned integers wider than
    8 bits, which torch cannot compare (``"ge_cpu" not implemented for 'UInt64'``)."""
    import torch  # noqa: PLC0415

    if x.requires_grad:
        x = x.detach()
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        wide = x.to(torch.int64)
        if x.dtype == torch.uint64 and wide.numel() and bool((wide < 0).any()):
            top = int(array_to_host(x).max())
            msg = (
                f"{argname} holds uint64 values up to {top}, but torch cannot compare "
                f"uint64 values: portprop converts them to int64, and expects values up to "
                f"{torch.iinfo(torch.int64).max}, got {top}"
            )
            raise DtypeUnsupportedError(msg)
        x = wide
    return x


def read_only(x: Array) -> str:
    """Why the tensor ``x`` cannot be updated in place (``""`` when it can)."""
    import torch  # noqa: PLC0415

    if x.is_inference() and not torch.is_inference_mode_enabled():
        return "an inference tensor (made under torch.inference_mode())"
    if any(stride == 0 and size > 1 for stride, size in zip(x.stride(), x.shape, strict=True)):
        return "an expanded view whose elements share memory (made by expand or broadcast_to)"
    return ""


# ---- compiled steps (issue 13) ------------------------------------------------------


def compiler_for(device: Any) -> Callable[[Any, tuple[int, ...]], tuple[Any, str]]:
    """The Backend's ``compile`` on ``device``: ``torch.compile`` with inductor where it
    can build its kernels (a C++ compiler on the CPU, Triton on CUDA), else with
    ``backend="aot_eager"`` (traced and functionalized, run by torch's eager kernels).
    Tensors are updated in place, so nothing is donated."""

    def compiler(fn: Any, donate: tuple[int, ...]) -> tuple[Any, str]:  # noqa: ARG001
        import importlib.util  # noqa: PLC0415
        import shutil  # noqa: PLC0415
        import warnings  # noqa: PLC0415

        import torch  # noqa: PLC0415

        if device.type == "cuda":
            found = importlib.util.find_spec("triton") is not None
            missing = "Triton (pip install triton)"
        else:
            found = any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++"))
            missing = "a C++ compiler (g++ or clang++ on PATH, or CXX)"
        backend = "inductor" if found else "aot_eager"
        how = f"torch.compile(backend={backend!r})"
        if not found:
            how += f": inductor needs {missing}"
        with warnings.catch_warnings():
            # torch's compiler imports its own deprecated torch.jit.script_method once
            warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
            compiled = torch.compile(fn, backend=backend, dynamic=False)
        return compiled, how

    return compiler


def _no_cuda_reason(torch: Any) -> str:
    """Why torch sees no CUDA device: a build without CUDA, or no GPU visible to it."""
    version = f"torch {torch.__version__}"
    if torch.version.cuda is None:
        if getattr(torch.version, "hip", None):
            visible = os.environ.get("HIP_VISIBLE_DEVICES")
            return (
                f"{version} is a ROCm build (HIP {torch.version.hip}) but sees no AMD GPU: "
                "check the ROCm driver (rocm-smi) and HIP_VISIBLE_DEVICES"
                + ("" if visible is None else f" (set to {visible!r})")
            )
        return (
            f"{version} is a CPU-only build. Install a CUDA build of torch on a machine "
            "with an NVIDIA GPU: pip install torch --index-url "
            "https://download.pytorch.org/whl/cu126 (pick the CUDA version your driver "
            "supports at https://pytorch.org/get-started/locally/)"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"{version} is a CUDA {torch.version.cuda} build, but no CUDA device is visible: "
        "check that the machine has an NVIDIA GPU and its driver works (nvidia-smi), and "
        "CUDA_VISIBLE_DEVICES" + (" (unset)" if visible is None else f" (set to {visible!r})")
    )


# ---- multi-tensor optimizer updates (issue 13: fused optimizer steps) ------------------
# Each kernel applies the optimizer's update (portprop.optim) to a list of tensors with
# torch's multi-tensor ``_foreach_*`` ops, in the order of the update of one parameter:
# on the CPU torch runs them tensor by tensor, with the same bits; on CUDA they are
# torch's fused multi-tensor kernels (torch.optim's ``foreach=True`` path).  On CUDA,
# SGD and Adam go one step further, to torch's fused optimizer kernels
# (``torch._fused_sgd_``, ``torch._fused_adam_``: torch.optim's ``fused=True``), which
# compute the same formulas in one kernel per group of tensors.

# The device types on which the fused kernels are used (tests add "cpu").
FUSED_DEVICES = ("cuda",)


def _fusable(ws: list[Array]) -> bool:
    """Whether torch's fused kernels take ``ws``: one device of FUSED_DEVICES, one dtype."""
    first = ws[0]
    device, dtype = first.device, first.dtype
    return device.type in FUSED_DEVICES and all(w.device == device and w.dtype == dtype for w in ws)


def sgd_update(
    ws: list[Array],
    gs: list[Array],
    bufs: list[Array | None],
    work: dict[Any, Any],  # noqa: ARG001 - torch needs no scratch buffer
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    dampening: float,
    nesterov: bool,
) -> list[Array | None]:
    """SGD's update of every parameter of ``ws``, in place; returns the momentum buffers
    (a new one where ``bufs`` has ``None``: the first step)."""
    import torch  # noqa: PLC0415

    mu, wd, keep = momentum, weight_decay, 1.0 - dampening
    first_step = all(v is None for v in bufs)
    if _fusable(ws) and (mu == 0.0 or first_step or all(v is not None for v in bufs)):
        held: list[Array] = [] if mu == 0.0 else list(bufs)
        if mu != 0.0 and first_step:
            held = [torch.empty_like(g) for g in gs]
        torch._fused_sgd_(
            ws,
            gs,
            held,
            weight_decay=wd,
            momentum=mu,
            lr=lr,
            dampening=dampening,
            nesterov=nesterov,
            maximize=False,
            is_first_step=mu != 0.0 and first_step,
        )
        return bufs if mu == 0.0 else held
    decay = 1.0 - lr * wd
    if mu == 0.0:
        if wd != 0.0:
            torch._foreach_mul_(ws, decay)
        torch._foreach_add_(ws, gs, alpha=-lr)
        return bufs
    new = [i for i, v in enumerate(bufs) if v is None]
    old = [i for i, v in enumerate(bufs) if v is not None]
    out: list[Array] = list(bufs)
    if new:  # the first step: v = g (+ wd w)
        fresh = [torch.clone(gs[i]) for i in new]
        if wd != 0.0:
            torch._foreach_add_(fresh, [ws[i] for i in new], alpha=wd)
        for i, v in zip(new, fresh, strict=True):
            out[i] = v
    if old:
        held = [bufs[i] for i in old]
        torch._foreach_mul_(held, mu)
        if keep == 1.0:
            torch._foreach_add_(held, [gs[i] for i in old])
        else:
            torch._foreach_add_(held, [gs[i] for i in old], alpha=keep)
        if wd != 0.0:
            torch._foreach_add_(held, [ws[i] for i in old], alpha=keep * wd)
    if nesterov:  # w - lr (g + wd w + mu v)
        if wd != 0.0:
            torch._foreach_mul_(ws, decay)
        torch._foreach_add_(ws, gs, alpha=-lr)
        torch._foreach_add_(ws, out, alpha=-lr * mu)
    else:
        torch._foreach_add_(ws, out, alpha=-lr)
    return out


def adam_update(
    ws: list[Array],
    gs: list[Array],
    ms: list[Array],
    vs: list[Array],
    maxs: list[Array] | None,
    work: dict[Any, Any],
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
    import torch  # noqa: PLC0415

    wd = weight_decay
    if _fusable(ws):
        counter = work.get("step")  # the step count, as the fused kernels read it
        if counter is None or counter.device != ws[0].device:
            counter = work["step"] = torch.zeros((), dtype=torch.float32, device=ws[0].device)
        counter.fill_(step)
        fused = torch._fused_adamw_ if decoupled else torch._fused_adam_
        fused(
            ws,
            gs,
            ms,
            vs,
            [] if maxs is None else maxs,
            [counter] * len(ws),
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=wd,
            eps=eps,
            amsgrad=maxs is not None,
            maximize=False,
        )
        return
    if decoupled:
        if wd != 0.0:
            torch._foreach_mul_(ws, 1.0 - lr * wd)
    elif wd != 0.0:
        gs = list(torch._foreach_add(gs, torch._foreach_mul(ws, wd)))
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, gs, alpha=1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_add_(vs, torch._foreach_mul(gs, gs), alpha=1.0 - beta2)
    if maxs is not None:
        torch._foreach_maximum_(maxs, vs)
        vs = maxs
    denominator = torch._foreach_sqrt(vs)
    torch._foreach_div_(denominator, math.sqrt(1.0 - beta2**step))
    torch._foreach_add_(denominator, eps)
    torch._foreach_add_(ws, torch._foreach_div(ms, denominator), alpha=-lr / (1.0 - beta1**step))


def rmsprop_update(
    ws: list[Array],
    gs: list[Array],
    squares: list[Array],
    averages: list[Array] | None,
    bufs: list[Array] | None,
    work: dict[Any, Any],  # noqa: ARG001 - torch needs no scratch buffer
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
) -> None:
    """RMSprop's update of every parameter of ``ws``, in place: centred where
    ``averages`` is given, with momentum where ``bufs`` is."""
    import torch  # noqa: PLC0415

    if weight_decay != 0.0:
        gs = list(torch._foreach_add(gs, torch._foreach_mul(ws, weight_decay)))
    torch._foreach_mul_(squares, alpha)
    torch._foreach_add_(squares, torch._foreach_mul(gs, gs), alpha=1.0 - alpha)
    if averages is not None:
        torch._foreach_mul_(averages, alpha)
        torch._foreach_add_(averages, gs, alpha=1.0 - alpha)
        denominator = torch._foreach_sub(squares, torch._foreach_mul(averages, averages))
        torch._foreach_sqrt_(denominator)
    else:
        denominator = torch._foreach_sqrt(squares)
    torch._foreach_add_(denominator, eps)
    if bufs is not None:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, torch._foreach_div(gs, denominator))
        torch._foreach_add_(ws, bufs, alpha=-lr)
    else:
        torch._foreach_add_(ws, torch._foreach_div(gs, denominator), alpha=-lr)


MULTI_UPDATE: dict[str, Callable[..., Any]] = {
    "sgd": sgd_update,
    "adam": adam_update,
    "rmsprop": rmsprop_update,
}


def build(spec: str | None) -> Backend:
    """The torch backend of device ``spec`` (``"cuda:1"``), or of torch's default device."""
    torch = import_library("torch", "torch", "pip install 'portprop[torch]'")
    try:
        device = torch.device(spec) if spec else torch.get_default_device()
    except (RuntimeError, TypeError, ValueError) as exc:
        msg = f"'torch:{spec}' does not name a torch device: {exc}"
        raise UnknownBackendError(msg) from None
    return from_device(device)


def from_device(device: Any) -> Backend:
    """The torch backend of ``device``, checked to exist here."""
    import array_api_compat.torch as xp  # noqa: PLC0415
    import torch  # noqa: PLC0415

    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            msg = "backend 'torch:cuda' is not usable: torch sees no CUDA device; "
            raise BackendUnavailableError(msg + _no_cuda_reason(torch))
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            msg = (
                f"backend 'torch:cuda:{index}' is not usable: torch sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
            raise BackendUnavailableError(msg)
        device = torch.device("cuda", index)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        msg = "backend 'torch:mps' is not usable: torch.backends.mps.is_available() is False"
        raise BackendUnavailableError(msg)
    return Backend(
        name=f"torch:{device}",
        library="torch",
        xp=xp,
        device=device,
        writable=True,
        _array_types=(torch.Tensor,),
        _float_dtypes=float_dtypes(xp, device),
        _low_float_dtypes={"float16": torch.float16, "bfloat16": torch.bfloat16},  # issue 12
        _narrow_ints=narrow_ints(xp, device),
        _add_scaled=add_scaled,
        _numpy_warnings=False,
        _generator=TorchGenerator,
        _scope=torch.no_grad,
        _run=runner(torch),
        _adopt=adopt,
        _read_only=read_only,
        _multi_update=MULTI_UPDATE,  # fused optimizer steps (issue 13)
        _compiler=compiler_for(device),  # compiled steps (issue 13)
        # workspaces (issue 13)
        _matmul_into=lambda a, b, out: torch.matmul(a, b, out=out),
        _multiply_into=lambda a, b, out: torch.mul(a, b, out=out),
    )


def devices() -> list[str]:
    """The CPU and every CUDA device torch sees."""
    import torch  # noqa: PLC0415

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


class TorchGenerator(BackendGenerator):
    """A ``torch.Generator`` on the backend's device; its state is a list of byte values."""

    kind = "torch"

    def __init__(self, backend: Backend, seed: int) -> None:
        import torch  # noqa: PLC0415

        super().__init__(backend, seed)
        self._gen = torch.Generator(device=backend.device)
        self._gen.manual_seed(seed)

    def _uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        import torch  # noqa: PLC0415

        return torch.rand(shape, generator=self._gen, dtype=dtype, device=self.backend.device)

    def _get_state(self) -> Any:
        return self._gen.get_state().tolist()

    def _set_state(self, state: Any) -> None:
        import torch  # noqa: PLC0415

        # torch takes the state of a generator on any device as a CPU byte tensor
        self._gen.set_state(torch.tensor(list(state), dtype=torch.uint8, device="cpu"))


LIBRARY = Library(
    name="torch",
    install="pip install 'portprop[torch]'",
    build=build,
    matches=array_api_compat.is_torch_namespace,
    from_device=from_device,
    list_devices=devices,
)
