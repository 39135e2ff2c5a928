"""End-of-lesson quizzes: multiple-choice questions whose answers stay hidden until the learner asks,
interactive (ipywidgets) in a live kernel and a collapsed `<details>` block in static HTML (no JavaScript), shown
as `mechlib.live_html` shows every figure that has both versions.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from mechlib.live_html import display_live

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _html(text: str) -> str:
    """Escape text for HTML, turning `backticks` into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _answer_html(q: Question) -> str:
    return f"<b>{_LETTERS[q.answer]}. {_html(q.choices[q.answer])}</b>: {_html(q.why)}"


@dataclass
class Question:
    """One multiple-choice question: choices[answer] is right, and `why` says why."""
    prompt: str
    choices: list[str]
    answer: int
    why: str

    def __post_init__(self) -> None:
        self.choices = list(self.choices)
        if len(self.choices) < 2:
            raise ValueError(f"question {self.prompt!r} needs at least 2 choices, got {len(self.choices)}")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"question {self.prompt!r} has duplicate choices: {self.choices}")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"question {self.prompt!r}: answer index {self.answer} is out of range "
                             f"for {len(self.choices)} choices")
        if not self.why.strip():
            raise ValueError(f"question {self.prompt!r} needs an explanation (why)")

    @classmethod
    def from_values(cls, prompt: str, options: Mapping[str, Any], pick: Literal["max", "min"] = "max",
                    why: str = "{answer} has the {pick} value ({value:.3g}).", top: int | None = None) -> Question:
        """A question answered by the learner's own run: the choice whose value (a number or 0-d tensor) is
        largest (pick="max") or smallest ("min"). `why` may use {answer}, {value} and {pick}.

        top: offer only the `top` best options (in their given order), and of options tied with the best, only
        the first: one choice is right whatever the run. Without it, a tie for the best raises."""
        if pick not in ("max", "min"):
            raise ValueError(f'pick must be "max" or "min", got {pick!r}')
        values = {k: float(v) for k, v in options.items()}
        if top is not None:
            ranked = sorted(values, key=values.__getitem__, reverse=pick == "max")  # stable: the first of a tie leads
            keep = set(([ranked[0]] + [k for k in ranked[1:] if values[k] != values[ranked[0]]])[:top])
            values = {k: v for k, v in values.items() if k in keep}
        best = (max if pick == "max" else min)(values.values())
        winners = [k for k, v in values.items() if v == best]
        if len(winners) > 1:
            raise ValueError(f"{winners} tie at {best}: the question would have more than one right answer "
                             f"(top=k keeps only the first of them)")
        choices = list(values)
        return cls(prompt, choices, choices.index(winners[0]),
                   why.format(answer=winners[0], value=best, pick="largest" if pick == "max" else "smallest"))


class Quiz:
    """A section quiz. In Jupyter it is interactive; in static HTML each answer sits in a closed <details>."""

    def __init__(self, questions: Sequence[Question], title: str = "Quiz") -> None:
        if not questions or not all(isinstance(q, Question) for q in questions):
            raise ValueError("a Quiz needs a non-empty list of Question objects")
        self.questions, self.title = list(questions), title

    def answers(self) -> list[str]:
        """The answer key: each question's correct choice."""
        return [q.choices[q.answer] for q in self.questions]

    def check(self, responses: Sequence[int]) -> int:
        """How many of the responses (one choice index per question) are right."""
        if len(responses) != len(self.questions):
            raise ValueError(f"got {len(responses)} responses for {len(self.questions)} questions")
        return sum(r == q.answer for r, q in zip(responses, self.questions))

    def html(self) -> str:
        """Static HTML, no JavaScript: the choices listed, answer and why in a collapsed <details>."""
        items = []
        for q in self.questions:
            choices = "".join(f"<li>{_html(c)}</li>" for c in q.choices)
            items.append(f'<li><p>{_html(q.prompt)}</p><ol type="A">{choices}</ol>'
                         f"<details><summary>Answer</summary><p>{_answer_html(q)}</p></details></li>")
        return f'<div class="mechlib-quiz"><h4>{html.escape(self.title)}</h4><ol>{"".join(items)}</ol></div>'

    def text(self) -> str:
        """Plain text (a terminal): questions and choices, no answers."""
        lines = [self.title]
        for i, q in enumerate(self.questions, 1):
            lines += [f"{i}. {q.prompt}"] + [f"   {_LETTERS[j]}. {c}" for j, c in enumerate(q.choices)]
        return "\n".join(lines)

    __str__ = text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.html(), "text/plain": self.text()}

    def widget(self):
        """The interactive quiz: per question, choices, "Check" (right/wrong, then why), "Show answer"."""
        import ipywidgets as widgets

        return widgets.VBox([widgets.HTML(f"<h4>{html.escape(self.title)}</h4>")]
                            + [_question_widget(q, i) for i, q in enumerate(self.questions, 1)])

    def _ipython_display_(self) -> None:
        display_live(self._repr_mimebundle_(), self.widget)


def _question_widget(q: Question, number: int):
    """One question's widget: VBox(prompt, RadioButtons, HBox(Check, Show answer), feedback HTML)."""
    import ipywidgets as widgets

    radio = widgets.RadioButtons(options=q.choices, value=None, layout=widgets.Layout(width="max-content"))
    check, reveal = widgets.Button(description="Check"), widgets.Button(description="Show answer")
    feedback = widgets.HTML()

    def on_check(_=None) -> None:
        if radio.value is None:
            feedback.value = "Pick an answer first."
        elif radio.index == q.answer:
            feedback.value = f"✅ Right. {_html(q.why)}"
        else:
            feedback.value = "❌ Not quite: try another choice, or show the answer."

    check.on_click(on_check)
    reveal.on_click(lambda _: setattr(feedback, "value", _answer_html(q)))
    return widgets.VBox([widgets.HTML(f"<p><b>{number}.</b> {_html(q.prompt)}</p>"), radio,
                         widgets.HBox([check, reveal]), feedback])
