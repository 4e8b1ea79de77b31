"""Run the examples of the tutorials (``docs/tutorial-*.md``) as they are written.

Each page is one test.  Its fenced blocks run in the order of the page, in a fresh
temporary working directory:

- every ```` ```python ```` block is executed, all of a page's blocks in one namespace,
  so that a block may use what an earlier one defined;
- every line ``$ portprop ...`` of a ```` ```console ```` block runs as
  ``python -m portprop ...`` in a subprocess and must exit with status 0 (the lines
  that follow it show its output and are not compared);
- a block right after a line ``<!-- not-run -->`` is skipped (GPU-only snippets);
- a block that uses JAX where JAX is not installed (every nox session but
  ``tests-jax``) is skipped, and the page is then reported as skipped, with the lines
  and the reason, after its other blocks have run.  A page that uses torch is skipped
  as a whole without torch (its later blocks reuse what the torch blocks built), and so
  is a page that uses scikit-learn or matplotlib without them.

The suite's ``filterwarnings = error`` applies, so an example that warns fails.
``PORTPROP_BACKEND`` is removed from the environment: the examples run on NumPy unless
they name another backend.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("tutorial-*.md"))
SKIP_MARKER = "<!-- not-run -->"
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_CLI_TIMEOUT_S = 120
#: Optional libraries that a single block may use, and how it shows that it does.
_OPTIONAL = {
    "jax": re.compile(r"""\bimport jax\b|["']jax(?::[^"']*)?["']|--backend jax"""),
}
_USES_TORCH = re.compile(r"""\bimport torch\b|["']torch(?::[^"']*)?["']|--backend torch""")
#: Optional libraries that a page's examples may need, whose results later blocks reuse:
#: without the library the page is skipped as a whole, with the reason.
_PAGE_NEEDS = {
    "torch": _USES_TORCH,
    "sklearn": re.compile(
        r"--dataset digits\b|\bload_digits\b|\bsklearn\b|\bMLP(Classifier|Regressor)\b"
    ),
    "matplotlib": re.compile(r"--plot\b|\bmatplotlib\b|\bplot_(history|decision_boundary)\b"),
}


@dataclass
class Block:
    """A fenced block of a page: its language, its text and where it starts."""

    language: str
    text: str
    line: int  # 1-based line of the first line of code
    skipped: bool


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order.

    A block ends at a closing fence of the same character, at least as long as the
    opening one.  MyST directives (```` ```{toctree} ````) are returned like code, with
    their braces in ``language``.
    """
    blocks = []
    lines = text.splitlines()
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence = match["fence"]
        language = match["info"].strip().split(" ", 1)[0] if match["info"].strip() else ""
        start = i + 1
        end = start
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            end += 1
        else:
            msg = f"unclosed fence {fence!r} opened on line {i + 1}"
            raise ValueError(msg)
        blocks.append(
            Block(
                language=language,
                text="\n".join(lines[start:end]) + "\n",
                line=start + 1,
                skipped=previous == SKIP_MARKER,
            )
        )
        previous = ""
        i = end + 1
    return blocks


def console_commands(block: Block) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` for each ``$ portprop ...`` line of a console block."""
    commands = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ portprop"):
            argv = shlex.split(line[2:], comments=True)
            commands.append((block.line + offset, argv[1:]))
    return commands


def run_console(block: Block, page: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PORTPROP_BACKEND"}
    for line, args in console_commands(block):
        command = [sys.executable, "-m", "portprop", *args]
        done = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            msg = (
                f"{page.name}:{line}: `portprop {shlex.join(args)}` exited with status "
                f"{done.returncode}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
            )
            pytest.fail(msg)


def test_the_tutorials_exist() -> None:
    names = {page.name for page in PAGES}
    assert {
        "tutorial-training.md",
        "tutorial-estimator.md",
        "tutorial-checkpoints.md",
        "tutorial-cli.md",
    } <= names


def test_fenced_blocks_are_found() -> None:
    text = (
        "intro\n\n```python\nx = 1\n```\n\n<!-- not-run -->\n\n````python\ny = 2\n"
        "```\nstill code\n````\n\n```console\n$ portprop backends\nbackend status\n```\n"
    )
    blocks = fenced_blocks(text)
    assert [(b.language, b.line, b.skipped) for b in blocks] == [
        ("python", 4, False),
        ("python", 10, True),
        ("console", 16, False),
    ]
    assert blocks[1].text == "y = 2\n```\nstill code\n"
    assert console_commands(blocks[2]) == [(16, ["backends"])]


_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def test_the_cli_page_names_every_option_and_no_other(capsys: pytest.CaptureFixture[str]) -> None:
    from portprop.cli import main

    assert main(["--help"]) == 0
    known = set(_OPTION.findall(capsys.readouterr().out))
    undocumented = {}
    page = set(_OPTION.findall((DOCS / "tutorial-cli.md").read_text(encoding="utf-8")))
    for command in ("train", "evaluate", "predict", "backends"):
        assert main([command, "--help"]) == 0
        options = set(_OPTION.findall(capsys.readouterr().out)) - {"--help"}
        known |= options
        if options - page:
            undocumented[command] = sorted(options - page)
    assert not undocumented, f"options missing from docs/tutorial-cli.md: {undocumented}"
    assert page <= known, f"docs/tutorial-cli.md names unknown options {sorted(page - known)}"


def missing_libraries(block: Block) -> list[str]:
    """The optional libraries that ``block`` uses and that are not installed."""
    return [
        name
        for name, pattern in _OPTIONAL.items()
        if pattern.search(block.text) and importlib.util.find_spec(name) is None
    ]


def test_blocks_that_need_a_missing_library_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "jax" else find_spec(name)
    )
    uses_jax = Block("python", 'with pp.use_backend("jax:0"):\n    pass\n', 1, skipped=False)
    no_jax = Block("python", "jax_model = None  # a name, not the library\n", 1, skipped=False)
    assert missing_libraries(uses_jax) == ["jax"]
    assert missing_libraries(no_jax) == []


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_tutorial_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTPROP_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    text = page.read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    code = "".join(b.text for b in blocks if not b.skipped and b.language in ("python", "console"))
    for library, uses in _PAGE_NEEDS.items():
        if uses.search(code):
            pytest.importorskip(library, reason=f"{page.name} uses {library}, not installed here")
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    ran = 0
    left_out = []
    for block in blocks:
        if block.skipped or block.language not in ("python", "console"):
            continue
        missing = missing_libraries(block)
        if missing:
            left_out.append(f"line {block.line} needs {', '.join(missing)}")
            continue
        if block.language == "python":
            # Pad with blank lines so that a traceback shows the line number of the page.
            source = "\n" * (block.line - 1) + block.text
            exec(compile(source, str(page), "exec"), namespace)  # noqa: S102
            ran += 1
        elif block.language == "console" and console_commands(block):
            run_console(block, page, tmp_path)
            ran += 1
    assert ran > 0, f"{page.name} has no example that runs"
    if left_out:
        pytest.skip(f"{page.name}: {ran} blocks ran; not installed here: {'; '.join(left_out)}")
