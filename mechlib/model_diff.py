"""Reading two models side by side (lesson 07): the residual stream at chosen positions, layer by layer, and
what the logit lens reads from it over a few candidate answers.

    resid = residual_at(model, facts.tokens, facts.last)       # [n_layers + 1, n, d_model]
    logits = lens_logits(model, resid, city_ids)                 # [n_layers + 1, n, n_candidates]

Both stop before the unembedding of the full vocabulary: for GPT-2's 50,257 tokens it costs more than the
rest of a small model, and the lesson reads a handful of candidates.
"""

from __future__ import annotations

import torch

from mechlib.loading import model_device


class _Stop(Exception):
    """Raised by the last hook a run needs, so that nothing after it is computed."""


def resid_hooks(model) -> list[str]:
    """The hooks residual_at reads, in order: the residual stream entering each layer, then leaving the last."""
    n_layers = model.cfg.n_layers
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def residual_at(model, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The residual stream entering each layer and leaving the last, at one position per row of tokens [n, pos]
    (positions [n]) of a TransformerLens model.  # [n_layers + 1, n, d_model]"""
    if positions.shape != (len(tokens),):
        raise ValueError(f"one position per row: tokens {tuple(tokens.shape)}, positions {tuple(positions.shape)}")
    if int(positions.max()) >= tokens.shape[1]:
        raise ValueError(f"position {int(positions.max())} is past the prompts' {tokens.shape[1]} tokens")
    names = resid_hooks(model)
    device = model_device(model)
    rows, positions = torch.arange(len(tokens), device=device), positions.to(device)
    out: list[torch.Tensor] = []

    def keep(act: torch.Tensor, hook) -> None:  # act [n, pos, d_model]
        out.append(act[rows, positions].detach())
        if len(out) == len(names):
            raise _Stop

    try:
        with torch.no_grad():
            model.run_with_hooks(tokens.to(device), fwd_hooks=[(name, keep) for name in names])
    except _Stop:
        pass
    return torch.stack(out)


def lens_logits(model, resid: torch.Tensor, token_ids: torch.Tensor | list[int] | None = None) -> torch.Tensor:
    """The logit lens (nostalgebraist 2020): the model's final LayerNorm and unembedding applied to a residual
    stream [..., d_model], read at token_ids only (None: the whole vocabulary).  # [..., n_tokens]"""
    with torch.no_grad():
        normed = model.ln_final(resid.reshape(-1, 1, resid.shape[-1]))[:, 0]  # [rows, d_model]
        if token_ids is None:
            logits = normed @ model.W_U + model.b_U  # [rows, d_vocab]
        else:
            ids = torch.as_tensor(token_ids, device=resid.device)
            logits = normed @ model.W_U[:, ids] + model.b_U[ids]  # [rows, n_tokens]
    return logits.reshape(*resid.shape[:-1], logits.shape[-1])


def logits_at(model, tokens: torch.Tensor, positions: torch.Tensor, fwd_hooks=()) -> torch.Tensor:
    """A TransformerLens model's logits at one position per row of tokens [n, pos] (positions [n]), optionally
    under fwd_hooks, unembedding only those positions: every position's logits over GPT-2's 50,257 tokens would
    cost more than the rest of a small model.  # [n, d_vocab]"""
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        final = residual_at(model, tokens, positions)[-1]  # [n, d_model]
    return lens_logits(model, final)
