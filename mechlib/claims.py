"""A lesson's claims about its own numbers: asserted on the course's shipped models, reported on any other.

Each lesson's prose was written from what the shipped models ("course", "course-bpe") print, and CI asserts every
such claim on both. On GPT-2 small, or any other model a learner picks, the same code prints that model's numbers,
and a claim may not hold there: that is a finding about the model, not an error, so the lesson goes on and says so.
"""

from __future__ import annotations

from mechlib.loading import MODEL_DIRS


def claim(model_name: str, holds: object, text: str) -> bool:
    """Check the lesson's claim `text` about the numbers above; `holds` is the test (a bool or a 1-element tensor).

    On a shipped model a claim that does not hold raises AssertionError (the lesson or mechlib changed); on any other
    model it prints a note and returns False, so the rest of the lesson still runs."""
    if bool(holds):
        return True
    if model_name in MODEL_DIRS:
        raise AssertionError(f"on {model_name}, the lesson's claim that {text} does not hold for the numbers above")
    print(f"Note: the lesson claims that {text}; on {model_name} that does not hold (the prose describes the course "
          f"models {' and '.join(MODEL_DIRS)}).")
    return False
