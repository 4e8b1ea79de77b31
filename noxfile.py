"""The test matrix: one session per backend, plus lint, typecheck and docs.

``nox`` runs every session this machine can run; the CuPy session skips itself where no
CUDA device is present, and the fuzz session runs the checkpoint loader's fuzz test for
a few minutes.  CI pins the CPU build of torch through ``.ci/constraints.txt``
(``PIP_CONSTRAINT``); users installing portprop get whatever torch pip picks for them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")

# session name -> (extra to install, pytest --backend value)
BACKEND_SESSIONS = {
    "numpy": ("", "numpy"),
    "torch": ("torch", "torch"),
    "jax": ("jax", "jax"),
    "array_api_strict": ("strict", "array_api_strict"),
    "cupy": ("cupy", "cupy"),
}


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


def _run_tests(session: nox.Session, name: str) -> None:
    extra, selected = BACKEND_SESSIONS[name]
    if name == "cupy" and not _has_cuda():
        session.skip(
            "no CUDA device here (nvidia-smi not found): the cupy session needs an NVIDIA GPU"
        )
    # torch is installed in every session: the agreement tests compare against torch.autograd.
    extras = ",".join(e for e in (extra, "torch") if e)
    session.install("-e", f".[{extras}]", *TEST_DEPS)
    session.run(
        "pytest",
        f"--backend={selected}",
        *session.posargs,
        env={"PORTPROP_BACKEND": name, "JAX_ENABLE_X64": "1"},
    )


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy."""
    _run_tests(session, "numpy")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The suite on torch (CPU, and CUDA where a GPU is present)."""
    _run_tests(session, "torch")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The suite on JAX (float64 enabled)."""
    _run_tests(session, "jax")


@nox.session(name="tests-array_api_strict")
def tests_array_api_strict(session: nox.Session) -> None:
    """The suite on array-api-strict: passing here means only the standard is used."""
    _run_tests(session, "array_api_strict")


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy (skipped without a CUDA device)."""
    _run_tests(session, "cupy")


FUZZ_TEST = (
    "tests/test_reliability_checkpoints.py"
    "::test_fuzz_the_loader_loads_a_valid_model_or_raises_checkpoint_error"
)


@nox.session(default=True)
def fuzz(session: nox.Session) -> None:
    """The checkpoint loader's fuzz test, long: 12000 examples (about 4 minutes on 2 cores).

    ``nox -s fuzz -- --hypothesis-seed=N`` repeats a run; PORTPROP_FUZZ_EXAMPLES in the
    environment sets the number of examples.
    """
    session.install("-e", ".", *TEST_DEPS)
    examples = os.environ.get("PORTPROP_FUZZ_EXAMPLES", "12000")
    session.run(
        "pytest",
        FUZZ_TEST,
        "--hypothesis-show-statistics",
        *session.posargs,
        env={"PORTPROP_FUZZ_EXAMPLES": examples, "PORTPROP_BACKEND": "numpy"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, with the broad rule set of pyproject.toml."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
