"""The torch backend (CPU, CUDA, MPS): array-api-compat's torch namespace, ``Tensor.add_``
for the in-place update, and a ``torch.Generator`` on the device for random draws."""

from __future__ import annotations

from typing import Any

import array_api_compat

from portprop.backend._base import Array, Backend
from portprop.backend._library import Library, float_dtypes, import_library, narrow_ints
from portprop.backend.random import BackendGenerator
from portprop.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["LIBRARY", "TorchGenerator", "add_scaled", "build", "devices", "from_device"]


def add_scaled(
    y: Array,
    alpha: float,
    x: Array,
    scratch: Array | None = None,  # noqa: ARG001
) -> Array:
    """``y += alpha * x`` in place (``Tensor.add_``); torch needs no scratch buffer."""
    return y.add_(x, alpha=alpha)


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
            msg = (
                "backend 'torch:cuda' is not usable: torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Install a CUDA "
                "build of torch on a machine with an NVIDIA GPU: pip install torch"
            )
            raise BackendUnavailableError(msg)
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
