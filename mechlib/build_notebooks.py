"""Generate what is derived from the lesson sources: the setup cell and the exercise notebooks.

    python -m mechlib.build_notebooks          # rewrite setup cells, regenerate notebooks/exercises/
    python -m mechlib.build_notebooks --check  # exit 1 if anything is out of date (tests run this)

A lesson's one source is its solution notebook, notebooks/NN_name.ipynb. In it, exercise code sits
between `# BEGIN SOLUTION` and `# END SOLUTION` lines; the exercise notebook gets a stub there and no
outputs. The cell tagged "setup" is rewritten from SETUP_CELL in every lesson.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from mechlib.loading import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
EXERCISES = NOTEBOOKS / "exercises"
REPO_URL = "https://github.com/mechlib-course/mechlib-course"  # the course repository, for Colab

# What Colab keeps of its own when the setup cell installs the course's tested versions (constraints.txt): its
# CUDA build of torch (the pin is the course machines' CPU wheel) and numpy, which its runtime may have imported
# already (a new numpy would need a restart). Everything else gets the tested version.
COLAB_KEEPS = ("torch", "numpy")

SETUP_CELL = f'''# Setup (generated from mechlib/build_notebooks.py: edit it there). On Colab it fetches the course and
# installs mechlib the first time (a minute or two); locally (`make lab`) it only picks the device and the model.
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    REPO_URL = "{REPO_URL}"  # a fork? change it here
    COURSE_DIR = os.environ.get("MECHLIB_COURSE_DIR", "/content/course")
    if not os.path.isdir(f"{{COURSE_DIR}}/mechlib"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", REPO_URL, COURSE_DIR], check=True)
    if not os.path.exists(f"{{COURSE_DIR}}/.colab-installed"):  # once per runtime; a second run skips it
        with open(f"{{COURSE_DIR}}/constraints.txt") as tested, open("/tmp/mechlib-colab-pins.txt", "w") as pins:
            pins.writelines(line for line in tested if line.split("==")[0] not in {COLAB_KEEPS!r})
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/mechlib-colab-pins.txt",
                        "-e", COURSE_DIR], check=True)
        open(f"{{COURSE_DIR}}/.colab-installed", "w").close()
    if COURSE_DIR not in sys.path:
        sys.path.insert(0, COURSE_DIR)  # importable now: an editable install is seen only after a restart
    os.chdir(f"{{COURSE_DIR}}/notebooks")

import torch

from mechlib import best_device, claim, load_model

torch.manual_seed(0)
DEVICE = best_device()
# "course" (word-level, 4 x 4 heads), "course-bpe" (GPT-2's tokenizer, 4 x 8 heads), or "gpt2" (a GPU runtime with
# internet, e.g. Colab's). `make course MODEL=course-bpe` sets it through the environment.
MODEL_NAME = os.environ.get("MECHLIB_MODEL", "course")
# claim(MODEL_NAME, test, text): a claim of the lesson about its numbers, asserted on the two course models; on
# any other model a claim that does not hold is printed as a note, and the lesson goes on.'''

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = 'raise NotImplementedError("Your code here: see the exercise above.")'
_MARK = re.compile(r"^([ \t]*)# (BEGIN|END) SOLUTION[ \t]*$")


def stub_solutions(source: str) -> str:
    """Replace every BEGIN/END SOLUTION block by a stub at the block's indentation."""
    out, inside = [], False
    for n, line in enumerate(source.splitlines(), 1):
        m = _MARK.match(line)
        if m and m.group(2) == "BEGIN":
            if inside:
                raise ValueError(f"line {n}: '{BEGIN}' inside another solution block")
            inside = True
            out.append(m.group(1) + STUB)
        elif m:
            if not inside:
                raise ValueError(f"line {n}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN}' without '{END}'")
    return "\n".join(out)


def has_exercises(nb: nbformat.NotebookNode) -> bool:
    return any(c.cell_type == "code" and BEGIN in c.source for c in nb.cells)


def with_setup_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its "setup"-tagged cell's source set from SETUP_CELL (outputs kept)."""
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if "setup" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a lesson needs exactly one code cell tagged 'setup', found {len(cells)}")
    cells[0].source = SETUP_CELL
    return nb


def solution_block(source: str) -> str:
    """A collapsed block with the cell's code as the lesson has it, without the solution markers."""
    code = "\n".join(line for line in source.splitlines() if not _MARK.match(line))
    return f"<details><summary>Solution</summary>\n\n```python\n{code}\n```\n</details>"


def exercise_notebook(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook: solutions stubbed, each in a collapsed block right below its
    exercise, outputs cleared."""
    ex = copy.deepcopy(nb)
    ex.metadata.pop("widgets", None)  # the widget state of the solution's run: no outputs here to draw it
    cells = []
    for cell in ex.cells:
        cells.append(cell)
        if cell.cell_type == "code":
            solution = solution_block(cell.source) if BEGIN in cell.source else None
            cell.source = stub_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            if solution:
                block = nbformat.v4.new_markdown_cell(solution)
                block.id = f"{cell.id}-solution"[:64]
                cells.append(block)
    ex.cells = cells
    note = nbformat.v4.new_markdown_cell(
        f"*Exercise version, generated from [`../{name}`](../{name}) by `python -m mechlib.build_notebooks`: "
        f"don't edit it by hand. Fill in each `NotImplementedError`; each solution is in a collapsed block right "
        f"below its exercise.*")
    note.id = "exercise-note"
    ex.cells.insert(1, note)
    return ex


def _dump(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def build(check: bool = False) -> list[str]:
    """Bring setup cells and exercise notebooks up to date; return the files that were (or would be) changed."""
    changed = []
    wanted_exercises = set()
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        targets = {path: with_setup_cell(nb)}
        if has_exercises(nb):
            targets[EXERCISES / path.name] = exercise_notebook(targets[path], path.name)
            wanted_exercises.add(path.name)
        for target, new in targets.items():
            text = _dump(new)
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                changed.append(str(target.relative_to(REPO_ROOT)))
                if not check:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text, encoding="utf-8")
    for stale in sorted(EXERCISES.glob("*.ipynb")) if EXERCISES.exists() else []:
        if stale.name not in wanted_exercises:
            changed.append(str(stale.relative_to(REPO_ROOT)))
            if not check:
                stale.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mechlib.build_notebooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    args = p.parse_args(argv)
    changed = build(check=args.check)
    for f in changed:
        print(("out of date: " if args.check else "wrote ") + f)
    if args.check and changed:
        print("run `python -m mechlib.build_notebooks` (or `make notebooks`) and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
