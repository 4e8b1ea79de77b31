"""How portprop is installed and tested: the sessions of ``noxfile.py`` and README.md.

- Only ``tests-torch`` and ``tests-distributed`` install torch (pip's CUDA build of torch
  is gigabytes); in the other sessions the comparisons with torch skip with the reason.  ``tests-torch`` runs
  those comparisons (``pytest -k torch``) on NumPy and array-api-strict too, so every
  test that needs torch on a ``backend`` fixture has ``torch`` in its name or its file's.
- The ``readme`` session installs exactly what README.md's command without nox installs,
  and every test whose optional library is missing there skips with its reason: checked
  here by hiding the libraries from a pytest run in a subprocess.
- README.md's example prints what README.md shows after it.

The sessions are called with a stand-in for ``nox.Session`` that records what they
install and run; nox itself is in the test dependency group.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
README = ROOT / "README.md"


# ---- the sessions of noxfile.py --------------------------------------------------------


class _SkippedError(Exception):
    """``session.skip()`` was called."""


@dataclass
class _Session:
    """Records what a nox session installs and runs, instead of doing it."""

    posargs: list[str] = field(default_factory=list)
    installs: list[tuple[str, ...]] = field(default_factory=list)
    runs: list[tuple[str, ...]] = field(default_factory=list)

    def install(self, *args: str, **kwargs: Any) -> None:
        self.installs.append(args)

    def run(self, *args: str, **kwargs: Any) -> None:
        self.runs.append(args)

    def skip(self, reason: str) -> None:
        raise _SkippedError(reason)


@pytest.fixture(scope="module")
def noxfile() -> ModuleType:
    nox = pytest.importorskip("nox", reason="nox is not installed (pip install nox)")
    spec = importlib.util.spec_from_file_location("portprop_noxfile", ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.sessions = {  # type: ignore[attr-defined]
        name: func
        for name, func in nox.registry.get().items()
        if getattr(func, "__module__", None) == "portprop_noxfile"
    }
    return module


def _record(noxfile: ModuleType, name: str) -> _Session:
    session = _Session()
    with contextlib.suppress(_SkippedError):
        noxfile.sessions[name](session)
    return session


def _project_requirements(noxfile: ModuleType, arg: str) -> list[str]:
    """The requirements of ``.`` or ``.[extra,...]``: the project's and its extras'."""
    project = noxfile.PYPROJECT["project"]
    extras = arg[2:-1].split(",") if arg.startswith(".[") else []
    found = list(project["dependencies"])
    for extra in filter(None, extras):
        found += project["optional-dependencies"][extra]
    return found


def _closure(requirements: list[str]) -> set[str]:
    """The names of ``requirements`` and of what they require, as far as the
    distributions installed here tell (one not installed here adds its name only)."""
    names: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in names:
            continue
        names.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            wanted = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append(sub)
    return names


def _installed(noxfile: ModuleType, session: _Session) -> set[str]:
    """What ``session``'s installs put in its environment, by name."""
    requirements: list[str] = []
    for args in session.installs:
        for arg in args:
            if arg.startswith("-"):
                continue
            if arg == "." or arg.startswith(".["):
                requirements += _project_requirements(noxfile, arg)
            else:
                requirements.append(arg)
    return _closure(requirements)


def test_only_the_torch_session_installs_torch(noxfile):
    torch_sessions = sorted(
        name for name in noxfile.sessions if "torch" in _installed(noxfile, _record(noxfile, name))
    )
    assert torch_sessions == ["tests-distributed", "tests-torch"]


def test_the_test_dependencies_need_no_torch(noxfile):
    # safetensors is the reference reader of the format: its NumPy half needs no torch
    assert "torch" not in _closure(list(noxfile.TEST_DEPS))


def test_the_torch_session_compares_with_torch_on_the_other_backends(noxfile):
    runs = _record(noxfile, "tests-torch").runs
    assert runs[0] == ("pytest", "--backend=torch")
    assert runs[1] == ("pytest", "-k", "torch", "--backend=numpy", "--backend=array_api_strict")


def _readme_command() -> list[str]:
    """README.md's command without nox, split: ``pip install ... && pytest``."""
    found = re.findall(r"`(pip install [^`]*?) && pytest`", README.read_text(encoding="utf-8"))
    assert len(found) == 1, f"README.md should give one `pip install ... && pytest`: {found}"
    return shlex.split(found[0])


def test_the_readme_session_installs_what_the_readme_command_installs(noxfile):
    session = _record(noxfile, "readme")
    assert [["pip", "install", *args] for args in session.installs] == [_readme_command()]
    assert session.runs == [("pytest", "--backend=numpy")]
    assert noxfile.sessions["readme"].default


@pytest.mark.parametrize("name", ["readme", "fuzz"])
def test_the_small_sessions_install_no_optional_library(noxfile, name):
    installed = _installed(noxfile, _record(noxfile, name))
    optional = {"torch", "jax", "cupy-cuda12x", "scikit-learn", "matplotlib", "safetensors"}
    assert installed & optional == set()
    assert {"pytest", "hypothesis"} <= installed


# ---- tests that need torch on a backend are named after it -----------------------------


