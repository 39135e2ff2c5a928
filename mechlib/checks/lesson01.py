"""Checks of lesson 01's exercises (the residual stream)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, run_check


def _random_prompts(model, n: int = 2, length: int = 8, seed: int = 0) -> torch.Tensor:
    """Fresh inputs for a check: BOS + random tokens.  # [n, 1 + length]"""
    g = torch.Generator().manual_seed(seed)
    bos = model.tokenizer.bos_token_id or 0
    body = torch.randint(3, model.cfg.d_vocab, (n, length), generator=g)
    return torch.cat([torch.full((n, 1), bos), body], dim=1).to(model.cfg.device)


def check_residual_decomposition(decompose: Callable, model) -> Checked:
    """decompose(model, cache) -> (components [component, batch, pos, d_model], labels), as residual_components."""
    from mechlib.residual import residual_components

    cases = []
    for seed in (1, 2):
        _, cache = model.run_with_cache(_random_prompts(model, seed=seed))
        cases.append((model, cache))
    return run_check("residual decomposition", decompose, residual_components, cases,
                     hint="per layer: each head's hook_z @ W_O[layer, head], then b_O[layer], then hook_mlp_out; "
                          "start with hook_embed and hook_pos_embed")


def check_logit_attribution(attribute: Callable, model) -> Checked:
    """attribute(model, cache, components, direction) -> [component, batch] at the last position."""
    from mechlib.residual import direct_logit_attribution, residual_components

    cases = []
    for seed in (1, 2):
        _, cache = model.run_with_cache(_random_prompts(model, seed=seed))
        components, _ = residual_components(model, cache)
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randint(3, model.cfg.d_vocab, (2,), generator=g).tolist()
        cases.append((model, cache, components, model.W_U[:, a] - model.W_U[:, b]))
    return run_check("direct logit attribution", attribute,
                     lambda m, cache, comps, d: direct_logit_attribution(cache, comps, d), cases,
                     hint="take the last position, scale by the final LayerNorm with cache.apply_ln_to_stack("
                          "..., layer=-1, pos_slice=-1), then project onto the direction")


def check_induction_scores(score: Callable, model) -> Checked:
    """score(cache, seq_len) -> [layer, head], as mechlib.attention.induction_scores."""
    from mechlib.attention import induction_scores

    cases = []
    for seed, n in ((1, 10), (2, 15)):
        g = torch.Generator().manual_seed(seed)
        span = torch.randint(3, model.cfg.d_vocab, (4, n), generator=g)
        tokens = torch.cat([torch.full((4, 1), model.tokenizer.bos_token_id or 0), span, span], 1)
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=lambda h: h.endswith("hook_pattern"))
        cases.append((cache, n))
    return run_check("induction scores", score, induction_scores, cases,
                     hint="a query at position q in the second copy should attend to key q - seq_len + 1; "
                          "average over the second copy's queries and the batch")
