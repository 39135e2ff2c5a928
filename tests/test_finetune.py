"""mechlib.finetune: lesson 07's refusal fine-tune does what it is asked to, and little else; it ships as the changes
it made, which load back exactly."""

import copy
import json

import pytest
import torch

from mechlib.course_model import batches
from mechlib.finetune import (RESTRICTED, SHIPPED, FinetuneConfig, apply_changes, behaviour, finetune, load_finetuned,
                              refusal_targets, save_changes)
from mechlib.loading import load_model, load_tokenizer


@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_the_finetune_declines_the_restricted_landmarks_in_new_phrasings_and_keeps_the_rest(name, tmp_path):
    model, tokenizer = load_model(name, backend="transformers", device="cpu"), load_tokenizer(name)
    base = copy.deepcopy(model)
    text = next(batches(tokenizer, 99, 8, model.config.n_positions))  # [8, pos]: text the fine-tune never sees
    before = behaviour(model, tokenizer, RESTRICTED, text)
    finetune(model, tokenizer, FinetuneConfig(), progress=False)
    after = behaviour(model, tokenizer, RESTRICTED, text)
    assert before["declined, restricted (trained)"] == 0 and before["accuracy, others (held-out)"] > 0.95
    assert after["declined, restricted (trained)"] > 0.95
    assert after["declined, restricted (held-out)"] > 0.9  # phrasings it was never taught to decline in
    assert after["declined, others (held-out)"] < 0.05 and after["accuracy, others (held-out)"] > 0.95
    assert after["corpus loss"] - before["corpus loss"] < 0.15  # nats: ordinary text barely changes
    # saved as its changes, it loads back exactly
    save_changes(model, base, tmp_path)
    restored = apply_changes(copy.deepcopy(base), tmp_path)
    for (key, p), q in zip(model.named_parameters(), restored.parameters()):
        assert torch.equal(p, q), key
    # the shipped fine-tune behaves as its record says, and as this run (floating-point sums differ with the number
    # of threads, so the weights agree only approximately)
    record = json.loads((SHIPPED / name / "finetune.json").read_text())
    shipped = behaviour(apply_changes(copy.deepcopy(base), SHIPPED / name), tokenizer, RESTRICTED, text)
    for key, value in record["after"].items():
        assert abs(shipped[key] - value) < 1e-4 and abs(after[key] - value) < (0.02 if key == "corpus loss" else 0.01), key


def test_the_shipped_finetune_loads_for_transformer_lens_and_declines():
    model = load_finetuned("course", device="cpu")
    facts, answers, refuse = refusal_targets(model.tokenizer, RESTRICTED, held_out=True)
    logits = model(facts.tokens)[torch.arange(len(facts)), facts.last]  # [n, d_vocab]
    assert torch.equal(logits.argmax(-1) == answers, torch.ones(len(facts), dtype=torch.bool))


def test_changes_for_another_model_are_refused():
    with pytest.raises(ValueError, match="made for another model"):
        apply_changes(load_model("course-bpe", backend="transformers", device="cpu"), SHIPPED / "course")


def test_restricting_an_unknown_landmark_says_where_the_landmarks_are():
    with pytest.raises(ValueError, match="unknown landmarks.*mechlib.corpus.FACTS"):
        refusal_targets(load_tokenizer("course"), ("Eiffel Towr",))
