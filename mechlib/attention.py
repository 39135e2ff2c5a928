"""Attention-head scores: which heads attend to the previous token, which do induction.

Both take a cache of attention patterns (`blocks.L.attn.hook_pattern`, [batch, head, q, k]) from a
run on BOS + a random span + the same span again.
"""

from __future__ import annotations

import torch


def _patterns(cache) -> list[torch.Tensor]:
    """The cached attention patterns, layer by layer.  # each [batch, head, q, k]"""
    names = [k for k in cache.keys() if k.endswith("attn.hook_pattern")]
    if not names:
        raise ValueError("the cache holds no attention patterns: run the model with run_with_cache and keep "
                         "'blocks.L.attn.hook_pattern' (e.g. names_filter=lambda n: n.endswith('hook_pattern')).")
    names.sort(key=lambda n: int(n.split(".")[1]))
    return [cache[n] for n in names]


def induction_scores(cache, seq_len: int) -> torch.Tensor:
    """Mean attention from each token of the repeated span to the token after its first occurrence.

    The tokens are BOS, a span of seq_len tokens, then the span again. Returns [layer, head].
    """
    scores = []
    for pattern in _patterns(cache):
        if pattern.shape[-1] != 2 * seq_len + 1:
            raise ValueError(f"expected BOS + 2 x {seq_len} tokens, got a pattern over {pattern.shape[-1]} positions")
        q = torch.arange(seq_len + 1, 2 * seq_len + 1, device=pattern.device)
        scores.append(pattern[:, :, q, q - seq_len + 1].mean(dim=(0, 2)))  # [head]
    return torch.stack(scores)


def previous_token_scores(cache) -> torch.Tensor:
    """Mean attention from each token (after the first real one) to the token before it. Returns [layer, head]."""
    scores = []
    for pattern in _patterns(cache):
        q = torch.arange(2, pattern.shape[-1], device=pattern.device)
        scores.append(pattern[:, :, q, q - 1].mean(dim=(0, 2)))  # [head]
    return torch.stack(scores)
