"""Checking an attribution graph by intervention: what the graph predicts an ablation does, against what it does.

The graph is a linearisation at one prompt (attention patterns and LayerNorm scales frozen, active features treated
as linear). Its prediction for removing a feature is the sum over every path from that feature to the logit
(`predicted_effects`). The measurement runs the model with every MLP replaced by its transcoder plus the error the
transcoder makes on this prompt (so that, untouched, it gives exactly the real model's output), sets the feature to
zero, and lets everything downstream respond: attention, LayerNorm, and which features fire (`measured_effects`).
Where they disagree, the graph is wrong about the model; Ameisen et al. 2025 discuss when that happens.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mechlib.attribution import Graph, clean_run
from mechlib.loading import model_device
from mechlib.sae.base import SAE
from mechlib.transcoders import splice


def total_effects(graph: Graph) -> torch.Tensor:
    """d(logit)/d(activation) of every feature along all paths, in the linearised model.  # [n_logits, n_features]

    adjacency[t, s] = a_s * d(t)/d(a_s) directly; dividing by a_s gives the direct derivatives D; the total is
    D_logit,feat (I - D_feat,feat)^-1 (paths of any length; the graph is acyclic, so the inverse exists)."""
    nf = graph.n_features
    acts = graph.activations.clamp(min=1e-12)
    d_ff = graph.adjacency[:nf, :nf] / acts[None, :]
    d_lf = graph.adjacency[graph.logits, :nf] / acts[None, :]
    return d_lf @ torch.linalg.inv(torch.eye(nf) - d_ff)


def predicted_effects(graph: Graph, nodes: Sequence[int], scale: float = 0.0) -> torch.Tensor:
    """The graph's prediction of the change in each logit (less the mean logit) when each feature node's activation
    is multiplied by `scale` (0: ablation; 2: doubling).  # [len(nodes), n_logits]"""
    nodes = torch.as_tensor(list(nodes))
    return (total_effects(graph)[:, nodes] * (graph.activations[nodes] * (scale - 1.0))[None, :]).T


@torch.no_grad()
def measured_effects(model, transcoders: Sequence[SAE], graph: Graph, nodes: Sequence[int], scale: float = 0.0,
                     frozen: bool | tuple[str, ...] = False) -> torch.Tensor:
    """The real change in each of the graph's logits (less the mean logit) when each feature node's activation is
    multiplied by `scale`, one node at a time, in the model with every MLP replaced by transcoder + this prompt's
    error. Downstream features are recomputed (they may switch on or off). frozen=True puts back the clean run's
    attention patterns and LayerNorm scales: the graph's own model, except that features still switch on and off,
    which isolates that source of disagreement; a tuple of hook-name endings freezes only those (e.g.
    ("ln_final.hook_scale",): the final LayerNorm's scale).  # [len(nodes), n_logits]"""
    device = model_device(model)
    tokens = graph.token_ids[None].to(device)
    _, _, _, errors = clean_run(model, transcoders, tokens)
    minus = None if graph.minus is None else graph.minus.to(device)
    frozen_hooks = []
    if frozen:
        ends = ("attn.hook_pattern", "hook_scale") if frozen is True else tuple(frozen)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(ends))
        if not len(cache):
            raise ValueError(f"no hook of this model ends with {ends}: name hooks such as 'ln_final.hook_scale'")
        frozen_hooks = [(name, (lambda v: lambda act, hook: v)(v)) for name, v in cache.items()]

    def run(node: int | None) -> torch.Tensor:
        def edit(layer: int, z: torch.Tensor) -> torch.Tensor:  # [1, pos, d_sae]
            L, pos, latent = graph.features[node].tolist()
            if L == layer:
                z[0, pos, latent] *= scale
            return z

        hooks = splice(model, transcoders, tokens, errors=errors, edit=None if node is None else edit) + frozen_hooks
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()
        return logits[graph.logit_tokens.to(device)] - (logits.mean() if minus is None else logits[minus])

    base = run(None)
    return torch.stack([run(n) - base for n in nodes]).cpu()


def source_contributions(graph: Graph) -> torch.Tensor:
    """How much each source node (error nodes, then embeddings, in graph order) adds to each logit target along all
    paths, signed: its direct edge plus, through every feature, the feature's total effect times the source's edge
    into it. With the constant biases, they sum to the target's value exactly (the linearised model is affine).
    # [n_logits, n_errors + n_pos]"""
    nf, sources = graph.n_features, slice(graph.errors.start, graph.embeddings.stop)
    through = total_effects(graph) @ graph.adjacency[:nf, sources]  # [n_logits, n_features] @ [n_features, n_sources]
    return graph.adjacency[graph.logits, sources] + through
