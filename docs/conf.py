"""Sphinx configuration for the Flask-Chimeway documentation."""

from __future__ import annotations

import flask_chimeway

# -- Project ---------------------------------------------------------------------------

project = "Flask-Chimeway"
author = "The Flask-Chimeway team"
copyright = "The Flask-Chimeway team"
release = flask_chimeway.__version__
version = ".".join(release.split(".")[:2])

# -- General ---------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build"]
nitpicky = False

# -- Autodoc ---------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True

#: Return types autodoc cannot resolve on its own: ``Chimeway.track`` is annotated with
#: ``Signal``, a name both ``flask_chimeway.models`` and ``flask_chimeway.workflows`` define.
RETURN_TYPES = {"flask_chimeway.Chimeway.track": "~flask_chimeway.models.Signal"}


def _add_return_type(
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if name in RETURN_TYPES:
        lines.extend(["", f":rtype: {RETURN_TYPES[name]}"])


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _add_return_type)  # type: ignore[attr-defined]


# -- HTML ------------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"Flask-Chimeway {release}"
html_theme_options = {
    "description": "Durable, explainable notifications for Flask.",
    "show_powered_by": False,
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html", "searchbox.html"],
}
