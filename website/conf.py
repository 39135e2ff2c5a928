"""Sphinx configuration of the course website (`make site`, `python -m mechlib.site`). The sources are staged by
mechlib/site.py into build/site-src; this file and the pages next to it are their templates."""

from mechlib.build_notebooks import REPO_URL

project = "Mechanistic interpretability, hands on"
author = "the mechlib course"
copyright = "the mechlib course authors, MIT licence"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["exercises/**", "**/.ipynb_checkpoints"]
suppress_warnings = ["misc.highlighting_failure"]

# The lessons are executed and committed with their outputs: the site shows those, and never runs a kernel.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN (the figures ship static HTML/JS versions)
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "light"}  # with no mode set, the theme logs a console error
html_css_files = ["course.css"]
html_last_updated_fmt = None
html_show_sourcelink = False
html_theme_options = {
    "repository_url": REPO_URL,
    "use_repository_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
