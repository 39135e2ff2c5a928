"""The residual stream as a sum: every component's write, from a cache.

The final residual stream equals the token and position embeddings plus every attention head's
output plus each layer's attention output bias plus every MLP's output (lesson 01).
"""

from __future__ import annotations

import torch


def residual_components(model, cache) -> tuple[torch.Tensor, list[str]]:
    """Each component's write into the residual stream, and its name.

    Returns components [component, batch, pos, d_model] (embed, pos_embed, then per layer each head
    "L{l}H{h}", the attention bias "L{l} attn bias" and "L{l} MLP") whose sum is the final residual stream.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    parts = [cache["hook_embed"], cache["hook_pos_embed"]]  # each [batch, pos, d_model]
    labels = ["embed", "pos_embed"]
    for layer in range(n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [batch, pos, head, d_head]
        heads = torch.einsum("bphd,hdm->hbpm", z, model.W_O[layer])  # [head, batch, pos, d_model]
        parts += list(heads)
        labels += [f"L{layer}H{h}" for h in range(n_heads)]
        parts.append(model.b_O[layer].expand_as(parts[0]))
        labels.append(f"L{layer} attn bias")
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"])
        labels.append(f"L{layer} MLP")
    return torch.stack(parts), labels


def direct_logit_attribution(cache, components: torch.Tensor, direction: torch.Tensor, pos: int = -1) -> torch.Tensor:
    """Each component's direct effect on the logit along `direction` (e.g. W_U[:, a] - W_U[:, b]) at `pos`.

    components [component, batch, pos, d_model]; returns [component, batch]. The components go through the
    final LayerNorm's (frozen) scale, as in the real run: with compatibility mode on, the attributions plus
    the unembedding bias along the direction add up to the logit difference.
    """
    scaled = cache.apply_ln_to_stack(components[:, :, pos], layer=-1, pos_slice=pos)  # [component, batch, d_model]
    return scaled @ direction
