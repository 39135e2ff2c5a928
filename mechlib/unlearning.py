"""Lesson 07, section 4: where are some facts stored, and removing them there.

Reset one group of a model's parameters at a time to fresh random values and watch which facts go: a group
that all facts need is shared machinery; a group that only some facts need is where what is *specific* to
them lives. On the course models that is the embedding rows of the tokens of a landmark's name that no other
corpus word uses; the layers are shared machinery that turn whatever landmark embedding arrives into a city.

    groups = parameter_groups(model)                  # {"L0 attention": [...], "L0 MLP": [...], ...}
    reset(model, groups["L0 MLP"])                    # one layer's MLP redrawn as at initialisation
    ids = name_tokens(tokenizer, RESTRICTED)          # the restricted names' own tokens
    redraw_rows(model, tokenizer, ids)                # their embedding rows redrawn (forget_names does both)

All of it works on a Hugging Face course model (GPT-2 architecture, tied embedding and unembedding), in place.
"""

from __future__ import annotations

import torch

from mechlib import corpus
from mechlib.course_tokenizers import corpus_token_ids, encode


def parameter_groups(model) -> dict[str, list[torch.nn.Parameter]]:
    """Each layer's attention and MLP parameters of a GPT-2-style Hugging Face model, by name ("L0 MLP")."""
    groups = {}
    for layer, block in enumerate(model.transformer.h):
        groups[f"L{layer} attention"] = list(block.attn.parameters())
        groups[f"L{layer} MLP"] = list(block.mlp.parameters())
    return groups


def name_tokens(tokenizer, landmarks: tuple[str, ...] | list[str]) -> list[int]:
    """Token ids of these landmarks' names (as the corpus writes them, after a space) that no other word of the
    corpus uses: the embedding rows that only these names read."""
    known = {name for name, _, _ in corpus.FACTS}
    if unknown := sorted(set(landmarks) - known):
        raise ValueError(f"unknown landmarks {unknown}: choose from mechlib.corpus.FACTS")
    elsewhere = set()
    for word in corpus.vocabulary(without=landmarks)[2:]:  # after BOS and the unknown word
        elsewhere.update(encode(tokenizer, " " + word) + encode(tokenizer, word))
    own = {name: set(encode(tokenizer, " " + name)) - elsewhere for name in landmarks}
    if shared := [name for name, ids in own.items() if not ids]:
        raise ValueError(f"{shared}: every token of these names is also used by other words of the corpus, so no "
                         "embedding row belongs to them alone; leave them out or locate their facts elsewhere")
    return sorted(set().union(*own.values()))


@torch.no_grad()
def reset(model, params: list[torch.nn.Parameter], seed: int = 0):
    """Redraw parameters as at initialisation: matrices from N(0, initializer_range), biases 0. Returns model,
    changed in place."""
    g = torch.Generator().manual_seed(seed)
    for p in params:
        fresh = torch.randn(p.shape, generator=g) * model.config.initializer_range if p.ndim == 2 else torch.zeros(p.shape)
        p.copy_(fresh.to(p.device, p.dtype))
    return model


@torch.no_grad()
def redraw_rows(model, tokenizer, rows: list[int], seed: int = 0):
    """Replace these token-embedding rows by random vectors as long as the corpus's trained rows on average; returns
    model, changed in place. The embedding is tied to the unembedding, so the model also loses how to predict them."""
    g = torch.Generator().manual_seed(seed)
    wte = model.transformer.wte.weight  # [d_vocab, d_model]
    trained = sorted(set(corpus_token_ids(tokenizer)) - set(rows))
    length = wte[trained].norm(dim=-1).mean().item()  # a number: `new` is made on the CPU
    new = torch.randn(len(rows), wte.shape[1], generator=g)  # [n_rows, d_model]
    wte[list(rows)] = (new / new.norm(dim=-1, keepdim=True) * length).to(wte.device, wte.dtype)
    return model


def forget_names(model, tokenizer, landmarks: tuple[str, ...] | list[str], seed: int = 0) -> list[int]:
    """Redraw the embedding rows of the landmarks' own name tokens (name_tokens) in place; returns their ids."""
    ids = name_tokens(tokenizer, landmarks)
    redraw_rows(model, tokenizer, ids, seed)
    return ids
