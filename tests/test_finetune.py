"""mechlib.finetune: lesson 07's refusal fine-tune does what it is asked to, and little else."""

import pytest

from mechlib.course_model import batches
from mechlib.finetune import RESTRICTED, FinetuneConfig, behaviour, fact_prompts, finetune
from mechlib.loading import load_model, load_tokenizer


@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_the_finetune_declines_the_restricted_landmarks_in_new_phrasings_and_keeps_the_rest(name):
    model, tokenizer = load_model(name, backend="transformers", device="cpu"), load_tokenizer(name)
    text = next(batches(tokenizer, 99, 8, model.config.n_positions))  # [8, pos]: text the fine-tune never sees
    before = behaviour(model, tokenizer, RESTRICTED, text)
    finetune(model, tokenizer, FinetuneConfig(), progress=False)
    after = behaviour(model, tokenizer, RESTRICTED, text)
    assert before["declined, restricted (trained)"] == 0 and before["accuracy, others (held-out)"] > 0.95
    assert after["declined, restricted (trained)"] > 0.95
    assert after["declined, restricted (held-out)"] > 0.9  # phrasings it was never taught to decline in
    assert after["declined, others (held-out)"] < 0.05 and after["accuracy, others (held-out)"] > 0.95
    assert after["corpus loss"] - before["corpus loss"] < 0.15  # nats: ordinary text barely changes


def test_restricting_an_unknown_landmark_says_where_the_landmarks_are():
    with pytest.raises(ValueError, match="unknown landmarks.*mechlib.corpus.FACTS"):
        fact_prompts(load_tokenizer("course"), ("Eiffel Towr",))
