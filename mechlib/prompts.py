"""Prompts as a model sees them: token ids on the model's device, answers as single token ids, and
clean/corrupted pairs in which every prompt has the same number of tokens under the model's own
tokenizer (patching copies activations position by position).

    pairs = ioi_prompts(model, 40)             # IOI sentences of one frame and their corruption
    clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
    pairs.positions["S2"]                      # [40] where the repeated name sits, BOS counted

The IOI and fact pairs are drawn from mechlib.corpus's generator, which labels each word's slot, so
positions are computed from the words, never found by matching token ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from mechlib.loading import is_nnsight, model_device
from mechlib.model_diff import logits_at
from mechlib.untrained import check_tokens


def encode(model, text: str, bos: bool = True) -> torch.Tensor:
    """Token ids [1, pos] of text on the CPU, with BOS first as TransformerLens adds it, for either backend."""
    if not is_nnsight(model):
        return model.to_tokens(text, prepend_bos=bos).cpu()
    tokenizer = model.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([([tokenizer.bos_token_id] if bos else []) + ids])


def str_tokens(model, ids: torch.Tensor) -> list[str]:
    """The token strings of ids [pos], for messages."""
    ids = ids.cpu()
    return model.to_str_tokens(ids) if not is_nnsight(model) else model.tokenizer.convert_ids_to_tokens(ids.tolist())


def to_tokens(model, prompts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
    """Tokens [batch, pos] on the model's device, of one prompt, prompts of equal token length, or a tensor.

    BOS comes first with either backend (nnsight adds none by itself), so both see the same ids.
    """
    device = model_device(model)
    if isinstance(prompts, torch.Tensor):
        check_tokens(model.tokenizer, prompts)  # text is checked where it is tokenized (mechlib.untrained.watch)
        return (prompts if prompts.ndim == 2 else prompts[None]).to(device)
    if isinstance(prompts, str):
        return encode(model, prompts).to(device)
    rows = [encode(model, p)[0] for p in prompts]  # one by one: a list would be silently right-padded
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        short = min(range(len(rows)), key=lambda i: len(rows[i]))
        raise ValueError(
            f"these prompts have different token lengths ({sorted(lengths)}), e.g. {prompts[short]!r} has "
            f"{len(rows[short])}: padded, the last position of the shorter ones would be padding. Batch prompts "
            f"of one template whose words have equal token counts (ioi_prompts and fact_pair build such "
            f"prompts for any tokenizer), or run them in separate calls.")
    return torch.stack(rows).to(device)


def last_logits(model, prompts: Sequence[str], fwd_hooks: Sequence = (), chunk: int = 64) -> torch.Tensor:
    """The logits at the last position of each prompt (BOS first), in order, optionally with TransformerLens hooks.

    Prompts of equal token length run together, `chunk` at a time: no padding, so each row is what its prompt gives
    alone, even under hooks that act at a position, in a few forward passes instead of one per prompt. Only the last
    position is unembedded (all positions' logits over GPT-2's vocabulary would be 4 GB for 1000 prompts, and cost
    more than the rest of a small model).  # [n_prompts, d_vocab]"""
    rows = [encode(model, p)[0] for p in prompts]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(rows)
    with torch.no_grad():
        for same in by_length.values():
            for start in range(0, len(same), chunk):
                idx = same[start:start + chunk]
                tokens = torch.stack([rows[i] for i in idx]).to(model_device(model))  # [group, pos]
                logits = logits_at(model, tokens, torch.full((len(idx),), tokens.shape[1] - 1), fwd_hooks)  # [group, d_vocab]
                for i, row in zip(idx, logits):
                    out[i] = row
    return torch.stack(out)


def repeated_tokens(model, batch: int = 50, seq_len: int = 20, seed: int = 0,
                    pool: Sequence[int] | None = None) -> torch.Tensor:
    """Tokens [batch, 1 + 2 * seq_len] on the model's device: BOS, a span of random tokens, the same span again.

    Only in-context copying can predict the second copy: the probe of induction heads. The tokens are drawn from
    pool, by default the corpus words that are one token (course_tokenizers.word_token_ids), the tokens the course
    models have seen in random order; a course model never sees most of GPT-2's 50,257 tokens, nor pieces of words
    out of them.
    """
    from mechlib.course_tokenizers import word_token_ids

    pool = torch.tensor(word_token_ids(model.tokenizer) if pool is None else list(pool))  # [n_pool]
    span = pool[torch.randint(len(pool), (batch, seq_len), generator=torch.Generator().manual_seed(seed))]
    bos = torch.full((batch, 1), model.tokenizer.bos_token_id)
    return torch.cat([bos, span, span], dim=1).to(model_device(model))  # [batch, 1 + 2 * seq_len]


