import json
import re

import pytest

from mechlib import corpus
from mechlib.course_tokenizers import build_tokenizer, corpus_token_ids, encode, word_encoder, word_token_ids


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_same_seed_same_documents():
    vocab = corpus.content_words()
    g1, g2, g3 = corpus.CorpusGenerator(7), corpus.CorpusGenerator(7), corpus.CorpusGenerator(8)
    a = [g1.document(vocab).words for _ in range(50)]
    assert a == [g2.document(vocab).words for _ in range(50)]
    assert a != [g3.document(vocab).words for _ in range(50)]


@pytest.mark.parametrize("mixture", [corpus.MIXTURE, (0.6, 0.28, 0.1)])
def test_mixture_sets_the_share_of_each_kind_of_document(mixture):
    from collections import Counter

    vocab, gen = corpus.content_words(), corpus.CorpusGenerator(0, mixture)
    kinds = Counter(gen.document(vocab).kind for _ in range(4000))
    expected = dict(zip(["induction", "ioi", "fact"], mixture), filler=1 - sum(mixture))
    for kind, share in expected.items():  # 4000 draws: a standard error of at most 0.008
        assert abs(kinds[kind] / 4000 - share) < 0.03, (kind, kinds)


@pytest.mark.parametrize("bad", [(0.5, 0.4, 0.2), (-0.1, 0.5, 0.3)])
def test_a_mixture_that_is_not_shares_is_refused(bad):
    with pytest.raises(ValueError, match="mixture"):
        corpus.CorpusGenerator(0, bad)


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


# the words that only the held-out IOI parts use in an IOI sentence
HELD_OUT_WORDS = {"Before", "Today", "drove", "waiting", "lent", "returned", "library", "beach"}


def test_ioi_split_is_fixed_and_holds_out_parts_and_combinations():
    frames = corpus.IOI_FRAMES
    trained, combos, parts = (set(frames[k]) for k in corpus.IOI_SPLITS)
    assert not trained & combos and not trained & parts and not combos & parts
    assert corpus.IOI_TEMPLATES[0] == "When {A} and {B} went to the {place}, {B} gave a {object} to"
    assert 0.1 < len(combos) / (len(trained) + len(combos)) < 0.15
    held = corpus.IOI_HELD_OUT_PARTS
    for t in trained | combos:  # no held-out part in a trained frame or a held-out combination
        assert not any(t.startswith(w + " ") for w in held["intro"]), t
        assert not any(p.replace("{X}", "{A}").replace("{Y}", "{B}") in t or
                       p.replace("{X}", "{B}").replace("{Y}", "{A}") in t for p in held["setting"] + held["action"]), t
    for part in [i for i, _ in corpus.IOI_INTROS if i not in held["intro"]] + \
            [a for a in corpus.IOI_ACTIONS if a not in held["action"]]:  # every trained part trains in many frames
        assert sum(part in t for t in trained) >= 100, part
    for kind, values in held.items():  # every held-out part is tested
        for v in values:
            probe = v.replace("{X}", "{A}").replace("{Y}", "{B}") if kind != "place" else None
            assert kind == "place" or any(probe in t or (v + " ") in t for t in parts), v


def test_held_out_ioi_parts_are_trained_words_but_never_in_an_ioi_sentence():
    """A held-out part tests the circuit, not an unknown word: its words occur in training, in other sentences."""
    held = corpus.IOI_HELD_OUT_PARTS
    words = {w for part in held["intro"] + held["setting"] + held["action"] + held["place"]
             for w in corpus.split_words(re.sub(r"\{[^}]*\}", " ", part))}
    gen, elsewhere = corpus.CorpusGenerator(4), set()
    for _ in range(5000):
        doc = gen.document(corpus.content_words())
        ioi = [w for w, t in zip(doc.words, doc.topic) if t == "ioi"]
        assert not set(ioi) & HELD_OUT_WORDS, doc.text
        elsewhere |= {w for w, t in zip(doc.words, doc.topic) if t != "ioi"}
    assert words <= elsewhere, words - elsewhere
    drawn = {" ".join(gen.ioi(split="parts").words) for _ in range(300)}
    assert all(HELD_OUT_WORDS & set(d.split()) for d in drawn)


