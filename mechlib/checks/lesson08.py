"""Checks of lesson 08's exercises (transcoders and attribution graphs)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, run_check


def _random_dag(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised shares of a random acyclic graph (edges from lower to higher index, some rows empty), and
    weights on its last two nodes."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g).tril(-1) * (torch.rand(n, n, generator=g) < 0.4)
    a[: n // 4] = 0  # sources: no inputs
    shares = a.abs() / a.abs().sum(1, keepdim=True).clamp(min=1e-10)
    w = torch.zeros(n)
    w[-2:] = torch.tensor([0.7, 0.3])
    return shares, w


def check_influence(influence: Callable) -> Checked:
    """influence(shares [n, n], weights [n]) -> [n], as mechlib.graph_pruning.influence."""
    from mechlib.graph_pruning import influence as reference

    cases = [_random_dag(n, seed) for n, seed in ((6, 0), (30, 1), (80, 2))]
    return run_check("influence along all paths", influence, reference, cases, atol=1e-5,
                     hint="start from weights @ shares (one step), add each further step (x @ shares) until a step "
                          "is all zeros; don't include the weights themselves")


def check_error_node(error_node: Callable, model, transcoders) -> Checked:
    """error_node(model, transcoder, layer, tokens [1, pos]) -> [pos, d_model]: the MLP's output less the transcoder's
    estimate of it from the MLP's input, in one clean run."""
    from mechlib.transcoders import hooks

    def reference(model, tc, layer, tokens):
        inp, out = hooks(layer)
        _, cache = model.run_with_cache(tokens, names_filter=[inp, out])
        return cache[out][0] - tc(cache[inp][0])[0]

    prompts = ["The Eiffel Tower is in", "When Mary and John went to the store, John gave a drink to"]
    cases = [(model, transcoders[L], L, model.to_tokens(p)) for p in prompts for L in (0, model.cfg.n_layers - 1)]
    with torch.no_grad():
        return run_check("error node", error_node, reference, cases, atol=1e-4,
                         hint="cache `blocks.L.mlp.hook_in` and `blocks.L.hook_mlp_out` in one run_with_cache; the "
                              "transcoder returns (estimate, latents)")


def check_total_effects(total_effects: Callable, graph) -> Checked:
    """total_effects(graph) -> [n_logits, n_features], as mechlib.graph_interventions.total_effects."""
    from mechlib.graph_interventions import total_effects as reference

    return run_check("effects along all paths", total_effects, reference, [(graph,)], atol=1e-3, rtol=1e-3,
                     hint="divide each feature's column of the adjacency by its activation (direct derivatives D); "
                          "the total is D[logits, features] @ inverse(I - D[features, features])")
