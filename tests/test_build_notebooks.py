import nbformat
import pytest

from mechlib.build_notebooks import SETUP_CELL, STUB, build, exercise_notebook, stub_solutions, with_setup_cell


def test_solution_blocks_become_stubs_at_their_indentation():
    src = "def f(x):\n    '''Double x.'''\n    # BEGIN SOLUTION\n    y = 2 * x\n    return y\n    # END SOLUTION\n\nprint(f(2))"
    assert stub_solutions(src) == f"def f(x):\n    '''Double x.'''\n    {STUB}\n\nprint(f(2))"
    assert stub_solutions("a = 1\n# BEGIN SOLUTION\nb = 2\n# END SOLUTION") == f"a = 1\n{STUB}"
    assert stub_solutions("no exercise here") == "no exercise here"


@pytest.mark.parametrize("src", ["# BEGIN SOLUTION\nx = 1", "x = 1\n# END SOLUTION",
                                 "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"])
def test_unbalanced_markers_are_errors(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        stub_solutions(src)


def _lesson():
    setup = nbformat.v4.new_code_cell("old setup")
    setup.metadata["tags"] = ["setup"]
    ex = nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 42\n    # END SOLUTION\nf()")
    ex.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "42"}, execution_count=1)]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · A lesson"), setup, ex])


def test_exercise_notebook_has_stubs_no_outputs_and_the_template_setup():
    nb = with_setup_cell(_lesson())
    assert nb.cells[1].source == SETUP_CELL
    ex = exercise_notebook(nb, "01_lesson.ipynb")
    assert "generated from" in ex.cells[1].source
    code = [c for c in ex.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "return 42" not in code[-1].source and STUB in code[-1].source
    assert nb.cells[2].outputs  # the solution notebook keeps its outputs
    below = ex.cells[ex.cells.index(code[-1]) + 1]  # the exercise's solution, collapsed, right below it
    assert below.cell_type == "markdown" and below.source.startswith("<details><summary>Solution</summary>")
    assert "return 42" in below.source and "SOLUTION" not in below.source


def test_a_lesson_needs_one_setup_cell():
    nb = _lesson()
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="setup"):
        with_setup_cell(nb)


def test_notebooks_are_in_sync_with_their_sources():
    assert build(check=True) == [], "run `python -m mechlib.build_notebooks` and commit the result"
