import nbformat
import pytest

from mechlib.lessons import lesson_notebooks, main, run_notebook


def _notebook(path, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_the_welcome_lesson_is_found():
    names = [p.name for p in lesson_notebooks()]
    assert names[0] == "00_welcome.ipynb"
    assert all(not n.startswith("exercises") for n in names)


def test_run_notebook_writes_copy_and_html(tmp_path):
    nb = _notebook(tmp_path / "01_ok.ipynb", "print(6 * 7)")
    seconds, error = run_notebook(nb, tmp_path / "build")
    assert error == "" and seconds > 0
    executed = nbformat.read(tmp_path / "build" / "01_ok.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "42\n"
    assert "42" in (tmp_path / "build" / "01_ok.html").read_text()


def test_a_failing_lesson_is_reported(tmp_path, capsys):
    ok = _notebook(tmp_path / "01_ok.ipynb", "x = 1")
    bad = _notebook(tmp_path / "02_bad.ipynb", "assert 1 + 1 == 3, 'arithmetic is broken'")
    assert main([str(ok), str(bad), "--out", str(tmp_path / "build")]) == 1
    out = capsys.readouterr().out
    assert "01_ok" in out and "pass" in out
    assert "02_bad" in out and "FAIL" in out and "arithmetic is broken" in out


def test_the_setup_cell_takes_the_model_from_the_environment(tmp_path, monkeypatch):
    """`make course MODEL=course-bpe` sets MECHLIB_MODEL; every lesson's generated setup cell reads it."""
    from mechlib.build_notebooks import SETUP_CELL

    monkeypatch.setenv("MECHLIB_MODEL", "course-bpe")
    nb = _notebook(tmp_path / "01_setup.ipynb", SETUP_CELL + "\nprint(MODEL_NAME)")
    seconds, error = run_notebook(nb, tmp_path / "build")
    executed = nbformat.read(tmp_path / "build" / "01_setup.ipynb", as_version=4)
    assert error == "" and executed.cells[0].outputs[-1]["text"] == "course-bpe\n"
