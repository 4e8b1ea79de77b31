"""One ``backend`` fixture drives the whole suite on every backend.

Every built-in backend is a parameter.  One that cannot run here (not installed, no
CUDA device) is *skipped with its reason*, never dropped.  ``pytest --backend=torch``
(as each nox session runs) deselects the other libraries; pytest reports them as
deselected.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import portprop as pp

ALL_BACKENDS = ("numpy", "torch:cpu", "torch:cuda", "jax", "array_api_strict", "cupy")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        help="run the backend-parametrized tests on this library only (repeatable): "
        "numpy, torch, jax, array_api_strict, cupy",
    )


def pytest_configure(config: pytest.Config) -> None:
    # JAX keeps float64 off unless asked; gradient checks need it.  Enabling x64 does not
    # change portprop, which passes dtype= to every array it creates.
    os.environ.setdefault("JAX_ENABLE_X64", "1")


def _library(name: str) -> str:
    return name.split(":", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(config.getoption("--backend"))
    if not wanted:
        return
    unknown = wanted - {_library(b) for b in ALL_BACKENDS}
    if unknown:
        msg = f"--backend got {sorted(unknown)}; choose from numpy, torch, jax, array_api_strict, cupy"
        raise pytest.UsageError(msg)
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend") if callspec else None
        if isinstance(name, str) and _library(name) not in wanted:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def load_backend(name: str) -> pp.Backend:
    """The backend ``name``, or skip the test with the reason it cannot run here."""
    try:
        return pp.get_backend(backend=name)
    except pp.BackendUnavailableError as exc:
        pytest.skip(f"{name}: {exc}")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> pp.Backend:
    """Each backend in turn."""
    return load_backend(request.param)


@pytest.fixture
def backend64(backend: pp.Backend) -> pp.Backend:
    """Each backend that has float64 (every one here, with JAX_ENABLE_X64=1)."""
    if not backend.supports("float64"):
        pytest.skip(f"{backend.name} has no float64 here")
    return backend


@pytest.fixture(autouse=True)
def _isolate_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set PORTPROP_BACKEND themselves; the session's value must not leak in."""
    monkeypatch.delenv(pp.ENV_VAR, raising=False)


def to_numpy(x: Any) -> Any:
    """A NumPy copy of an array of any backend (tests compare on the host)."""
    return pp.get_backend(x).to_host(x)
