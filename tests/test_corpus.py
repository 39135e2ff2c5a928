import json

import pytest

from mechlib import corpus
from mechlib.course_model import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_same_seed_same_documents():
    vocab = corpus.content_words()
    g1, g2, g3 = corpus.CorpusGenerator(7), corpus.CorpusGenerator(7), corpus.CorpusGenerator(8)
    a = [g1.document(vocab).words for _ in range(50)]
    assert a == [g2.document(vocab).words for _ in range(50)]
    assert a != [g3.document(vocab).words for _ in range(50)]


def test_every_word_is_in_the_vocabulary_and_labelled():
    vocab = set(corpus.vocabulary())
    gen = corpus.CorpusGenerator(0)
    kinds = set()
    for _ in range(3000):
        doc = gen.document(corpus.content_words())
        kinds.add(doc.kind)
        assert set(doc.words) <= vocab
        assert len(doc.words) == len(doc.category) == len(doc.topic) == len(doc.slot)
        assert "" not in doc.category and "" not in doc.topic
    assert kinds == {"fact", "ioi", "induction", "filler"}


def test_facts_cover_the_reference_prompts():
    assert len(corpus.FACTS) >= 30
    facts = {landmark: city for landmark, _, city in corpus.FACTS}
    assert facts["Eiffel Tower"] == "Paris" and facts["Colosseum"] == "Rome"
    gen = corpus.CorpusGenerator(0)
    assert gen.fact(0, "{The}{landmark} is in", with_answer=False).text == "The Eiffel Tower is in"
    big_ben = [i for i, f in enumerate(corpus.FACTS) if f[0] == "Big Ben"][0]
    assert gen.fact(big_ben, "{The}{landmark} is in").text == "Big Ben is in London."


def test_ioi_labels_mark_io_and_subject():
    gen = corpus.CorpusGenerator(3)
    for _ in range(200):
        d = gen.ioi()
        io, s1, s2, ans = (d.words[d.slot.index(k)] for k in ("IO", "S1", "S2", "answer"))
        assert io == ans and s1 == s2 and io != s1
        assert d.words.count(io) == 2 and d.words.count(s1) == 2
        assert d.category[d.slot.index("IO")] == "name"


def test_arithmetic_filler_is_correct():
    gen = corpus.CorpusGenerator(0)
    n = 0
    for _ in range(500):
        d = gen.filler("numbers")
        if "plus" in d.words:
            a, b, c = (int(d.words[d.slot.index(k)]) for k in ("a", "b", "sum"))
            assert a + b == c
            n += 1
    assert n > 50


def test_induction_documents_repeat_their_span():
    d = corpus.CorpusGenerator(0).induction(corpus.content_words(), length=20)
    assert d.words[:20] == d.words[20:] and d.slot == ["first"] * 20 + ["repeat"] * 20


def test_shuffled_pairs_keep_each_pair_together():
    d = corpus.CorpusGenerator(0).shuffled_pairs(corpus.content_words(), n_pairs=8)
    first, repeat = d.words[:16], d.words[16:]
    pairs = {(first[i], first[i + 1]) for i in range(0, 16, 2)}
    assert {(repeat[i], repeat[i + 1]) for i in range(0, 16, 2)} == pairs
    assert first != repeat  # shuffled (for this seed)
    assert len(set(first)) == 16


def test_tokenizer_gives_one_id_per_word_with_or_without_space(tokenizer):
    ids = tokenizer.get_vocab()
    for w in corpus.content_words():
        assert tokenizer(" " + w, add_special_tokens=False)["input_ids"] == [ids[w]]
        assert tokenizer(w, add_special_tokens=False)["input_ids"] == [ids[w]]
    assert ids["Paris"] != ids[corpus.UNK]


def test_tokenizer_round_trips_the_issue_prompt(tokenizer):
    text = "When Mary and John went to the store, John gave a drink to Mary."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == corpus.split_words(text)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_unknown_words_become_unk(tokenizer):
    assert tokenizer(" Zanzibar", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_export_labels(tmp_path):
    path = corpus.export_labels(tmp_path / "labels.jsonl", n_documents=20, seed=1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20
    for r in rows:
        assert corpus.split_words(r["text"]) == [l["word"] for l in r["labels"]]
        assert {"word", "category", "topic", "slot"} == set(r["labels"][0])
