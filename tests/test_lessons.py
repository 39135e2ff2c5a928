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


def test_a_figure_with_a_live_widget_runs_headless_and_saves_only_its_static_version(tmp_path):
    """A browser's hidden widget draws into an ipywidgets Output at once; the headless run must take that, and save
    the static HTML with no widget state, so that the exported HTML draws nothing from a CDN."""
    nb = _notebook(tmp_path / "01_browser.ipynb", "import torch\nfrom mechlib.plotting import attention_browser\n"
                   "attention_browser(torch.rand(2, 2, 3, 3).softmax(-1), ['a', 'b', 'c'])")
    seconds, error = run_notebook(nb, tmp_path / "build", in_place=True)
    assert error == ""
    executed = nbformat.read(nb, as_version=4)
    assert "widgets" not in executed.metadata
    static = [o for o in executed.cells[0].outputs if 'id=&quot;layer&quot;' in o.get("data", {}).get("text/html", "")]
    assert len(static) == 1
    html = (tmp_path / "build" / "01_browser.html").read_text()
    assert "id=&quot;layer&quot;" in html and "embed-amd" not in html  # the static browser, no widget manager


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


@pytest.mark.slow
def test_a_cell_over_the_timeout_fails_the_lesson_and_a_longer_timeout_lets_it_finish(tmp_path, capsys):
    """--timeout: a lesson that trains its transcoders on first use (another model, on a CPU) needs more than the
    default 600 s per cell."""
    slow = _notebook(tmp_path / "01_slow.ipynb", "import time\ntime.sleep(3)")
    assert main([str(slow), "--out", str(tmp_path / "build"), "--timeout", "1"]) == 1
    assert "timed out" in capsys.readouterr().out
    assert main([str(slow), "--out", str(tmp_path / "build"), "--timeout", "30"]) == 0
