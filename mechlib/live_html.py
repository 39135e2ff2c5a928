"""Interactive figures that work with and without a kernel: a static, self-contained HTML/JS version (no CDN: it
works offline, in exported HTML and on the course website) and, in a live kernel, an ipywidgets version.

Why two outputs: nbconvert's HTMLExporter (and myst-nb) rank a widget view above "text/html" and draw it with
widget JavaScript from a CDN wherever the notebook holds widget state (nbclient saves it by default; JupyterLab can
be set to). So `Browsable` shows the static HTML as
one output and, in a kernel, the widget as a second, hidden one; when a real frontend draws the widget, it bumps
`_view_count`, and the kernel unhides the widget and blanks the static copy. Headless runs never draw it, so the
executed notebook, its HTML export and the website keep only the static version, which needs no kernel
(`drop_widgets` removes the hidden widget's output and state from what `mechlib.lessons` and the website save).
"""

from __future__ import annotations

import html
import importlib.util
import json
from typing import Any, Callable

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: every "<" escaped, so that no string in it ("</script>", "<!--") can
    end the script or change how the HTML parser reads it."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def drop_widgets(nb) -> None:
    """Remove a notebook's widget state and widget-view outputs (in place): nothing draws them without a live kernel,
    and exported HTML would fetch widget JavaScript from a CDN to try. Every figure's static version stays."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]


def iframe(page: str, height: int, max_width: int = 920) -> str:
    """A whole HTML page inside a sandboxed iframe (srcdoc): its script runs in JupyterLab, which does not run
    scripts in plain HTML outputs, as well as in exported HTML and on a static site."""
    return (f'<div><iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;max-width:{max_width}px;'
            f'height:{height}px;border:0" sandbox="allow-scripts"></iframe></div>')


def page(body: str, script: str, data: Any, style: str = "") -> str:
    """A self-contained HTML page: `body`, then `script` run with `DATA` bound to `data` (JSON)."""
    payload = script_json(data)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{font-family:sans-serif;font-size:13px;"
            f"margin:4px}}{style}</style></head><body>{body}<script>const DATA={payload};\n{script}</script>"
            "</body></html>")


class Browsable:
    """A figure with a static HTML twin. `static_html` is what readers without a kernel get; `make_widget` builds
    the ipywidgets version for a live kernel (called only there)."""

    def __init__(self, static_html: str, make_widget: Callable[[], Any], text: str) -> None:
        self.static_html, self.make_widget, self.text = static_html, make_widget, text

    def html(self) -> str:
        return self.static_html

    def widget(self):
        return self.make_widget()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.static_html, "text/plain": self.text}

    def _ipython_display_(self) -> None:
        display_live(self._repr_mimebundle_(), self.make_widget)


def display_live(bundle: dict[str, str], make_widget: Callable[[], Any]) -> None:
    """Display `bundle` (the static version) and, in a live kernel with ipywidgets, a hidden widget that replaces
    it once a frontend draws the widget (see the module's docstring)."""
    from IPython import get_ipython
    from IPython.display import display

    static = display(bundle, raw=True, display_id=True)
    if getattr(get_ipython(), "kernel", None) is None or importlib.util.find_spec("ipywidgets") is None:
        return  # a terminal (the text is all there is), or no widgets
    box = make_widget()
    box.layout.display = "none"
    box._view_count = 0  # the frontend counts views from here on; a headless run never does

    def drawn(change: dict) -> None:
        if change["new"]:
            box.layout.display = None
            static.update({"text/plain": ""}, raw=True)
            box.unobserve(drawn, "_view_count")

    box.observe(drawn, "_view_count")
    display({WIDGET_VIEW: box.get_view_spec(), "text/html": "", "text/plain": ""}, raw=True)
