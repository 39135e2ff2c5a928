"""mechlib.claims: a lesson's claim stops the lesson on a shipped course model when it fails, and on any other
model (GPT-2 small on Colab) is reported, so that the lesson runs on."""

import pytest
import torch

from mechlib import claim


def test_a_claim_that_holds_passes_silently_on_any_model(capsys):
    assert claim("course", True, "x") and claim("gpt2", torch.tensor(True), "x")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_a_failed_claim_stops_a_shipped_model_with_the_claim_named(name):
    with pytest.raises(AssertionError, match=f"on {name}, the lesson's claim that the heads copy does not hold"):
        claim(name, torch.tensor(False), "the heads copy")


def test_a_failed_claim_on_another_model_is_reported_and_the_lesson_goes_on(capsys):
    assert claim("gpt2", 0.3 > 0.5, "the probe reads over half") is False
    out = capsys.readouterr().out
    assert "claims that the probe reads over half" in out and "on gpt2 that does not hold" in out
