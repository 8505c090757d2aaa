"""Sphinx configuration: the API reference, built from the docstrings (``make docs``)."""

project = "taskactors"
author = "the taskactors developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The public API is what the packages' __init__ modules re-export.
autodoc_preserve_defaults = True
html_theme = "alabaster"
exclude_patterns = ["_build"]
