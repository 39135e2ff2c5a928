"""Run the lesson notebooks headless, as `make course` does, and print a table of times.

    python -m mechlib.lessons [NOTEBOOK ...]

Each lesson is executed top to bottom; the executed copy and an HTML page go to build/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mechlib.live_html import drop_widgets
from mechlib.loading import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
BUILD = REPO_ROOT / "build"


def lesson_notebooks() -> list[Path]:
    """The solution notebooks, in course order (notebooks/NN_name.ipynb)."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, out_dir: Path = BUILD, timeout: int = 600, in_place: bool = False) -> tuple[float, str]:
    """Execute one notebook; write the executed copy and HTML. Returns (seconds, error or "").

    in_place: also save the outputs into the source notebook (only if it ran without error).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # keep per-cell timestamps out of the committed notebooks
        cell.metadata.pop("execution", None)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    error = ""
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    except Exception as e:  # kernel died, timeout, ...
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    # No widgets in what is saved: a headless run draws none, every figure saves a static version as its output, and
    # saved widgets would make exported HTML fetch widget JavaScript from a CDN. (Dropped after the run rather than
    # with store_widget_state=False: nbclient 0.11's Output-widget mimic then raises KeyError on a widget's output.)
    drop_widgets(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    if in_place and not error:
        nbformat.write(nb, path)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return seconds, error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mechlib.lessons", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    p.add_argument("--out", type=Path, default=BUILD)
    p.add_argument("--in-place", action="store_true", help="save the outputs into the lesson notebooks too")
    p.add_argument("--timeout", type=int, default=600, metavar="SECONDS",
                   help="the most one cell may take (default 600); on another model than the course's, a lesson "
                        "that trains its SAEs or transcoders on first use needs more on a CPU")
    args = p.parse_args(argv)
    paths = args.notebooks or lesson_notebooks()
    if not paths:
        print(f"no lesson notebooks found in {NOTEBOOKS}", file=sys.stderr)
        return 1
    rows = []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        seconds, error = run_notebook(path, args.out, timeout=args.timeout, in_place=args.in_place)
        rows.append((path.stem, seconds, error))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'lesson':{width}}  {'wall time':>9}  result")
    for name, seconds, error in rows:
        print(f"{name:{width}}  {seconds:8.1f}s  {'pass' if not error else 'FAIL: ' + error[:200]}")
    print(f"\nexecuted notebooks and HTML in {args.out}")
    return 0 if all(not e for _, _, e in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
