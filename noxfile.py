"""The test matrix: one session per backend, README.md's plain pytest run, the fuzz test,
lint, type check and docs.

``nox`` runs every session this machine can run; the CuPy session skips itself where no
CUDA device is present, and the fuzz session runs the checkpoint loader's fuzz test for
a few minutes.

torch is installed by two sessions only.  ``tests-distributed`` trains on several
processes (torch.distributed and MPI).  ``tests-torch`` runs the suite on torch,
then the tests that compare portprop with torch (``torch.autograd``, ``torch.optim``,
torch's schedulers and state dicts: every such test has ``torch`` in its name or in its
file's) on NumPy and array-api-strict.  The other sessions have no torch, and those tests
skip there with the reason.  On Linux pip picks torch's CUDA build; a CPU-only machine
gets the CPU build by pointing pip at PyTorch's CPU index (``PIP_EXTRA_INDEX_URL``, see
README.md), and CI pins it through ``.ci/constraints.txt`` (``PIP_CONSTRAINT``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox
from packaging.requirements import Requirement

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
# The backends on which tests-torch also runs the tests that compare with torch: those
# every session installs (array-api-strict is in the test group).
TORCH_REFERENCE_BACKENDS = ("numpy", "array_api_strict")
# What README.md's command without nox installs, and nothing more:
# pip install -e ".[strict]" pytest hypothesis
README_INSTALL = ("-e", ".[strict]", "pytest", "hypothesis")


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


def _run_tests(session: nox.Session, name: str) -> None:
    extra, selected = BACKEND_SESSIONS[name]
    if name == "cupy" and not _has_cuda():
        session.skip(
            "no CUDA device here (nvidia-smi not found): the cupy session needs an NVIDIA GPU"
        )
    session.install("-e", f".[{extra}]" if extra else ".", *TEST_DEPS)
    env = {"PORTPROP_BACKEND": name, "JAX_ENABLE_X64": "1"}
    session.run("pytest", f"--backend={selected}", *session.posargs, env=env)
    if name == "torch":
        # The comparisons with torch on the other backends (deselected above).  Exit
        # status 5: posargs selected none of them.
        session.run(
            "pytest",
            "-k",
            "torch",
            *(f"--backend={b}" for b in TORCH_REFERENCE_BACKENDS),
            *session.posargs,
            env=env,
            success_codes=[0, 5],
        )


@nox.session(name="tests-numpy", default=True)
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy."""
    _run_tests(session, "numpy")


@nox.session(name="tests-torch", default=True)
def tests_torch(session: nox.Session) -> None:
    """The suite on torch, then every comparison with torch on NumPy and array-api-strict.

    The one session that installs torch (CPU, and CUDA where a GPU is present).
    """
    _run_tests(session, "torch")


@nox.session(name="tests-distributed", default=True)
def tests_distributed(session: nox.Session) -> None:
    """Data-parallel training on 2 and 3 processes over loopback (tests/test_distributed.py).

    torch.distributed (gloo; torch's CPU build in CI through PIP_CONSTRAINT) and MPI
    (mpi4py with the ``mpich`` wheel, the ``distributed`` extra); an engine that cannot
    start skips its tests with the reason.
    """
    session.install("-e", ".[torch,distributed]", *TEST_DEPS)
    env = {"OMP_NUM_THREADS": "1", "JAX_ENABLE_X64": "1"}
    session.run("pytest", "--backend=numpy", "tests/test_distributed.py", *session.posargs, env=env)


@nox.session(name="tests-jax", default=True)
def tests_jax(session: nox.Session) -> None:
    """The suite on JAX (float64 enabled)."""
    _run_tests(session, "jax")


@nox.session(name="tests-array_api_strict", default=True)
def tests_array_api_strict(session: nox.Session) -> None:
    """The suite on array-api-strict: passing here means only the standard is used."""
    _run_tests(session, "array_api_strict")


@nox.session(name="tests-cupy", default=True)
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy (skipped without a CUDA device)."""
    _run_tests(session, "cupy")


@nox.session(default=True)
def readme(session: nox.Session) -> None:
    """The suite on NumPy with only what README.md's command without nox installs.

    Every test whose optional library (torch, scikit-learn, matplotlib, safetensors, ...)
    is missing there must skip with its reason.
    """
    session.install(*README_INSTALL)
    session.run("pytest", "--backend=numpy", *session.posargs, env={"PORTPROP_BACKEND": "numpy"})


FUZZ_TEST = (
    "tests/test_reliability_checkpoints.py"
    "::test_fuzz_the_loader_loads_a_valid_model_or_raises_checkpoint_error"
)


# The fuzz test needs pytest and hypothesis, not the rest of the test group.
FUZZ_DEPS = [dep for dep in TEST_DEPS if Requirement(dep).name in ("pytest", "hypothesis")]


@nox.session(default=True)
def fuzz(session: nox.Session) -> None:
    """The checkpoint loader's fuzz test, long: 12000 examples (about 4 minutes on 2 cores).

    ``nox -s fuzz -- --hypothesis-seed=N`` repeats a run; PORTPROP_FUZZ_EXAMPLES in the
    environment sets the number of examples.
    """
    session.install("-e", ".", *FUZZ_DEPS)
    examples = os.environ.get("PORTPROP_FUZZ_EXAMPLES", "12000")
    session.run(
        "pytest",
        FUZZ_TEST,
        "--hypothesis-show-statistics",
        *session.posargs,
        env={"PORTPROP_FUZZ_EXAMPLES": examples, "PORTPROP_BACKEND": "numpy"},
    )


@nox.session(default=True)
def lint(session: nox.Session) -> None:
    """ruff, with the broad rule set of pyproject.toml."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=True)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy")


@nox.session(default=True)
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