def _imports_torch(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "torch" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch"


def _needs_torch(body: list[ast.stmt]) -> bool:
    """Whether ``body`` needs torch on every backend: it calls
    ``pytest.importorskip("torch")``, or imports torch outside of any condition (an
    import under ``if backend.library == "torch"`` needs it on torch only)."""
    for sub in ast.walk(ast.Module(body=body, type_ignores=[])):
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr == "importorskip"
            and sub.args
            and isinstance(sub.args[0], ast.Constant)
            and str(sub.args[0].value).split(".")[0] == "torch"
        ):
            return True
    return any(_imports_torch(node) for node in body)


def _unnamed_torch_tests(path: Path) -> list[str]:
    """The tests of ``path`` on a backend fixture that need torch, directly or through a
    helper or fixture of the module, and whose name and file name lack ``torch``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    helpers = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_")
    }
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    statements = [node for node in tree.body if not isinstance(node, definitions)]
    module_level = _needs_torch(statements)
    if "torch" in path.name:
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
            continue
        arguments = {a.arg for a in node.args.args}
        if not arguments & {"backend", "backend64"} or "torch" in node.name:
            continue
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | arguments
        if (
            module_level
            or _needs_torch(node.body)
            or any(_needs_torch(helpers[u].body) for u in used & set(helpers))
        ):
            found.append(f"{path.name}::{node.name}")
    return found


def test_tests_that_need_torch_on_a_backend_are_named_after_torch():
    unnamed = [
        test for path in sorted(TESTS.glob("test_*.py")) for test in _unnamed_torch_tests(path)
    ]
    assert not unnamed, (
        f"{len(unnamed)} tests need torch on a backend fixture but lack 'torch' in their name, "
        f"so tests-torch's `pytest -k torch` does not run them on NumPy: {unnamed[:5]}"
    )


def test_a_torch_test_without_torch_in_its_name_is_found(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text(
        "import pytest\n\n"
        "def _reference():\n    return pytest.importorskip('torch')\n\n"
        "def test_matches(backend):\n    _reference()\n\n"
        "def test_matches_torch(backend):\n    _reference()\n\n"
        "def test_plain(backend):\n    pass\n",
        encoding="utf-8",
    )
    assert _unnamed_torch_tests(path) == ["test_example.py::test_matches"]


# ---- a missing optional library: skipped with the reason -------------------------------

_HIDE = """
import sys

HIDDEN = {hidden!r}


class _Hiding:
    # A finder of sys.meta_path that finds nothing of HIDDEN, as if it were not installed.
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
"""


def _hiding(libraries: set[str], tmp_path: Path) -> dict[str, str]:
    """An environment in which Python (and the subprocesses it starts) cannot import
    ``libraries``: a ``sitecustomize`` module, first on PYTHONPATH, hides them."""
    site = tmp_path / "site"
    site.mkdir()
    code = _HIDE.format(hidden=sorted(libraries))
    (site / "sitecustomize.py").write_text(code, encoding="utf-8")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_the_hiding_hides(tmp_path):
    code = "import importlib.util as u; print(u.find_spec('numpy'), u.find_spec('pytest') is None)"
    done = subprocess.run(
        [sys.executable, "-c", code + "; import numpy"],
        env=_hiding({"numpy"}, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == "None False\n"
    assert "ModuleNotFoundError: No module named 'numpy'" in done.stderr


def test_tests_whose_optional_library_is_missing_skip_with_the_reason(tmp_path):
    """The tests that failed without scikit-learn or matplotlib, from README.md's route."""
    tests = (
        "tests/test_cli.py::test_default_digits_run_reaches_96_percent",
        "tests/test_cli.py::test_bce_needs_two_classes",
        "tests/test_docs_examples.py::test_tutorial_examples_run",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=_hiding({"sklearn", "matplotlib", "torch"}, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    summary = out.strip().splitlines()[-1] if out.strip() else done.stderr
    assert re.fullmatch(r"\d+ skipped in .*", summary), out[-4000:] + done.stderr[-2000:]
    reasons = "\n".join(line for line in out.splitlines() if line.startswith("SKIPPED"))
    assert reasons.count("no scikit-learn: --dataset digits") == 2
    assert "tutorial-cli.md uses matplotlib, not installed here" in reasons
    assert "tutorial-training.md uses torch, not installed here" in reasons


# ---- README.md's example ---------------------------------------------------------------


def _readme_example() -> tuple[str, str]:
    """README.md's first Python block and the text block that shows its output."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```\n+.*?```text\n(.*?)```", text, re.DOTALL)
    assert match is not None, "README.md should show a ```python block, then its output"
    return match[1], match[2]


_NUMBER = re.compile(r"\d+\.\d+")


def test_the_readme_example_prints_what_the_readme_shows():
    code, shown = _readme_example()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    printed = done.stdout.splitlines()
    expected = shown.splitlines()
    assert [_NUMBER.sub("#", line) for line in printed] == [
        _NUMBER.sub("#", line) for line in expected
    ], done.stdout
    for got, want in zip(printed, expected, strict=True):
        for a, b in zip(_NUMBER.findall(got), _NUMBER.findall(want), strict=True):
            # float32 sums may differ in their last bits from one CPU to another
            assert math.isclose(float(a), float(b), rel_tol=1e-2), (got, want)
    losses = [float(_NUMBER.findall(line)[-1]) for line in printed]
    assert losses == sorted(losses, reverse=True), "the example should show the loss going down"
