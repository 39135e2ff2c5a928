import pytest
import torch

from mechlib.concepts import (CONCEPT_GROUPS, CONCEPTS, concept_documents, concept_groups_fired, concept_scores,
                              f1_score, labelled_tokens)
from mechlib.corpus import FACTS, WORDS, split_words


@pytest.fixture(scope="module")
def course_tokenizer():
    from mechlib.loading import load_tokenizer

    return load_tokenizer("course")


def _members(concept: str) -> set[str]:
    if concept == "landmark":
        return {w for landmark, _, _ in FACTS for w in split_words(landmark)}
    return set(WORDS[concept])


def test_every_concept_is_a_labelled_word_category():
    assert set(CONCEPTS) == set(CONCEPT_GROUPS)
    assert all(c == "landmark" or c in WORDS for c in CONCEPTS)


def test_course_tokens_carry_their_words_concept(course_tokenizer):
    lab = labelled_tokens(course_tokenizer, n_documents=20, seed=1)
    batch, length = lab.tokens.shape
    assert batch == 20 and lab.concept.shape == lab.mask.shape == (batch, length)
    assert (lab.tokens[:, 0] == course_tokenizer.bos_token_id).all() and not lab.mask[:, 0].any()
    labelled = lab.concept >= 0
    assert labelled.sum() > 0.25 * lab.mask.sum()  # filler text is full of concept words
    assert not (labelled & ~lab.mask).any()
    for b, p in labelled.nonzero().tolist():
        word = course_tokenizer.decode([int(lab.tokens[b, p])]).strip()
        assert word in _members(CONCEPTS[lab.concept[b, p]]), (word, CONCEPTS[lab.concept[b, p]])
    assert lab.flat_concept.shape == (int(lab.mask.sum()),)


def test_words_split_into_several_tokens_label_every_piece(tmp_path):
    """A small byte-level BPE, like GPT-2's: words split into pieces, and each piece gets the word's concept."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [d.text for d in concept_documents(50, seed=3)]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>")
    lab = labelled_tokens(tok, n_documents=5, seed=4, max_len=1024)
    docs = concept_documents(5, seed=4)
    split_some = False
    for b, doc in enumerate(docs):
        ids = lab.tokens[b][lab.mask[b]].tolist()
        assert tok.decode(ids) == lab.texts[b]  # nothing lost or reordered
        pieces = [tok.decode([i]).strip() for i in ids]
        concepts = lab.concept[b][lab.mask[b]].tolist()
        split_some |= len(pieces) > len(doc.words)
        # the labelled pieces spell out exactly the doc's concept words, in order...
        concept_words = [w for w, c in zip(doc.words, doc.category) if c in CONCEPT_GROUPS]
        assert "".join(p for p, c in zip(pieces, concepts) if c >= 0) == "".join(concept_words)
        # ...and each piece is part of a word of the concept it is labelled with
        for piece, c in zip(pieces, concepts):
            if c >= 0:
                assert any(piece in w for w in _members(CONCEPTS[c])), (piece, CONCEPTS[c])
    assert split_some  # the small BPE does split words into pieces


def test_slow_tokenizers_are_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        labelled_tokens(Slow())


def test_concept_scores_by_hand():
    # 6 tokens, concepts: colour colour animal none animal colour; unit 0 fires on both... units as columns
    concept = torch.tensor([0, 0, 1, -1, 1, 0])
    active = torch.tensor([[1, 1], [1, 0], [0, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.bool)  # [token, unit]
    precision, recall = concept_scores(active, concept, n_concepts=2)
    assert torch.allclose(precision, torch.tensor([[2 / 3, 0.0], [2 / 3, 1 / 3]]))
    assert torch.allclose(recall, torch.tensor([[2 / 3, 0.0], [2 / 3, 1 / 2]]))
    assert torch.allclose(f1_score(precision, recall)[0], torch.tensor([2 / 3, 0.0]))
    with pytest.raises(ValueError, match="same mask"):
        concept_scores(active[:5], concept)


def test_related_concepts_make_one_group():
    recall = torch.zeros(3, len(CONCEPTS))
    lift = torch.full((3, len(CONCEPTS)), 5.0)
    recall[0, [CONCEPTS.index("animal"), CONCEPTS.index("animals")]] = 0.9  # dog and dogs: related
    recall[1, [CONCEPTS.index("colour"), CONCEPTS.index("sport")]] = 0.9  # unrelated
    recall[2, CONCEPTS.index("colour")] = 0.9
    lift[2] = 1.0  # fires on everything: responds to nothing in particular
    assert concept_groups_fired(recall, lift) == [{"animals"}, {"colour", "sport"}, set()]


def test_controlled_lift_sees_through_a_unit_that_fires_on_a_place_not_a_concept():
    from mechlib.concepts import controlled_lift

    # 8 tokens: stratum 1 (say, before a full stop) holds concept 0's tokens and two unlabelled ones
    strata = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    concept = torch.tensor([-1, -1, 1, 1, 0, 0, -1, -1])
    place = strata.bool()[:, None]  # fires on every token in stratum 1, whatever it is
    meaning = (concept == 0)[:, None]  # fires on concept 0 only
    active = torch.cat([place, meaning], dim=1)  # [token, unit]
    _, recall = concept_scores(active, concept)
    plain = recall / active.float().mean(0)[:, None]
    lift = controlled_lift(active, concept, strata)
    assert plain[0, 0] == pytest.approx(2.0) and lift[0, 0] == pytest.approx(1.0)  # the place explains it
    assert lift[1, 0] == pytest.approx(2.0)  # twice its rate among the tokens in the same place


def test_firing_share_is_the_precision_for_the_chosen_concepts():
    from mechlib.concepts import firing_share

    concept = torch.tensor([0, 0, 0, 1, -1, 1])
    active = torch.tensor([[1], [1], [1], [0], [1], [0]], dtype=torch.bool)  # fires on 4 tokens, 3 of concept 0
    chosen = torch.zeros(1, len(CONCEPTS), dtype=torch.bool)
    chosen[0, 0] = True
    assert firing_share(active, concept, chosen).item() == pytest.approx(0.75)
    assert firing_share(active, concept, ~chosen).item() == pytest.approx(0.0)


def test_position_strata_mark_the_word_before_a_full_stop_and_the_position():
    from mechlib.concepts import position_strata

    tokens = torch.tensor([[0, 5, 6, 9, 7] + [5] * 10])  # 9 is the full stop
    strata = position_strata(tokens, period_id=9)
    assert strata[0, 2] != strata[0, 1]  # before the full stop, at the same position bucket as token 1
    assert strata[0, 1] == strata[0, 4]  # same bucket, neither before a full stop
    assert strata[0, 12] != strata[0, 4]  # position 12 is in another bucket (9-16)
