"""mechlib.prompts: pairs of equal token length under each model's own tokenizer, positions from the corpus's
labels, and clear errors for prompts that can't be batched or patched."""

import pytest
import torch

from mechlib.course_tokenizers import word_token_ids
from mechlib.loading import model_device
from mechlib.prompts import answer_ids, fact_pair, ioi_prompts, repeated_tokens, same_shape, to_tokens, word_starts


@pytest.fixture(scope="module", params=["course", "course-bpe"])
def model(request):
    return request.getfixturevalue({"course": "course_tl", "course-bpe": "course_bpe_tl"}[request.param])


def test_ioi_pairs_have_one_length_and_positions_that_point_at_the_names(model):
    for corruption in ("s2_io", "abc"):
        pairs = ioi_prompts(model, 12, template=5, corruption=corruption, seed=2)
        clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)  # raise if lengths differ
        assert clean.shape == corrupted.shape and len(pairs.clean) == 12
        io, s = answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs)
        rows = torch.arange(12)
        assert torch.equal(clean[rows, pairs.positions["IO"]], io)
        assert torch.equal(clean[rows, pairs.positions["S1"]], s) and torch.equal(clean[rows, pairs.positions["S2"]], s)
        assert (pairs.positions["end"] == clean.shape[1] - 1).all()
        if corruption == "s2_io":  # the second subject becomes the indirect object, nothing else changes
            assert torch.equal(corrupted[rows, pairs.positions["S2"]], io)
            assert ((clean != corrupted).sum(1) == 1).all()


def test_ioi_held_out_frames_are_other_sentences(model):
    trained, held_out = ioi_prompts(model, 3, template=0), ioi_prompts(model, 3, template=0, held_out=True)
    assert trained.clean[0].startswith("When") and not set(trained.clean) & set(held_out.clean)


def test_fact_pair_finds_a_landmark_with_as_many_tokens_for_each_tokenizer(model):
    pair = fact_pair(model, "Eiffel Tower", other_city="Rome")
    clean, corrupted = to_tokens(model, pair.clean), to_tokens(model, pair.corrupted)
    assert clean.shape == corrupted.shape and pair.answers == [" Paris"] and pair.wrongs == [" Rome"]
    first = int((clean[0] != corrupted[0]).nonzero()[0])
    assert first == pair.positions["landmark"].item()  # where the landmarks start to differ
    # the word model has "Eiffel Tower" as two tokens and pairs it with "Trevi Fountain"; GPT-2's splits it in
    # four and pairs it with "Colosseum" (four as well)
    want = "Trevi Fountain" if clean.shape[1] == 6 else "Colosseum"
    assert want in pair.corrupted[0]


def test_repeated_tokens_are_a_random_span_of_words_twice(model):
    tokens = repeated_tokens(model, batch=6, seq_len=10, seed=3)
    assert tokens.shape == (6, 21) and tokens.device == model_device(model)
    assert (tokens[:, 0] == model.tokenizer.bos_token_id).all() and torch.equal(tokens[:, 1:11], tokens[:, 11:])
    assert set(tokens[:, 1:].flatten().tolist()) <= set(word_token_ids(model.tokenizer))
    assert len(set(tokens[:, 1:11].flatten().tolist())) > 40  # random, not a few repeated ids
    assert torch.equal(tokens, repeated_tokens(model, batch=6, seq_len=10, seed=3))
    assert not torch.equal(tokens, repeated_tokens(model, batch=6, seq_len=10, seed=4))


def test_copy_losses_leave_out_the_unpredictable_first_token_of_the_second_copy(model):
    from mechlib.prompts import copy_losses

    tokens = repeated_tokens(model, batch=8, seq_len=10, seed=1)  # [8, 21]
    with torch.no_grad():
        loss = model(tokens, return_type="loss", loss_per_token=True)  # [8, 20]
    first, second = copy_losses(loss, 10)
    assert first > 3 * second  # the course models copy
    assert torch.isclose(second, loss[:, 11:].mean()) and loss[:, 10].mean() > 2 * second  # the left-out one is hard
    with pytest.raises(ValueError, match="loss_per_token"):
        copy_losses(loss[:, 1:], 10)


def test_word_starts_agree_with_tokenizing_the_whole_text(course_bpe_tl):
    words = ["The", "Eiffel", "Tower", "is", "in", "Paris", "."]
    starts = word_starts(course_bpe_tl, words)
    assert starts == [1, 2, 5, 6, 7, 8, 9]  # " Eiffel" is three tokens; BOS is position 0


def test_clear_errors_for_prompts_that_cant_be_batched(course_bpe_tl):
    model = course_bpe_tl
    with pytest.raises(ValueError, match=r"different token lengths \(\[7, 8\]\)"):
        to_tokens(model, ["The Eiffel Tower is in", "The Trevi Fountain is in"])  # 4 and 3 tokens of landmark
    with pytest.raises(ValueError, match="same number of tokens"):
        same_shape(to_tokens(model, "The Eiffel Tower is in"), to_tokens(model, "The Louvre is in"), model)
    with pytest.raises(ValueError, match="single token"):
        answer_ids(model, " Eiffel")
    with pytest.raises(ValueError, match="unknown landmark"):
        fact_pair(model, "Statue of Liberty")
    with pytest.raises(ValueError, match="no landmark in Rome"):
        fact_pair(model, "Colosseum", other_city="Rome")  # Rome is its own city
