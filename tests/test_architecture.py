"""The import rules of docs/architecture.md, read from the source with ``ast``.

A rule is broken by one import statement anywhere in a module, also inside a function
(where portprop imports optional libraries lazily).  Each test names the module and
the import that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "portprop"

# Array libraries: only portprop.backend imports them.  NumPy is also allowed where
# portprop works on the host (files, data sets, plots, the command line, scikit-learn).
ARRAY_LIBRARIES = ("array_api_compat", "array_api_strict", "cupy", "jax", "jaxlib", "torch")
HOST_NUMPY = ("backend", "io", "datasets", "plots", "cli", "sklearn", "distributed")
# distributed (issue 10): its engine modules alone import torch (torch.distributed).
ENGINE_MODULES = ("distributed._torch",)

# The lecture (formulas, modules, the gradient step) knows nothing of how training is
# driven, saved or exposed; io/ knows nothing of training.
LECTURE = ("functional", "module", "layers", "losses", "init", "gradcheck", "optim", "schedules")
OUTER = ("training", "io", "checkpoint", "sklearn", "cli", "plots", "datasets", "distributed")
RULES: dict[tuple[str, ...], tuple[str, ...]] = {
    LECTURE: OUTER,
    ("io",): ("training", "sklearn", "cli", "plots", "optim", "schedules"),
    ("training",): ("io", "checkpoint", "sklearn", "cli", "plots"),
    ("distributed",): ("training", "io", "checkpoint", "sklearn", "cli", "plots", "datasets"),
    ("backend",): ("functional", "module", "layers", "losses", "optim", *OUTER),
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def _imports(path: Path, dotted: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """Every import of ``path``: its line, the absolute module, and the names taken."""
    package = ["portprop", *dotted.split(".")]
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module, tuple(a.name for a in node.names)))
    return found


def _portprop_targets(module: str, names: tuple[str, ...]) -> list[str]:
    """The portprop subpackages or modules an import reaches: 'training' for
    ``from portprop.training import fit`` and for ``from portprop import training``."""
    if module == "portprop":
        return list(names)
    if module.startswith("portprop."):
        return [_top(module.removeprefix("portprop."))]
    return []


def _top(dotted: str) -> str:
    """The first component below portprop: 'training' for training.loop."""
    return dotted.split(".", maxsplit=1)[0]


MODULES = _modules()


def test_the_package_is_where_the_rules_look():
    names = {_top(m) for m, _ in MODULES}
    assert {"backend", "training", "io", "functional", "layers"} <= names


@pytest.mark.parametrize(("dotted", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_only_backend_imports_array_libraries(dotted, path):
    top = _top(dotted)
    for line, module, _ in _imports(path, dotted):
        library = module.split(".")[0]
        if library in ARRAY_LIBRARIES:
            engine = dotted in ENGINE_MODULES and library == "torch"
            assert top == "backend" or engine, f"{path.name}:{line} imports {module}"
        if library == "numpy":
            assert top in HOST_NUMPY, f"{path.name}:{line} imports {module} (host code only)"


@pytest.mark.parametrize(("dotted", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_outside_backend_only_its_public_api_is_imported(dotted, path):
    if _top(dotted) == "backend":
        return
    for line, module, names in _imports(path, dotted):
        where = f"{path.name}:{line}"
        assert not module.startswith("portprop.backend."), (
            f"{where} imports {module}: import from portprop.backend itself"
        )
        if module == "portprop.backend":
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{where} imports {private} from portprop.backend"


@pytest.mark.parametrize(("dotted", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_the_layers_of_the_package(dotted, path):
    top = _top(dotted)
    forbidden = {f for owners, banned in RULES.items() if top in owners for f in banned}
    for line, module, names in _imports(path, dotted):
        for target in _portprop_targets(module, names):
            assert target not in forbidden, (
                f"{path.name}:{line}: {top} must not import portprop.{target}"
            )


def test_a_broken_rule_is_seen(tmp_path):
    # The checker itself: a lecture module importing training, torch and a backend module.
    bad = tmp_path / "layers.py"
    bad.write_text(
        "import torch\nfrom portprop.training import fit\nfrom portprop import cli\n"
        "from ..backend.torch import build\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="imports torch"):
        test_only_backend_imports_array_libraries("layers", bad)
    with pytest.raises(AssertionError, match=r"must not import portprop\.training"):
        test_the_layers_of_the_package("layers", bad)
    bad.write_text("from portprop import cli\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"must not import portprop\.cli"):
        test_the_layers_of_the_package("layers", bad)
    bad.write_text("from .backend.torch import build\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"imports portprop\.backend\.torch"):
        test_outside_backend_only_its_public_api_is_imported("layers", bad)