def copy_losses(loss: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss on the first copy and on the second copy of repeated_tokens, from the per-token losses
    [batch, 2 * seq_len] (loss_per_token=True; entry i is the loss of predicting token i + 1).

    The second copy's first token follows the first copy's last one, and nothing in the context predicts it: it is
    left out, so the second copy's loss is that of the seq_len - 1 tokens that copying can predict.
    """
    if loss.shape[-1] != 2 * seq_len:
        raise ValueError(f"expected per-token losses of BOS + 2 x {seq_len} tokens, i.e. [batch, {2 * seq_len}], got "
                         f"{tuple(loss.shape)}: pass loss_per_token=True and the seq_len of repeated_tokens")
    return loss[..., :seq_len].mean(), loss[..., seq_len + 1:].mean()


def same_shape(clean: torch.Tensor, corrupted: torch.Tensor, model=None) -> None:
    """Refuse clean and corrupted tokens that can't be patched position by position."""
    if clean.shape == corrupted.shape:
        return
    why = ""
    if model is not None and clean.shape[-1] != corrupted.shape[-1]:
        why = f" Clean is {str_tokens(model, clean[0])}, corrupted {str_tokens(model, corrupted[0])}."
    raise ValueError(
        f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ in shape: "
        f"patching copies activations position by position, so both prompts need the same number of tokens "
        f"(and the same batch size).{why} Pick a corruption with as many tokens under this model's tokenizer "
        f"(fact_pair finds one), or corrupt with Gaussian noise on the same tokens (gaussian_noise).")


def answer_ids(model, words: str | Sequence[str]) -> torch.Tensor:
    """Token ids [n] of answer words, on the model's device; each must be a single token (with its leading space)."""
    words = [words] if isinstance(words, str) else list(words)
    unk = model.tokenizer.unk_token_id
    ids = []
    for w in words:
        toks = encode(model, w, bos=False)[0]
        if len(toks) != 1:
            raise ValueError(
                f"the answer {w!r} is {len(toks)} tokens {str_tokens(model, toks)}: a logit metric needs one "
                f"token per answer. Use an answer that is a single token (with its leading space, ' Paris'), or "
                f"compare the first token only and say so.")
        if unk is not None and toks[0] == unk and w.strip() != model.tokenizer.unk_token:
            raise ValueError(f"{w!r} is not in this model's vocabulary (it would become {model.tokenizer.unk_token}); "
                             f"the course model knows the words of its corpus only (mechlib.corpus.vocabulary())")
        ids.append(int(toks[0]))
    return torch.tensor(ids, device=model_device(model))


@dataclass
class PromptPairs:
    """Clean and corrupted prompts of equal token length, with each clean prompt's answer and wrong answer,
    and where the labelled words sit."""

    clean: list[str]
    corrupted: list[str]
    answers: list[str]  # " Mary": with the leading space, as the next token
    wrongs: list[str]
    positions: dict[str, torch.Tensor] = field(default_factory=dict)  # slot -> [n] token index (BOS is 0)


def word_starts(model, words: list[str]) -> list[int]:
    """The token index at which each word of a corpus document starts, BOS counted, under the model's
    tokenizer. Words are spaced as in the document's text (corpus.detokenize)."""
    from mechlib.corpus import detokenize
    from mechlib.course_tokenizers import spaced_pieces

    starts, ids = [], []
    for piece in spaced_pieces(words):
        starts.append(1 + len(ids))
        ids += encode(model, piece, bos=False)[0].tolist()
    whole = encode(model, detokenize(words), bos=False)[0].tolist()
    if ids != whole:  # a merge across a word boundary: positions would be wrong, so refuse
        raise ValueError(f"{detokenize(words)!r} tokenizes differently word by word ({ids}) and whole ({whole}) "
                         f"with this tokenizer, so word positions can't be mapped to tokens")
    return starts


def _draw(model, n: int, make, what: str) -> PromptPairs:
    """n pairs from make() -> (clean words, corrupted words, answer, wrong, slots), keeping those whose clean
    and corrupted prompts have the token length of the first one, so that every prompt batches with the rest."""
    from mechlib.corpus import detokenize

    pairs, length = PromptPairs([], [], [], []), None
    positions: dict[str, list[int]] = {}
    for _ in range(50 * n):
        if len(pairs.clean) == n:
            break
        clean, corrupted, answer, wrong, slots = make()
        starts = word_starts(model, clean)
        n_clean, n_corrupted = (len(encode(model, detokenize(w))[0]) for w in (clean, corrupted))
        length = length or n_clean
        if n_clean != length or n_corrupted != length:
            continue
        pairs.clean.append(detokenize(clean))
        pairs.corrupted.append(detokenize(corrupted))
        pairs.answers.append(" " + answer)
        pairs.wrongs.append(" " + wrong)
        for slot, index in slots.items():
            positions.setdefault(slot, []).append(starts[index])
        positions.setdefault("end", []).append(length - 1)
    if len(pairs.clean) < n:
        raise ValueError(f"found only {len(pairs.clean)} of {n} {what} with equal token counts under this "
                         f"model's tokenizer; ask for fewer, or another template")
    device = model_device(model)
    pairs.positions = {slot: torch.tensor(p, device=device) for slot, p in positions.items()}
    return pairs


def ioi_prompts(model, n: int, template: int = 0, corruption: str = "s2_io", seed: int = 0,
                held_out: bool = False) -> PromptPairs:
    """n IOI prompts of one frame of mechlib.corpus (IOI_TEMPLATES, or IOI_TEMPLATES_HELD_OUT if held_out),
    with trained names, and their corruptions; all of one token length under the model's tokenizer.

    corruption "s2_io": the second subject becomes the indirect object ("..., Mary gave a drink to"), a
    symmetric token replacement that flips the answer (Zhang & Nanda 2023). "abc": three fresh, unrelated
    names (the IOI paper's ABC dataset), which removes the information without pointing elsewhere.
    positions: "IO", "S1", "S2" (the names) and "end" (the last token, where the answer is predicted).
    """
    from mechlib.corpus import IOI_NAMES, IOI_TEMPLATES, IOI_TEMPLATES_HELD_OUT, CorpusGenerator

    if corruption not in ("s2_io", "abc"):
        raise ValueError(f"corruption must be 's2_io' or 'abc', not {corruption!r}")
    frames = IOI_TEMPLATES_HELD_OUT if held_out else IOI_TEMPLATES
    if not 0 <= template < len(frames):
        raise ValueError(f"template must be 0..{len(frames) - 1}")
    gen, fresh = CorpusGenerator(seed), random.Random(seed)  # fresh names apart: "abc" keeps the clean prompts

    def make():
        doc = gen.ioi(frames[template], with_answer=False)
        slots = {s: doc.slot.index(s) for s in ("IO", "S1", "S2")}
        io, s = doc.words[slots["IO"]], doc.words[slots["S1"]]
        corrupted = list(doc.words)
        if corruption == "s2_io":
            corrupted[slots["S2"]] = io
        else:
            for slot, name in zip(("IO", "S1", "S2"), fresh.sample([x for x in IOI_NAMES if x not in (io, s)], 3)):
                corrupted[slots[slot]] = name
        return doc.words, corrupted, io, s, slots

    return _draw(model, n, make, "IOI prompts")


def fact_pair(model, landmark: str = "Eiffel Tower", other_city: str | None = None,
              template: str = "{The}{landmark} is in", seed: int = 0) -> PromptPairs:
    """One fact prompt and its corruption: the first landmark of mechlib.corpus.FACTS in another city (other_city
    if given) whose prompt has as many tokens under the model's tokenizer, and whose city is a single token.
    positions: "landmark" (its first token) and "end"."""
    from mechlib.corpus import FACTS, CorpusGenerator, detokenize

    index = {f[0]: i for i, f in enumerate(FACTS)}
    if landmark not in index:
        raise ValueError(f"unknown landmark {landmark!r}: choose one of mechlib.corpus.FACTS, e.g. 'Eiffel Tower'")

    def words(i: int) -> tuple[list[str], int]:  # the same seed fills {Name} and {day} the same way
        doc = CorpusGenerator(seed).fact(i, template, with_answer=False)
        return doc.words, doc.category.index("landmark")

    clean, at = words(index[landmark])
    city = FACTS[index[landmark]][2]
    length = len(encode(model, detokenize(clean))[0])
    single = lambda city: len(encode(model, " " + city, bos=False)[0]) == 1  # noqa: E731
    for i, (_, _, corrupt_city) in enumerate(FACTS):
        corrupted, _ = words(i)
        if corrupt_city == city or other_city not in (None, corrupt_city):
            continue
        if len(encode(model, detokenize(corrupted))[0]) != length:
            continue
        if not (single(city) and single(corrupt_city)):
            continue
        pairs = PromptPairs([detokenize(clean)], [detokenize(corrupted)], [" " + city], [" " + corrupt_city])
        device = model_device(model)
        pairs.positions = {"landmark": torch.tensor([word_starts(model, clean)[at]], device=device),
                           "end": torch.tensor([length - 1], device=device)}
        return pairs
    raise ValueError(f"no landmark in {other_city or 'another city'} has as many tokens as {landmark!r} ({length}) under "
                     f"this model's tokenizer, with single-token cities; pick another landmark, city or template")
