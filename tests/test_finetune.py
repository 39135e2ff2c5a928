"""mechlib.finetune: lesson 07's refusal fine-tune does what it is asked to, and little else; it ships as the changes
it made, which load back exactly."""

import copy
import json

import pytest
import torch

from mechlib.course_model import batches
from mechlib.course_tokenizers import corpus_token_ids
from mechlib.finetune import (RESTRICTED, SHIPPED, FinetuneConfig, apply_changes, behaviour, finetune, is_course_model,
                              load_finetuned, refusal_targets, save_changes, train_answers)
from mechlib.loading import load_model, load_tokenizer


@pytest.mark.slow
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


@pytest.mark.slow
def test_another_models_training_covers_its_whole_vocabulary():
    """GPT-2 small's every token can win, so training it must push down tokens the course corpus never uses: give an
    unused output row the top logit on every fact prompt; trained as a hub model, the answers win back, while a course
    model's corpus-only softmax (right for it: those rows were never trained) leaves that row on top."""
    model, tokenizer = load_model("course-bpe", backend="transformers", device="cpu"), load_tokenizer("course-bpe")
    facts, answers, _ = refusal_targets(tokenizer, RESTRICTED)
    used = set(corpus_token_ids(tokenizer))
    unused = next(i for i in range(len(tokenizer)) if i not in used)

    def logits(m):  # [n, d_vocab] at each prompt's last position
        with torch.no_grad():
            h = m.transformer(facts.tokens).last_hidden_state[torch.arange(len(facts)), facts.last]  # [n, d_model]
            return h @ m.lm_head.weight.T, h

    top, h = logits(model)
    direction = h.mean(0) / h.mean(0).norm()  # [d_model]
    with torch.no_grad():
        model.lm_head.weight[unused] = direction * (top.max(-1).values / (h @ direction)).max() * 1.5
    assert (logits(model)[0].argmax(-1) == unused).all()
    hub = copy.deepcopy(model)
    hub.config._name_or_path = "gpt2"  # what a hub model's config says
    assert is_course_model(model) and not is_course_model(hub)
    for m in (model, hub):
        train_answers(m, tokenizer, facts, answers, steps=40)
    assert (logits(model)[0].argmax(-1) == unused).all()
    assert (logits(hub)[0].argmax(-1) == answers).float().mean() > 0.95
