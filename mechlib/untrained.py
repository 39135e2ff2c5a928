"""Words a course model never trained on: found in every prompt it is given, and named in a warning.

The course models learn only the tokens of their corpus (listed in each model's trained_tokens.json). Any other
token still has an embedding and an unembedding, but they are the random ones training started from, so what the
model computes on it means nothing. On the course model a word outside its vocabulary becomes `[UNK]`, which
training never shows; on course-bpe a common first name such as " Oscar" is a real GPT-2 token that its corpus never
uses. Nothing in the numbers tells a learner this, so every prompt is checked where it is tokenized:

    model = load_model("course-bpe")
    model.to_tokens("When Oscar and Mary went to the store, Mary gave a ring to")
    # UntrainedTokenWarning: course-bpe never trained on ' Oscar' ...

`watch(tokenizer, name)` (called by mechlib.loading for every model it loads) makes the tokenizer check each text
it encodes, which covers TransformerLens's `to_tokens`, `model(text)` and `run_with_cache(text)`, nnsight's traces,
and every mechlib function that takes text; `check_tokens` does the same for token ids (mechlib.prompts.to_tokens,
attribution). Each distinct prompt is warned about once per process. Models that list no trained tokens (GPT-2,
any hub model) are not checked.
"""

from __future__ import annotations

import contextlib
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

_WARNED: set[tuple[str, tuple]] = set()  # (model name, prompt text or token ids) already warned about


class UntrainedTokenWarning(UserWarning):
    """A prompt holds a token its model never trained on."""


_QUIET = 0  # > 0 inside quiet()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No checks inside: for mechlib's own streams of corpus text, which are no learner's prompt."""
    global _QUIET
    _QUIET += 1
    try:
        yield
    finally:
        _QUIET -= 1


def trained_token_ids(path: str | Path) -> frozenset[int] | None:
    """The token ids a course model trained on, from trained_tokens.json in its directory; None where it has none."""
    file = Path(path) / "trained_tokens.json"
    if not file.is_file():
        return None
    from mechlib.files import read_json

    return frozenset(read_json(file))


