import re
from types import SimpleNamespace

import nbformat
import pytest
import torch

from mechlib.quiz import Question, Quiz

DETAILS = re.compile(r"<details>.*?</details>", re.S)


def make_quiz(answer: int = 1) -> Quiz:
    return Quiz([
        Question("Which layer reads `resid_pre`? <script>alert(1)</script>", ["L0 & L1", "L2", "L3"], answer,
                 "WHY-ONE: attention <b>reads</b> it"),
        Question("Is the residual stream a sum?", ["yes", "no"], 0, "WHY-TWO: every component adds to it"),
    ], title="Lesson <01> quiz")


@pytest.mark.parametrize("kwargs, message", [
    (dict(choices=["a", "b"], answer=2), "out of range"),
    (dict(choices=["a", "b"], answer=-1), "out of range"),
    (dict(choices=["a"], answer=0), "at least 2 choices"),
    (dict(choices=["a", "a"], answer=0), "duplicate"),
    (dict(choices=["a", "b"], answer=0, why="  "), "explanation"),
])
def test_question_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Question(**{"prompt": "p", "why": "because", **kwargs})


def test_quiz_needs_questions():
    with pytest.raises(ValueError):
        Quiz([])


def test_from_values_picks_the_run_dependent_answer():
    scores = {"L0H1": 0.1, "L1H3": torch.tensor(0.93), "L1H5": -0.4}
    q = Question.from_values("Which head has the largest induction score?", scores, why="{answer}: {value:.2f}")
    assert q.choices[q.answer] == "L1H3" and q.why == "L1H3: 0.93"
    q = Question.from_values("Which head has the smallest?", scores, pick="min")
    assert q.choices[q.answer] == "L1H5" and "smallest" in q.why
    with pytest.raises(ValueError, match="tie"):
        Question.from_values("tied", {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="pick"):
        Question.from_values("bad", scores, pick="median")


def test_from_values_top_keeps_the_best_options_and_one_of_a_tie():
    scores = {"a": 0.5, "b": 0.9, "c": 0.9, "d": 0.1, "e": 0.7, "f": 0.3}
    q = Question.from_values("Which is largest?", scores, top=3)
    assert q.choices == ["a", "b", "e"] and q.choices[q.answer] == "b"  # c (tied with b) and the weakest dropped
    q = Question.from_values("Which is smallest?", scores, pick="min", top=2)
    assert q.choices == ["d", "f"] and q.choices[q.answer] == "d"


def test_answer_key_and_check():
    quiz = make_quiz()
    assert quiz.answers() == ["L2", "yes"]
    assert quiz.check([1, 0]) == 2 and quiz.check([0, 0]) == 1 and quiz.check([2, 1]) == 0
    with pytest.raises(ValueError, match="2 questions"):
        quiz.check([1])


def test_html_hides_every_answer_in_details_and_escapes():
    page = make_quiz().html()
    assert page.count("<details>") == 2
    outside = DETAILS.sub("", page)
    assert "WHY-ONE" not in outside and "WHY-TWO" not in outside
    # nothing outside <details> says which choice is right
    assert DETAILS.sub("", make_quiz(answer=2).html()) == outside
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>resid_pre</code>" in page and "L0 &amp; L1" in page and "&lt;b&gt;reads" in page
    assert "Lesson &lt;01&gt; quiz" in page


def test_plain_text_lists_questions_without_answers():
    text = make_quiz()._repr_mimebundle_()["text/plain"]
    assert "1. Which layer" in text and "   C. L3" in text and "B. no" in text
    assert "WHY" not in text and "Answer" not in text


def test_widget_says_wrong_then_right_and_reveals():
    box = make_quiz().widget()
    prompt, radio, buttons, feedback = box.children[1].children
    check, reveal = buttons.children
    check.click()
    assert "Pick an answer" in feedback.value
    radio.value = "L3"
    check.click()
    assert "Not quite" in feedback.value and "WHY-ONE" not in feedback.value
    radio.value = "L2"
    check.click()
    assert "Right" in feedback.value and "WHY-ONE" in feedback.value
    feedback.value = ""
    reveal.click()
    assert "L2" in feedback.value and "WHY-ONE" in feedback.value


def test_live_frontend_swaps_the_static_quiz_for_the_widget(monkeypatch):
    import IPython
    import IPython.display

    shown, updates, boxes = [], [], []
    handle = SimpleNamespace(update=lambda obj, **kwargs: updates.append(obj))
    monkeypatch.setattr(IPython, "get_ipython", lambda: SimpleNamespace(kernel=object()))
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kwargs: shown.append(obj) or handle)
    build = Quiz.widget
    monkeypatch.setattr(Quiz, "widget", lambda self: boxes.append(build(self)) or boxes[-1])
    make_quiz()._ipython_display_()
    (static, view), (box,) = shown, boxes
    assert "<details>" in static["text/html"]
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
    assert box.layout.display == "none" and not updates  # headless: only the static quiz is visible
    box._view_count = 1  # what the frontend sends when it draws the widget
    assert box.layout.display is None and updates == [{"text/plain": ""}]


def test_executed_notebook_exports_collapsed_answers(tmp_path):
    """Run a quiz cell headless as the lessons are run (nbclient saves widget state by default), export
    to HTML with and without that state: the outputs show each answer once, inside <details>, and the hidden
    widget never shows. (The cell's own source names the answers too: exclude_input leaves it out.)"""
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from mechlib.quiz import Question, Quiz\n"
        "Quiz([Question('Which head copies?', ['L0H0', 'L1H3'], 1, 'WHY-SECRET: it attends back'),\n"
        "      Question('Sum?', ['yes', 'no'], 0, 'WHY-OTHER: components add')])"))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data", "display_data"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    box_state = state[outputs[1].data["application/vnd.jupyter.widget-view+json"]["model_id"]]["state"]
    assert state[box_state["layout"].removeprefix("IPY_MODEL_")]["state"]["display"] == "none"

    without_state = nbformat.from_dict(nb)
    del without_state.metadata["widgets"]
    for notebook in (nb, without_state):
        page, _ = HTMLExporter(exclude_input=True).from_notebook_node(notebook)
        body = page[page.index("<body"):]
        assert body.count("<details>") == 2
        assert body.count("WHY-SECRET") == body.count("WHY-OTHER") == 1
        assert "WHY-SECRET" not in DETAILS.sub("", body)
        assert "Which head copies?" in body and "L1H3" in body


def test_every_lesson_ends_with_a_quiz_of_at_least_five_questions_and_checks_its_key():
    import ast

    import nbformat

    from mechlib.lessons import lesson_notebooks

    for path in lesson_notebooks():
        nb = nbformat.read(path, as_version=4)
        quiz_cells = [c for c in nb.cells if "quiz" in c.metadata.get("tags", [])]
        assert len(quiz_cells) == 1 and nb.cells[-1] is quiz_cells[0], f"{path.name}: one quiz cell, the last"
        tree = ast.parse(quiz_cells[0].source)
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        questions = [n for n in calls if ast.unparse(n.func) in ("Question", "Question.from_values")]
        run_dependent = [n for n in questions if ast.unparse(n.func) == "Question.from_values"]
        assert len(questions) >= 5 and run_dependent, f"{path.name}: {len(questions)} questions"
        asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert any("quiz.answers()" in ast.unparse(a) for a in asserts), f"{path.name}: the answer key is not checked"
        assert "remove-input" in quiz_cells[0].metadata["tags"]  # the source holds the answers: hidden on the page