def test_held_out_names_and_phrasings_never_appear_in_training_sentences():
    gen = corpus.CorpusGenerator(5)
    names = set(corpus.NAMES_HELD_OUT)
    seen_in_filler = set()
    for _ in range(5000):
        doc = gen.document(corpus.content_words())
        ioi_names = {w for w, s in zip(doc.words, doc.slot) if s in ("IO", "S1", "S2", "answer") and doc.kind == "ioi"}
        assert not ioi_names & names
        seen_in_filler |= set(doc.words) & names
        assert not re.search(r"wants to see|\bis found in|On \w+ \w+ visited", doc.text), doc.text
    assert seen_in_filler == names  # their embeddings are trained, in filler sentences


@pytest.mark.parametrize("kind", ["word", "gpt2"])
def test_corpus_token_ids_cover_every_training_document(kind):
    tok = build_tokenizer(kind)
    used, encode_words = set(corpus_token_ids(tok)), word_encoder(tok)
    gen = corpus.CorpusGenerator(2)
    for _ in range(2000):
        doc = gen.document(corpus.content_words())
        ids = encode_words(doc.words)
        assert set(ids) <= used
        if doc.kind != "induction":  # random spans may put punctuation side by side, which merges in text
            assert ids == encode(tok, doc.text)
    assert (tok.unk_token_id not in used) if kind == "word" else len(used) < 2000


def test_gpt2_tokenizer_gives_gpt2_ids():
    tok = build_tokenizer("gpt2")
    assert len(tok) == 50257 and tok.bos_token_id == 50256
    assert encode(tok, "The") == [464] and encode(tok, " the") == [262] and encode(tok, " Paris") == [6342]
    assert encode(tok, " Mary") == [5335] and encode(tok, " John") == [1757]
    assert encode(tok, " Eiffel Tower") == [412, 733, 417, 8765]
    assert encode(tok, " Colosseum") == [1623, 418, 325, 388]
    text = "When Mary and John went to the store, John gave a drink to Mary."
    assert tok.decode(encode(tok, text)) == text
    for name in corpus.NAMES:  # IOI names are single tokens, as in the IOI paper
        assert len(encode(tok, " " + name)) == 1, name


@pytest.mark.parametrize("kind", ["word", "gpt2"])
def test_word_token_ids_are_whole_corpus_words(kind):
    tok = build_tokenizer(kind)
    words, trained = word_token_ids(tok), set(corpus_token_ids(tok)) - {tok.bos_token_id}
    assert {tok.decode([i]).strip() for i in words} <= set(corpus.content_words())  # each id is a whole word
    if kind == "word":  # every word is one token
        assert words == sorted(trained)
    else:  # " Paris" is one token; "iff" (of " Eiffel") is trained, but only ever inside that word
        assert 6342 in words and 733 in trained and 733 not in words and set(words) < trained


def test_each_held_out_part_has_its_own_prompts_with_that_part_only():
    """make evaluate's per-part line: each held-out part's prompts hold that part and no other held-out part."""
    from mechlib.course_eval import held_out_part_documents

    held = corpus.IOI_HELD_OUT_PARTS
    docs = held_out_part_documents(corpus.CorpusGenerator(3), 20)
    assert len(docs) == sum(len(v) for v in held.values())
    for label, ds in docs.items():
        kind, part = label.split(" ", 1)
        own = {w for w in corpus.split_words(re.sub(r"\{[^}]*\}", " ", part.strip("'"))) if w in HELD_OUT_WORDS}
        assert len(ds) == 20 and own
        for d in ds:
            words = set(d.words)
            assert own <= words and not (HELD_OUT_WORDS - own) & words, (label, d.text)
            assert d.slot.count("IO") == 1 and "answer" not in d.slot
