"""The torch backend (CPU, CUDA, MPS): array-api-compat's torch namespace, ``Tensor.add_``
for the in-place update, and a ``torch.Generator`` on the device for random draws.

portprop computes every gradient itself, so torch's autograd stays out of its way: tensors
are detached on the way in (:func:`adopt`), and portprop's computations run under
``torch.no_grad()`` (the backend's scope, and :func:`runner`).
"""

from __future__ import annotations

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
        _narrow_ints=narrow_ints(xp, device),
        _add_scaled=add_scaled,
        _numpy_warnings=False,
        _generator=TorchGenerator,
        _scope=torch.no_grad,
        _run=runner(torch),
        _adopt=adopt,
        _read_only=read_only,
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