def watch(tokenizer, name: str, path: str | Path) -> Any:
    """Make `tokenizer` (of the model `name`, loaded from `path`) warn about untrained tokens in every text it
    encodes. Does nothing for a model without trained_tokens.json, or a tokenizer already watched. Returns it."""
    if getattr(tokenizer, "mechlib_trained_ids", None) is not None or not Path(path).is_dir():
        return tokenizer
    trained = trained_token_ids(path)
    if trained is None:
        return tokenizer
    tokenizer.mechlib_trained_ids, tokenizer.mechlib_model_name = trained, name
    encode_plus = tokenizer._encode_plus  # what __call__, encode and TransformerLens's to_tokens all end in

    def checked_encode_plus(text, *args, **kwargs):
        out = encode_plus(text, *args, **kwargs)
        if not _QUIET and not kwargs.get("is_split_into_words") and _holds_untrained(trained, out.get("input_ids")):
            for t in [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []:
                if isinstance(t, str):
                    check_text(tokenizer, t)  # tokenizes again, for the words: only where something is untrained
        return out

    tokenizer._encode_plus = checked_encode_plus
    return tokenizer


def _holds_untrained(trained: frozenset[int], ids) -> bool:
    """Do the token ids an encoding returned (a list, nested lists or a tensor) hold any untrained one?"""
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    flat = [i for row in ids for i in row] if ids and isinstance(ids[0], list) else ids or []
    return any(i not in trained for i in flat)


def check_text(tokenizer, text: str) -> list[str]:
    """The pieces of `text` that map to untrained tokens (warned about once per text); [] if all are trained."""
    trained = getattr(tokenizer, "mechlib_trained_ids", None)
    if trained is None:
        return []
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    found = [(text[a:b], i) for i, (a, b) in zip(enc.ids, enc.offsets) if i not in trained]
    if found:
        _warn(tokenizer, ("text", text), repr(text), found)
        _WARNED.add((tokenizer.mechlib_model_name, ("ids", _core(tokenizer, enc.ids))))  # its tokens, met later
    return [piece for piece, _ in found]


def check_tokens(tokenizer, tokens: torch.Tensor) -> list[str]:
    """The untrained tokens in token ids [pos] or [batch, pos] (warned about once per row); [] if all are trained."""
    trained = getattr(tokenizer, "mechlib_trained_ids", None)
    if trained is None or tokens.numel() == 0:
        return []
    pieces: list[str] = []
    for row in tokens.detach().reshape(-1, tokens.shape[-1]).cpu().tolist():  # [batch, pos]
        found = [(tokenizer.decode([i]), i) for i in row if i not in trained]
        if found:
            pieces += [piece for piece, _ in found]
            _warn(tokenizer, ("ids", _core(tokenizer, row)), f"The token ids {row[:12]}{' ...' if len(row) > 12 else ''}", found)
    return pieces


def _core(tokenizer, ids: list[int]) -> tuple[int, ...]:
    """ids without the BOS and padding around them: the same prompt's tokens however a backend framed them."""
    frame = {tokenizer.bos_token_id, tokenizer.pad_token_id} - {None}
    start, end = 0, len(ids)
    while start < end and ids[start] in frame:
        start += 1
    while end > start and ids[end - 1] in frame:
        end -= 1
    return tuple(ids[start:end])


def _warn(tokenizer, key: tuple, prompt: str, found: list[tuple[str, int]]) -> None:
    """One warning per (model, prompt) per process, naming each untrained piece and its token id."""
    name = tokenizer.mechlib_model_name
    if (name, key) in _WARNED:
        return
    _WARNED.add((name, key))
    found = list(dict.fromkeys(found))  # in order of appearance, once each
    said = ", ".join(f"{piece!r} (token {i})" for piece, i in found)
    unk = tokenizer.unk_token_id
    if unk is not None and all(i == unk for _, i in found):
        words = ", ".join(repr(piece) for piece, _ in found)
        how = (f"they hold {tokenizer.unk_token} (token {unk}), what a word outside {name}'s vocabulary becomes, a "
               f"token it never trained on" if key[0] == "ids" else
               f"{words} {'are' if len(found) > 1 else 'is'} not in {name}'s vocabulary: "
               f"{'they become' if len(found) > 1 else 'it becomes'} {tokenizer.unk_token} (token {unk}), a token it "
               f"never trained on")
    else:
        how = f"{name} never trained on {said}: its training corpus never uses {'them' if len(found) > 1 else 'it'}"
    warnings.warn(
        f"{prompt}: {how}. Such a token's embedding is still the random one training started from, so what the "
        f"model computes on this prompt is not something it learned. Use words from its corpus instead: the names "
        f"it knows in IOI sentences are mechlib.corpus.IOI_NAMES (e.g. Mary, John), and "
        f"mechlib.untrained.trained_words(model) lists every word it trained on.",
        UntrainedTokenWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside mechlib, the standard library and installed packages:
    the learner's line (a notebook cell, a script), so that the warning shows it."""
    frame, level = sys._getframe(2), 2  # the caller of _warn's caller
    while frame is not None:
        file = frame.f_code.co_filename
        if not (file.startswith(_LIBRARY_DIRS) or file.startswith("<frozen")):
            return level
        frame, level = frame.f_back, level + 1
    return 2


_LIBRARY_DIRS = tuple({str(Path(__file__).parent), *(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib"))})


def trained_words(model) -> list[str]:
    """Every token `model` trained on, as text (sorted; course models only: other models list none)."""
    tokenizer = model.tokenizer
    trained = getattr(tokenizer, "mechlib_trained_ids", None)
    if trained is None:
        raise ValueError("this model lists no trained tokens (only the course models do): every token is trained")
    return sorted(tokenizer.decode([i]) for i in trained)
