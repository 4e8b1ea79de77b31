"""Sphinx configuration of the portprop documentation.

Build with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

# Document the sources of this checkout even where portprop is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import portprop

project = "portprop"
author = "The portprop developers"
copyright = "the portprop developers"
release = portprop.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown pages: $...$ and $$...$$ math, and amsmath environments.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# Docstrings are numpydoc style.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# References that cannot be resolved are not reported (no intersphinx, no network).
nitpicky = False

html_theme = "alabaster"
html_title = f"portprop {release}"
html_static_path: list[str] = []
